"""Reading and writing the data files of the command line.

The command line takes tables as CSV or Parquet files (read with pandas, so the
column names reach the estimator as ``feature_names_in_``) or as ``.npy``
arrays. A CSV file may lack a header row: :func:`csv_has_header` tells which
(a first row of numbers is data), and a headerless table is read as a plain
array, so no row is lost. Everything that can be wrong with such a file is
caught here and reported as a :class:`DataFileError` whose message is one line
that names the file and the offending columns, so that the command line can
print it without a traceback.

Every file is written through :func:`atomic_write`: to a temporary file in the
destination's folder, flushed and fsync'd, then renamed over the destination,
so that a failed or killed write never leaves partial content under the final
name.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "DataFileError",
    "SUPPORTED_SUFFIXES",
    "atomic_write",
    "check_writable",
    "csv_has_header",
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


def _is_number(field: str) -> bool:
    # What read_data accepts as a value: numbers (nan and inf included) and
    # the booleans pandas reads as a bool column.
    text = field.strip()
    if text.lower() in ("true", "false"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_has_header(path: str | Path) -> bool:
    """Tell whether a CSV file's first row is a header.

    The first non-blank row is data when each of its non-empty fields is a
    number (so a ``numpy.savetxt`` file is data from its first row); any other
    first row holds column names.

    Parameters
    ----------
    path : str or path-like
        A CSV file.

    Returns
    -------
    bool
        ``True`` if the first row holds column names.

    Raises
    ------
    DataFileError
        If the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such file.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            first = next((row for row in csv.reader(file) if row), [])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataFileError(f"{path}: cannot be read ({error}).") from error
    fields = [field for field in first if field.strip()]
    return not (fields and all(_is_number(field) for field in fields))


def read_data(path: str | Path, *, header: bool = True) -> Any:
    """Read a numeric table from a CSV, Parquet or ``.npy`` file.

    Parameters
    ----------
    path : str or path-like
        A ``.csv`` file, a ``.parquet`` file, or a ``.npy`` file holding a 2-D
        numeric array.
    header : bool, default=True
        Whether a CSV file's first row holds column names
        (:func:`csv_has_header` guesses it). Ignored for other files.

    Returns
    -------
    pandas.DataFrame or ndarray of shape (n_samples, n_features)
        A DataFrame for Parquet files and CSV files with a header (the column
        names become the estimator's ``feature_names_in_``), an ndarray for
        ``.npy`` files and headerless CSV files: every row of the file is a
        row of the result.

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
            if suffix == ".parquet":
                data = pandas.read_parquet(path)
            elif header:
                data = pandas.read_csv(path)
            else:
                data = pandas.read_csv(path, header=None)
    except DataFileError:
        raise
    except Exception as error:  # the readers raise many unrelated types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataFileError(f"{path}: cannot be read ({reason}).") from error
    if isinstance(data, np.ndarray):
        _check_array(data, path)
    else:
        _check_frame(data, path)
    if suffix == ".csv" and not header:
        # Unnamed columns: the estimator must see an array, not the integer
        # column labels pandas invents.
        return data.to_numpy()
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


def _writable_mode() -> int:
    # mkstemp creates files readable by the owner only; a written file gets
    # the permissions a plain open() would give it.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[IO[bytes]]:
    """Open a binary file that replaces ``path`` only once completely written.

    The content goes to a temporary file in the same folder, which is flushed,
    fsync'd and renamed over ``path`` (``os.replace``, atomic on POSIX and
    Windows) when the ``with`` block ends without error. If the block raises,
    the temporary file is removed and ``path`` is left as it was; if the
    process is killed, ``path`` is intact and only a hidden ``.NAME.*.tmp``
    file may remain.

    Parameters
    ----------
    path : str or path-like
        The destination; its folder is created if needed.

    Yields
    ------
    file object
        The temporary file, opened for binary writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _writable_mode())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    # Make the rename itself durable; folders cannot be opened on Windows.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _default_columns(n_columns: int) -> list[str]:
    # Not the bare numbers pandas would use: a header of numbers would read
    # back as a row of data.
    return [f"x{index}" for index in range(n_columns)]


def write_data(
    path: str | Path, data: np.ndarray, columns: Sequence[str] | None = None
) -> None:
    """Write an array to a CSV, Parquet or ``.npy`` file, atomically.

    Parameters
    ----------
    path : str or path-like
        The output file; its ending chooses the format. Its folder is created
        if needed. An existing file is replaced only once the new one is
        completely written (:func:`atomic_write`).
    data : array-like of shape (n_samples,) or (n_samples, n_columns)
        The values to write. A 1-D array is written as one column.
    columns : sequence of str, default=None
        Column names for CSV and Parquet files; ``None`` names them ``x0``,
        ``x1``, ... Ignored for ``.npy`` files, which hold the bare array.

    Raises
    ------
    DataFileError
        If the ending is unsupported or the file cannot be written (an
        unwritable folder, a full disk); ``path`` is then unchanged.
    """
    path = Path(path)
    suffix = _suffix(path)
    array = np.asarray(data)
    frame = None
    if suffix != ".npy":
        pandas = _import_pandas(path)
        table = array.reshape(array.shape[0], -1)
        names = _default_columns(table.shape[1]) if columns is None else columns
        frame = pandas.DataFrame(table, columns=[str(name) for name in names])
    try:
        with atomic_write(path) as file:
            if frame is None:
                np.save(file, array)
            elif suffix == ".csv":
                frame.to_csv(file, index=False)
            else:
                frame.to_parquet(file, index=False)
    except OSError as error:
        raise DataFileError(
            f"{path}: cannot be written ({error.strerror or error}); the file "
            "was left unchanged."
        ) from error


def check_writable(path: str | Path) -> None:
    """Fail early if ``path`` cannot be written, before a long computation.

    Parameters
    ----------
    path : str or path-like
        A file to write later.

    Raises
    ------
    DataFileError
        If ``path`` is a folder, or its nearest existing parent folder is not
        a writable folder.
    """
    path = Path(path)
    if path.is_dir():
        raise DataFileError(f"{path}: cannot be written (it is a folder).")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataFileError(f"{path}: cannot be written ({parent} is not a folder).")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataFileError(
            f"{path}: cannot be written (no permission to write in {parent})."
        )
