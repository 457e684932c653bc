"""Reading and writing the command line's data files."""

import errno
import os

import numpy as np
import pandas as pd
import pytest

from sklearn_vae._io import (
    DataFileError,
    atomic_write,
    check_writable,
    csv_has_header,
    read_data,
    write_data,
)


@pytest.fixture
def frame():
    return pd.DataFrame({"width": [1.0, 2.0, 3.0], "height": [4, 5, 6]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_round_trip_with_their_column_names(tmp_path, frame, suffix):
    path = tmp_path / f"data{suffix}"
    write_data(path, frame.to_numpy(), columns=frame.columns)
    data = read_data(path)
    assert isinstance(data, pd.DataFrame)
    assert list(data.columns) == ["width", "height"]
    np.testing.assert_allclose(data.to_numpy(), frame.to_numpy())


def test_npy_round_trips_as_an_array(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(3, 2)
    write_data(tmp_path / "data.npy", array)
    data = read_data(tmp_path / "data.npy")
    assert isinstance(data, np.ndarray)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, array)


def test_write_makes_missing_folders_and_names_unnamed_columns(tmp_path):
    path = tmp_path / "new" / "folder" / "out.csv"
    write_data(path, np.array([1, 2, 3]))
    # Not "0": a header of numbers would be read back as data.
    assert csv_has_header(path)
    assert list(read_data(path).columns) == ["x0"]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataFileError, match=r"nothere\.csv: no such file"):
        read_data(tmp_path / "nothere.csv")


@pytest.mark.parametrize("name", ["data.txt", "data"])
def test_unsupported_ending_lists_the_supported_ones(tmp_path, name):
    with pytest.raises(DataFileError, match=r"unsupported file type.*\.csv"):
        read_data(tmp_path / name)
    with pytest.raises(DataFileError, match=r"unsupported file type"):
        write_data(tmp_path / name, np.zeros((1, 1)))


def test_non_numeric_column_is_named(tmp_path, frame):
    frame["colour"] = ["red", "green", "blue"]
    frame.to_csv(tmp_path / "data.csv", index=False)
    with pytest.raises(DataFileError, match=r"non-numeric column\(s\) 'colour';"):
        read_data(tmp_path / "data.csv")


def test_missing_values_report_rows_and_columns(tmp_path, frame):
    frame.loc[0, "width"] = np.nan
    frame.loc[2, "height"] = np.nan
    frame.to_parquet(tmp_path / "data.parquet")
    with pytest.raises(
        DataFileError,
        match=r"2 row\(s\) have missing values, in column\(s\) "
        r"'width', 'height'",
    ):
        read_data(tmp_path / "data.parquet")


def test_nan_in_npy_reports_rows_and_column_indices(tmp_path):
    array = np.ones((4, 3))
    array[1, 2] = np.nan
    np.save(tmp_path / "data.npy", array)
    with pytest.raises(DataFileError, match=r"1 row\(s\).*column\(s\) '2'"):
        read_data(tmp_path / "data.npy")


def test_long_column_lists_are_shortened(tmp_path):
    frame = pd.DataFrame({f"c{i}": ["x"] for i in range(8)})
    frame.to_csv(tmp_path / "data.csv", index=False)
    with pytest.raises(DataFileError, match=r"'c4' and 3 more;"):
        read_data(tmp_path / "data.csv")


@pytest.mark.parametrize(
    "array, message",
    [
        (np.ones(3), "expected a 2-D array"),
        (np.ones((0, 3)), "is empty"),
        (np.array([["a"]]), "expected a numeric array"),
    ],
)
def test_npy_must_hold_a_non_empty_numeric_matrix(tmp_path, array, message):
    np.save(tmp_path / "data.npy", array)
    with pytest.raises(DataFileError, match=message):
        read_data(tmp_path / "data.npy")


def test_empty_table_is_rejected(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataFileError, match="the table is empty"):
        read_data(tmp_path / "data.csv")


def test_unreadable_file_gives_a_one_line_reason(tmp_path):
    (tmp_path / "data.parquet").write_text("not parquet")
    with pytest.raises(DataFileError, match=r"cannot be read \(") as info:
        read_data(tmp_path / "data.parquet")
    assert "\n" not in str(info.value)


def test_unwritable_path_is_reported(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(DataFileError, match="cannot be written"):
        write_data(tmp_path / "file" / "out.npy", np.zeros((1, 1)))


@pytest.mark.parametrize(
    "first_rows, header",
    [
        ("1,2,3\n4,5,6\n", False),
        ("1.5e3, -2 ,nan,inf,-inf\n1,2,3,4,5\n", False),
        ("True,False\n1,0\n", False),
        ("1,,3\n4,5,6\n", False),
        ('"1","2"\n3,4\n', False),
        ("\n\n1,2\n3,4\n", False),
        ("a,b,c\n1,2,3\n", True),
        ("x0,1\n1,2\n", True),
        (",a,b\n0,1,2\n", True),
        ("\ufeffwidth,height\n1,2\n", True),
    ],
)
def test_a_first_row_of_numbers_is_data(tmp_path, first_rows, header):
    path = tmp_path / "data.csv"
    path.write_text(first_rows, encoding="utf-8")
    assert csv_has_header(path) is header


def test_headerless_csv_reads_every_row_as_an_array(tmp_path):
    array = np.random.default_rng(0).normal(size=(200, 3))
    np.savetxt(tmp_path / "data.csv", array, delimiter=",")
    data = read_data(tmp_path / "data.csv", header=False)
    assert isinstance(data, np.ndarray)
    np.testing.assert_allclose(data, array)
    assert read_data(tmp_path / "data.csv", header=True).shape == (199, 3)


def test_header_of_a_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="no such file"):
        csv_has_header(tmp_path / "none.csv")


def test_atomic_write_replaces_only_when_complete(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as file:
            file.write(b"new, but")
            raise RuntimeError("failed half-way")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]
    with atomic_write(path) as file:
        file.write(b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_gives_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.bin") as file:
            file.write(b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npy"])
def test_full_disk_leaves_the_file_unchanged(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"out{suffix}"
    write_data(path, np.zeros((2, 2)))
    before = path.read_bytes()

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(DataFileError, match="No space left on device.*unchanged"):
        write_data(path, np.ones((3, 2)))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "out.csv")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataFileError, match="is not a folder"):
        check_writable(tmp_path / "file" / "out.csv")
    with pytest.raises(DataFileError, match="it is a folder"):
        check_writable(tmp_path)
