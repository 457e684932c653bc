"""Reading and writing the data files of the command line.

The command line takes tables as CSV or Parquet files (read with pandas, so the
column names reach the estimator as ``feature_names_in_``) or as ``.npy``
arrays. Everything that can be wrong with such a file is caught here and
reported as a :class:`DataFileError` whose message is one line that names the
file and the offending columns, so that the command line can print it without a
traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DataFileError",
    "SUPPORTED_SUFFIXES",
    "format_names",
    "read_data",
    "write_data",
]

#: File name endings the command line reads and writes.
SUPPORTED_SUFFIXES = (".csv", ".parquet", ".npy")

# Error messages list at most this many column names, so they stay one line.
_MAX_NAMES_SHOWN = 5


class DataFileError(ValueError):
    """A data file is missing, unreadable or does not hold a numeric table."""


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataFileError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}."
        )
    return suffix


def _import_pandas(path: Path) -> Any:
    try:
        import pandas
    except ImportError as error:
        raise DataFileError(
            f"{path}: reading and writing {path.suffix} files needs pandas; install "
            "it with: pip install 'sklearn-vae[data]'."
        ) from error
    return pandas


def format_names(names: Sequence[Any]) -> str:
    """Quote column names for a one-line message, listing at most five.

    Parameters
    ----------
    names : sequence
        Column names or indices.

    Returns
    -------
    str
        Such as ``'a', 'b', 'c', 'd', 'e' and 3 more``.
    """
    shown = ", ".join(repr(str(name)) for name in names[:_MAX_NAMES_SHOWN])
    if len(names) > _MAX_NAMES_SHOWN:
        shown += f" and {len(names) - _MAX_NAMES_SHOWN} more"
    return shown


def read_data(path: str | Path) -> Any:
    """Read a numeric table from a CSV, Parquet or ``.npy`` file.

    Parameters
    ----------
    path : str or path-like
        A ``.csv`` file with a header row, a ``.parquet`` file, or a ``.npy``
        file holding a 2-D numeric array.

    Returns
    -------
    pandas.DataFrame or ndarray of shape (n_samples, n_features)
        A DataFrame for CSV and Parquet files (the column names become the
        estimator's ``feature_names_in_``), an ndarray for ``.npy`` files.

    Raises
    ------
    DataFileError
        If the file is missing or unreadable, has an unsupported ending, is not
        a non-empty 2-D table, has a non-numeric column (named in the message)
        or missing values (the message says how many rows and which columns).
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file.")
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            pandas = _import_pandas(path)
            reader = pandas.read_csv if suffix == ".csv" else pandas.read_parquet
            data = reader(path)
    except DataFileError:
        raise
    except Exception as error:  # the readers raise many unrelated types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataFileError(f"{path}: cannot be read ({reason}).") from error
    if isinstance(data, np.ndarray):
        _check_array(data, path)
    else:
        _check_frame(data, path)
    return data


def _check_array(array: np.ndarray, path: Path) -> None:
    if array.ndim != 2:
        raise DataFileError(
            f"{path}: expected a 2-D array (n_samples, n_features), got shape "
            f"{array.shape}."
        )
    if array.size == 0:
        raise DataFileError(f"{path}: the array is empty (shape {array.shape}).")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataFileError(
            f"{path}: expected a numeric array, got dtype {array.dtype}."
        )
    missing = np.isnan(array) if np.issubdtype(array.dtype, np.floating) else None
    if missing is not None and missing.any():
        columns = np.flatnonzero(missing.any(axis=0)).tolist()
        raise DataFileError(
            f"{path}: {int(missing.any(axis=1).sum())} row(s) have missing values "
            f"(NaN), in column(s) {format_names(columns)}; drop or impute them first."
        )


def _check_frame(frame: Any, path: Path) -> None:
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataFileError(f"{path}: the table is empty (shape {frame.shape}).")
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    non_numeric = [
        name
        for name, dtype in frame.dtypes.items()
        if not (is_numeric_dtype(dtype) or is_bool_dtype(dtype))
    ]
    if non_numeric:
        raise DataFileError(
            f"{path}: non-numeric column(s) {format_names(non_numeric)}; every column "
            "must hold numbers."
        )
    missing = frame.isna().to_numpy()
    if missing.any():
        columns = frame.columns[missing.any(axis=0)].tolist()
        raise DataFileError(
            f"{path}: {int(missing.any(axis=1).sum())} row(s) have missing values, "
            f"in column(s) {format_names(columns)}; drop or impute them first."
        )


def write_data(
    path: str | Path, data: np.ndarray, columns: Sequence[str] | None = None
) -> None:
    """Write an array to a CSV, Parquet or ``.npy`` file.

    Parameters
    ----------
    path : str or path-like
        The output file; its ending chooses the format. Its folder is created
        if needed.
    data : array-like of shape (n_samples,) or (n_samples, n_columns)
        The values to write. A 1-D array is written as one column.
    columns : sequence of str, default=None
        Column names for CSV and Parquet files; ``None`` numbers the columns.
        Ignored for ``.npy`` files, which hold the bare array.

    Raises
    ------
    DataFileError
        If the ending is unsupported or the file cannot be written.
    """
    path = Path(path)
    suffix = _suffix(path)
    array = np.asarray(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            np.save(path, array)
            return
        pandas = _import_pandas(path)
        frame = pandas.DataFrame(
            array.reshape(array.shape[0], -1),
            columns=None if columns is None else list(columns),
        )
        frame.columns = frame.columns.map(str)
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    except DataFileError:
        raise
    except OSError as error:
        raise DataFileError(f"{path}: cannot be written ({error.strerror}).") from error
