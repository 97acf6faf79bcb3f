"""The user's own data file: ``.npy``, ``.npz`` or ``.csv`` read into a checked float32 array [N, dx].

Every check runs on load, before any training, and a failure raises ``DataFileError`` with one line that
names the file, the problem and the fix.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from lvebm_lightning.errors import one_line

MIN_ROWS = 4
"""The fewest rows a data file may hold: enough for a train / validation / test split."""


class DataFileError(ValueError):
    """A data file that cannot be used; the message is one line naming the file, the problem and the fix."""


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        if "Object arrays" in str(error):
            raise _object_dtype(path) from error
        message = f"{path}: not a readable .npy file ({one_line(str(error))}); save the data with np.save"
        raise DataFileError(message) from error


def _read_npz(path: Path) -> np.ndarray:
    if not zipfile.is_zipfile(path):
        raise DataFileError(f"{path}: not a .npz (zip) archive; save the data with np.savez(path, x=array)")
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.files)
        if not keys:
            raise DataFileError(f"{path}: the .npz holds no arrays; save one with np.savez(path, x=array)")
        if len(keys) == 1:
            key = keys[0]
        elif "x" in keys or "data" in keys:
            key = "x" if "x" in keys else "data"
        else:
            raise DataFileError(
                f"{path}: the .npz holds several arrays {keys} and none is named 'x' or 'data'; "
                "save only the data, or name it x (np.savez(path, x=array))"
            )
        try:
            return archive[key]
        except ValueError as error:
            if "Object arrays" in str(error):
                raise _object_dtype(path) from error
            message = f"{path}: array {key!r} cannot be read ({one_line(str(error))}); save the data again"
            raise DataFileError(message) from error


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> np.ndarray:
    """Comma-separated numbers, one row per line; the first line may instead hold column names."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = enumerate(csv.reader(handle), start=1)
        lines = [(number, row) for number, row in rows if any(field.strip() for field in row)]
    if lines and not any(_is_number(field) for field in lines[0][1]):
        lines = lines[1:]
    if not lines:
        return np.zeros((0, 0))
    n_columns = len(lines[0][1])
    values = np.empty((len(lines), n_columns))
    for i, (number, row) in enumerate(lines):
        if len(row) != n_columns:
            raise DataFileError(
                f"{path}: line {number} has {len(row)} columns but line {lines[0][0]} has {n_columns}; "
                "give every row the same number of comma-separated values"
            )
        for j, field in enumerate(row):
            if not _is_number(field):
                raise DataFileError(
                    f"{path}: non-numeric entry {field!r} at line {number}, column {j + 1}; every entry must "
                    "be a number (comma-separated), and only the first line may hold column names"
                )
            values[i, j] = float(field)
    return values


def _object_dtype(path: Path) -> DataFileError:
    return DataFileError(
        f"{path}: holds an object (pickled) array, not numbers; convert it with "
        "np.asarray(x, dtype=np.float32) before saving"
    )


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.any(axis=1))[0])


def _check(x: np.ndarray, path: Path) -> np.ndarray:
    """The checks shared by every format; returns x as a contiguous float32 [N, dx]."""
    if x.dtype.kind not in "biuf":
        raise DataFileError(
            f"{path}: holds values of dtype {x.dtype}, not real numbers; convert it with "
            "np.asarray(x, dtype=np.float32) before saving"
        )
    if x.ndim == 1:
        raise DataFileError(
            f"{path}: holds a 1-D array of shape {x.shape}, but data must be 2-D [N, dx]; "
            "for one feature save x.reshape(-1, 1)"
        )
    if x.ndim != 2:
        raise DataFileError(
            f"{path}: holds an array of shape {x.shape}, but data must be 2-D [N, dx]; "
            "flatten the features with x.reshape(len(x), -1)"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataFileError(f"{path}: holds no data (shape {x.shape}); supply at least {MIN_ROWS} rows")
    if x.shape[0] < MIN_ROWS:
        raise DataFileError(
            f"{path}: holds only {x.shape[0]} rows; at least {MIN_ROWS} are needed to split it into "
            "train / validation / test"
        )
    nan = np.isnan(x)
    if nan.any():
        raise DataFileError(
            f"{path}: holds {int(nan.sum())} NaN values, the first in row {_first_row(nan)} (0-based); "
            "drop or fill those rows"
        )
    with np.errstate(over="ignore"):  # values beyond float32 become ±inf, reported just below
        x = np.ascontiguousarray(x, dtype=np.float32)
    inf = np.isinf(x)
    if inf.any():
        raise DataFileError(
            f"{path}: holds {int(inf.sum())} infinite values (±inf, or beyond the float32 range ±3.4e38), "
            f"the first in row {_first_row(inf)} (0-based); drop or rescale those rows"
        )
    return x


_READERS = {".npy": _read_npy, ".npz": _read_npz, ".csv": _read_csv}


def load_array(path: str | Path) -> np.ndarray:
    """Read the data file ``path`` (``.npy``, ``.npz`` or ``.csv``) into a checked float32 array [N, dx].

    - ``.npy``: one array, saved with ``np.save``; pickled (object) arrays are refused.
    - ``.npz``: its only array, or else the one named ``x``, or else ``data``.
    - ``.csv``: comma-separated numbers, one datum per line; the first line may hold column names instead.

    The array must be 2-D [N, dx] with N >= ``MIN_ROWS`` real, finite numbers (NaN and ±inf are refused, with
    their count and first row). Raises ``DataFileError`` (a ``ValueError``) with a one-line message otherwise.
    """
    return _check(read_array(path), Path(path))


def read_array(path: str | Path) -> np.ndarray:
    """The array of a ``.npy``, ``.npz`` or ``.csv`` file as stored, before ``load_array``'s checks of its shape and
    values (NaN stays NaN); a missing, empty, pickled or unreadable file raises ``DataFileError``."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: no such data file (resolved to {path.resolve()}); check data.path")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataFileError(
            f"{path}: unsupported extension {path.suffix!r}; save the data as .npy, .npz or .csv"
        )
    if path.stat().st_size == 0:
        raise DataFileError(f"{path}: the file is empty; supply at least {MIN_ROWS} rows of data")
    x = reader(path)
    if x.dtype == object:
        raise _object_dtype(path)
    return x
