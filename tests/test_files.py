"""The user-file loader: round trips for .npy / .npz / .csv and every refusal with its one-line message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lvebm_lightning.data.files import MIN_ROWS, DataFileError, load_array

DATA = np.arange(12, dtype=np.float64).reshape(6, 2) / 4.0


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def assert_refused(path: Path, match: str) -> None:
    """load_array refuses ``path`` with a one-line DataFileError (a ValueError) that names the file."""
    with pytest.raises(DataFileError, match=match) as info:
        load_array(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message and str(path) in message


def test_npy_round_trip(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", DATA)
    x = load_array(tmp_path / "x.npy")
    assert x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, DATA.astype(np.float32))


def test_npy_integer_data_and_str_path(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.arange(8).reshape(4, 2))
    np.testing.assert_array_equal(load_array(str(tmp_path / "x.npy")), np.arange(8).reshape(4, 2))


def test_npz_single_array_any_key(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", samples=DATA)
    np.testing.assert_array_equal(load_array(tmp_path / "d.npz"), DATA.astype(np.float32))


@pytest.mark.parametrize("key", ["x", "data"])
def test_npz_several_arrays_picks_x_or_data(tmp_path: Path, key: str) -> None:
    np.savez(tmp_path / "d.npz", labels=np.zeros(6), **{key: DATA})
    np.testing.assert_array_equal(load_array(tmp_path / "d.npz"), DATA.astype(np.float32))


def test_npz_prefers_x_over_data(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=DATA, data=2 * DATA)
    np.testing.assert_array_equal(load_array(tmp_path / "d.npz"), DATA.astype(np.float32))


def test_csv_round_trip_without_header(tmp_path: Path) -> None:
    np.savetxt(tmp_path / "d.csv", DATA, delimiter=",")
    np.testing.assert_array_equal(load_array(tmp_path / "d.csv"), DATA.astype(np.float32))


def test_csv_round_trip_with_header_blank_lines_and_bom(tmp_path: Path) -> None:
    rows = "\n".join(",".join(f" {v}" for v in row) for row in DATA)
    path = tmp_path / "d.csv"
    path.write_text("\ufeffposition, momentum\n" + rows + "\n\n", encoding="utf-8")
    np.testing.assert_array_equal(load_array(path), DATA.astype(np.float32))


def test_csv_single_column(tmp_path: Path) -> None:
    x = load_array(write(tmp_path / "d.csv", "v\n1\n2\n3\n4\n"))
    assert x.shape == (4, 1)


def test_missing_file(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nope.npy", r"no such data file .*check data\.path")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "d.txt", "1,2\n")
    assert_refused(path, r"unsupported extension '\.txt'; save the data as \.npy")


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    assert_refused(write(tmp_path / f"d{suffix}", ""), "the file is empty")


@pytest.mark.parametrize("text", ["a,b\n", "\n\n"])
def test_csv_without_rows(tmp_path: Path, text: str) -> None:
    assert_refused(write(tmp_path / "d.csv", text), r"holds no data .*at least 4 rows")


def test_zero_rows_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((0, 3)))
    assert_refused(tmp_path / "d.npy", r"holds no data \(shape \(0, 3\)\)")


def test_one_dimensional_array_suggests_reshape(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.arange(10.0))
    assert_refused(tmp_path / "d.npy", r"1-D array of shape \(10,\).*x\.reshape\(-1, 1\)")


def test_three_dimensional_array(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((5, 2, 2)))
    assert_refused(tmp_path / "d.npy", r"shape \(5, 2, 2\).*must be 2-D.*reshape\(len\(x\), -1\)")


def test_too_few_rows(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((MIN_ROWS - 1, 2)))
    assert_refused(tmp_path / "d.npy", r"only 3 rows; at least 4 are needed")


def test_csv_non_numeric_entry(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "x,y\n1,2\n3,abc\n5,6\n7,8\n")
    assert_refused(path, r"non-numeric entry 'abc' at line 3, column 2")


def test_csv_mixed_first_line_is_data_not_header(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "1,oops\n1,2\n3,4\n5,6\n")
    assert_refused(path, r"non-numeric entry 'oops' at line 1")


def test_csv_empty_entry(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "1,2\n3,\n5,6\n7,8\n")
    assert_refused(path, r"non-numeric entry '' at line 2, column 2")


def test_csv_semicolons_are_not_numbers(tmp_path: Path) -> None:
    """The first line, all non-numeric, reads as column names; the second is then refused."""
    path = write(tmp_path / "d.csv", "1;2\n3;4\n5;6\n7;8\n")
    assert_refused(path, r"non-numeric entry '3;4'.*comma-separated")


def test_csv_ragged_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "1,2\n3,4,5\n5,6\n7,8\n")
    assert_refused(path, r"line 2 has 3 columns but line 1 has 2")


def test_nan_count_and_first_row(tmp_path: Path) -> None:
    x = DATA.copy()
    x[2, 1] = x[4, 0] = x[4, 1] = np.nan
    np.save(tmp_path / "d.npy", x)
    assert_refused(tmp_path / "d.npy", r"3 NaN values, the first in row 2 \(0-based\); drop or fill")


def test_csv_nan_text(tmp_path: Path) -> None:
    assert_refused(write(tmp_path / "d.csv", "1,2\n3,4\n5,nan\n7,8\n"), r"1 NaN values, the first in row 2")


@pytest.mark.parametrize("value", [np.inf, -np.inf, 1e39])
def test_infinite_values(tmp_path: Path, value: float) -> None:
    x = DATA.copy()
    x[3, 0] = value
    np.save(tmp_path / "d.npy", x)
    assert_refused(tmp_path / "d.npy", r"1 infinite values .*the first in row 3 \(0-based\)")


def test_object_array_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.array([[1, "a"], [None, 2]] * 2, dtype=object), allow_pickle=True)
    assert_refused(tmp_path / "d.npy", r"object \(pickled\) array, not numbers; convert it with np\.asarray")


def test_object_array_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.array([[1, "a"], [None, 2]] * 2, dtype=object))
    assert_refused(tmp_path / "d.npz", r"object \(pickled\) array")


def test_string_array(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.array([["1", "2"]] * 5))
    assert_refused(tmp_path / "d.npy", r"dtype <U1, not real numbers")


def test_npz_several_arrays_without_x_names_the_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", a=DATA, b=DATA)
    assert_refused(tmp_path / "d.npz", r"several arrays \['a', 'b'\] and none is named 'x' or 'data'")


def test_npz_without_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz")
    assert_refused(tmp_path / "d.npz", r"holds no arrays")


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_corrupt_binary_file(tmp_path: Path, suffix: str) -> None:
    assert_refused(write(tmp_path / f"d{suffix}", "this is not numpy data"), rf"not a (readable )?\{suffix}")
