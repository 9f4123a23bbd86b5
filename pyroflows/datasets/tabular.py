r"""Tables of numbers from files, row checks, and per-column standardisation.

:func:`load_table` reads CSV (with or without a header line), TSV and ``.npy`` files into a
float64 array and says exactly what is wrong with a file it cannot read. :class:`Standardizer`
maps each column to zero mean and unit variance, :math:`z = (x - \mu) / \sigma`; a density
fitted to :math:`z` gives the density in the original units by the change of variables

.. math:: \log p_x(x) = \log p_z\big((x - \mu) / \sigma\big) - \sum_{j=1}^D \log \sigma_j .
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Standardizer", "check_rows", "load_table"]

_MAX_REPORTED = 5
_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a zip archive (.npz, .xlsx, .pt, ...)",
    b"\x1f\x8b": "a gzip archive",
    b"\x93NUMPY": "a NumPy .npy file (rename it to end in .npy)",
}


def _not_a_table(path: Path, what: str) -> ValueError:
    return ValueError(
        f"{path} is {what}, not a table; give a CSV/TSV text file (one row per line) or a 2-D .npy"
    )


def _load_npy(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _not_a_table(path, f"not a readable .npy file ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise _not_a_table(path, "an .npz archive")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise ValueError(
            f"{path} holds values of dtype {arr.dtype}; a table must hold real numbers"
        )
    if arr.ndim != 2:
        hint = {
            0: "save an array of shape (rows, columns)",
            1: "if it is one column save x.reshape(-1, 1); if it is one row, x.reshape(1, -1)",
        }.get(arr.ndim, "flatten each row first: x.reshape(len(x), -1)")
        raise ValueError(f"{path} holds an array of shape {arr.shape}; a table is 2-D: {hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{path} is empty (shape {arr.shape}); it needs at least one row and column"
        )
    return arr.astype(np.float64), [f"x{j}" for j in range(arr.shape[1])]


def _as_float(cell: str) -> float | None:
    """The number a stripped cell holds; NaN for an empty cell (a missing value, as pandas writes
    it); None if it is not a plain ASCII decimal number (``1_000`` and non-ASCII digits, which
    Python's ``float`` accepts but other tools read differently, are not numbers here)."""
    if not cell:
        return math.nan
    if "_" in cell or not cell.isascii():
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    for magic, what in _MAGIC.items():
        if raw.startswith(magic):
            raise _not_a_table(path, what)
    if b"\x00" in raw[:65536]:
        raise _not_a_table(path, "a binary file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_a_table(
            path, f"not UTF-8 text (undecodable byte at offset {exc.start})"
        ) from exc


def _rows(text: str, delimiter: str | None) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank, non-comment line."""
    out = []
    if delimiter is None:
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                out.append((i, line.split()))
        return out
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    for cells in reader:
        if cells and any(c.strip() for c in cells) and not cells[0].lstrip().startswith("#"):
            out.append((reader.line_num, [c.strip() for c in cells]))
    return out


def _sniff(path: Path, text: str) -> str | None:
    if path.suffix.lower() == ".tsv":
        return "\t"
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")), "")
    for delimiter in ("\t", ",", ";"):
        if delimiter in first:
            return delimiter
    return None  # one column, or whitespace-separated


def _load_text(path: Path) -> tuple[np.ndarray, list[str]]:
    text = _read_text(path)
    rows = _rows(text, _sniff(path, text))
    if not rows:
        raise ValueError(f"{path} is empty; it needs at least one row of numbers")
    first = rows[0][1]
    header = all(_as_float(c) is None for c in first if c) and any(first)  # empty cells: no say
    if header:
        columns = [c or f"x{j}" for j, c in enumerate(first)]
        rows = rows[1:]
        if not rows:
            raise ValueError(f"{path} has a header line but no data rows")
    else:
        columns = [f"x{j}" for j in range(len(first))]
    width = len(columns)
    ragged = [(line, len(cells)) for line, cells in rows if len(cells) != width]
    if ragged:
        shown = "; ".join(f"line {ln} has {k}" for ln, k in ragged[:_MAX_REPORTED])
        more = f" (and {len(ragged) - _MAX_REPORTED} more)" if len(ragged) > _MAX_REPORTED else ""
        raise ValueError(
            f"{path}: every row needs {width} cells like the {'header' if header else 'first row'}"
            f", but {shown}{more}; fix the ragged rows (check the delimiter and quoting)"
        )
    out = np.empty((len(rows), width), dtype=np.float64)
    bad: list[str] = []
    n_bad = 0
    for r, (line, cells) in enumerate(rows):
        for j, cell in enumerate(cells):
            v = _as_float(cell)
            if v is None:
                n_bad += 1
                if len(bad) < _MAX_REPORTED:
                    bad.append(f"line {line}, column {j + 1} ({columns[j]!r}): {cell!r}")
                v = math.nan
            out[r, j] = v
    if n_bad:
        more = f" (and {n_bad - len(bad)} more)" if n_bad > len(bad) else ""
        raise ValueError(
            f"{path} has {n_bad} non-numeric cell{'s' if n_bad > 1 else ''}: {'; '.join(bad)}{more}"
            ". Every cell must be a plain number (no digit separators: 1000, not 1_000); leave "
            "a missing value empty or write nan"
        )
    return out, columns


def load_table(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read a table of numbers from a CSV, TSV or ``.npy`` file.

    Text files may have a header line (detected: a first line none of whose cells is a number);
    the delimiter is a tab for ``.tsv``, else the first of tab, comma, semicolon found on the
    first line (whitespace if none). Blank lines and lines starting with ``#`` are skipped.
    Without a header the columns are named ``x0, x1, ...``. A cell is a plain decimal number
    (``1.5``, ``-4e1``, ``nan``, ``inf``); an empty cell is a missing value and reads as NaN
    (pandas' ``to_csv`` writes missing values so), so a caller can report such rows with
    :func:`check_rows`. Digit separators (``1_000``) are refused, not read as 1000.

    Args:
        path: the file.

    Returns:
        ``(array, columns)``: a float64 array of shape ``(rows, columns)`` and the column names.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, not a table (an image, a binary file), has ragged rows or
            non-numeric cells such as ``oops`` or ``1_000`` (the first few are listed by line and
            column), or is a 1-D ``.npy``.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
        >>> _ = open(path, "w").write("height,weight\\n1.5,60\\n1.8,nan\\n,70\\n")
        >>> x, columns = load_table(path)
        >>> x.tolist(), columns
        ([[1.5, 60.0], [1.8, nan], [nan, 70.0]], ['height', 'weight'])
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}; check the path")
    if not path.is_file():
        raise ValueError(f"{path} is a directory, not a data file")
    if path.suffix.lower() == ".npy":
        return _load_npy(path)
    if path.suffix.lower() == ".npz":
        raise _not_a_table(path, "an .npz archive (save one array with np.save(path, x))")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty; it needs at least one row of numbers")
    return _load_text(path)


def check_rows(x: np.ndarray | Tensor) -> np.ndarray:
    """Boolean mask of the rows of a 2-D array whose values are all finite (no NaN, no Inf).

    Example:
        >>> check_rows(np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, np.inf]])).tolist()
        [True, False, False]
    """
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D table (rows, columns); got shape {x.shape}")
    return np.isfinite(x).all(axis=1)


class Standardizer:
    r"""Per-column affine map :math:`z = (x - \mu) / \sigma` and its log-det correction.

    Constant columns (:math:`\sigma \le 10^{-12} \max(1, |\mu|)`) get :math:`\sigma = 1` so
    nothing divides by zero; they are listed in :attr:`constant` (a density over a constant
    column does not exist, so callers usually refuse such data).

    Args:
        mean: per-column means :math:`\mu`.
        std: per-column scales :math:`\sigma` (positive).

    Example:
        >>> x = np.array([[1.0, 10.0], [3.0, 10.0]])
        >>> s = Standardizer.fit(x)
        >>> s.transform(x).tolist(), s.constant
        ([[-1.0, 0.0], [1.0, 0.0]], [1])
        >>> s.inverse(s.transform(x)).tolist() == x.tolist(), s.log_det
        (True, 0.0)
        >>> Standardizer.from_dict(s.to_dict()).mean.tolist()
        [2.0, 10.0]
    """

    def __init__(self, mean: Sequence[float] | np.ndarray, std: Sequence[float] | np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(
                f"mean and std differ in length: {self.mean.shape} vs {self.std.shape}"
            )
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()):
            raise ValueError("mean and std must be finite")
        if not (self.std > 0).all():
            raise ValueError("std must be positive in every column")
        self.constant: list[int] = []

    @classmethod
    def fit(cls, x: np.ndarray | Tensor) -> Standardizer:
        """Column means and standard deviations of a finite 2-D table."""
        if isinstance(x, Tensor):
            x = x.detach().cpu().numpy()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"expected a non-empty table (rows, columns); got shape {x.shape}")
        if not check_rows(x).all():
            raise ValueError("the table has NaN/Inf values; remove those rows before fitting")
        mean, std = x.mean(0), x.std(0)
        constant = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
        out = cls(mean, np.where(constant, 1.0, std))
        out.constant = np.flatnonzero(constant).tolist()
        return out

    @property
    def dim(self) -> int:
        """Number of columns."""
        return int(self.mean.shape[0])

    @property
    def log_det(self) -> float:
        r""":math:`\sum_j \log \sigma_j`, the log-det of the map :math:`z \mapsto x`."""
        return float(np.log(self.std).sum())

    def _like(self, v: np.ndarray, x: Any) -> Any:
        return torch.as_tensor(v, dtype=x.dtype, device=x.device) if isinstance(x, Tensor) else v

    def transform(self, x: Any) -> Any:
        """Original units -> standardised (numpy in, numpy out; tensor in, tensor out)."""
        return (x - self._like(self.mean, x)) / self._like(self.std, x)

    def inverse(self, z: Any) -> Any:
        """Standardised -> original units."""
        return z * self._like(self.std, z) + self._like(self.mean, z)

    def log_prob(self, flow: Any, x: Tensor) -> Tensor:
        r"""Log-density in original units of a flow fitted to standardised data:
        :math:`\log p_z(\text{transform}(x)) - \sum_j \log \sigma_j`."""
        return flow.log_prob(self.transform(x)) - self.log_det

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-able form (for model-file metadata)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "constant": self.constant}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict) or "mean" not in d or "std" not in d:
            raise ValueError("a standardizer needs 'mean' and 'std' lists")
        out = cls(d["mean"], d["std"])
        out.constant = [int(j) for j in d.get("constant", [])]
        return out

    def __repr__(self) -> str:
        return f"Standardizer(dim={self.dim}, constant={self.constant})"
