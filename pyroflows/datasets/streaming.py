r"""Tables larger than memory: memory-mapped ``.npy`` files, CSV files read in chunks, and
streamed row checks.

:func:`open_npy` maps a ``.npy`` file into memory (``np.load(path, mmap_mode="r")``): nothing is
read until rows are indexed, so a 10-million-row table costs no memory until a minibatch is
taken from it. :class:`ArrayRows` makes such an array (with optional contexts) a map-style
:class:`torch.utils.data.Dataset` whose ``__getitems__`` reads a whole minibatch with one fancy
index. :func:`csv_chunks` reads a CSV/TSV file ``chunk_rows`` rows at a time, and
:class:`CsvRows` is the matching :class:`~torch.utils.data.IterableDataset`; :func:`csv_to_npy`
converts a CSV into a ``.npy`` in chunks, so it can then be memory-mapped. :func:`scan_rows`
checks shapes and finiteness chunk by chunk and reports bad rows by their row numbers (counted
from 0, in the order of the source).

Example:
    >>> import tempfile, os, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "t.npy")
    >>> np.save(path, np.arange(12.0).reshape(6, 2))
    >>> x = open_npy(path)
    >>> type(x).__name__, x.shape, ArrayRows(x).__getitems__([4, 1]).tolist()
    ('memmap', (6, 2), [[8.0, 9.0], [2.0, 3.0]])
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

__all__ = ["ArrayRows", "CsvRows", "csv_chunks", "csv_to_npy", "open_npy", "scan_rows"]

#: Rows read at a time by the streamed checks and conversions.
CHUNK_ROWS = 65536


def open_npy(path: str | Path) -> np.ndarray:
    """The array of a ``.npy`` file, memory-mapped read-only (no row is read until indexed).

    Raises:
        ValueError: the file is not a ``.npy`` array of real numbers (an ``.npz``, pickled
            objects, strings) or is not at least 2-D (a table is ``(rows, columns)``).

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> np.save(os.path.join(folder, "table.npy"), np.arange(6.0).reshape(3, 2))
        >>> x = open_npy(os.path.join(folder, "table.npy"))
        >>> type(x).__name__, x.shape, x[2].tolist()
        ('memmap', (3, 2), [4.0, 5.0])
        >>> np.save(os.path.join(folder, "column.npy"), np.arange(3.0))
        >>> open_npy(os.path.join(folder, "column.npy"))
        Traceback (most recent call last):
            ...
        ValueError: .../column.npy holds an array of shape (3,); rows need their own axis: save x.reshape(-1, 1) for one column
    """
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable .npy file ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path} is an .npz archive; save one array with np.save")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise ValueError(f"{path} holds values of dtype {arr.dtype}; it must hold real numbers")
    if arr.ndim < 2:
        raise ValueError(
            f"{path} holds an array of shape {arr.shape}; rows need their own axis: save "
            "x.reshape(-1, 1) for one column"
        )
    return arr


def _tensor(a: Any) -> Tensor:
    if isinstance(a, Tensor):
        return a
    a = np.asarray(a)
    return torch.from_numpy(a.copy() if not a.flags.writeable else np.ascontiguousarray(a))


class ArrayRows(Dataset):
    """Rows of an array (numpy, memory-mapped or a tensor), with optional row-for-row contexts,
    as a map-style dataset. An item is a row, or a ``(row, context)`` pair; ``__getitems__``
    reads a list of rows with one fancy index (what :func:`~pyroflows.fit` and
    :class:`torch.utils.data.DataLoader` use).

    Example:
        >>> rows = ArrayRows(np.arange(8.0).reshape(4, 2), context=np.arange(4.0).reshape(4, 1))
        >>> len(rows), rows[1]
        (4, (tensor([2., 3.], dtype=torch.float64), tensor([1.], dtype=torch.float64)))
        >>> x, c = rows.__getitems__([3, 0])
        >>> x.tolist(), c.tolist()
        ([[6.0, 7.0], [0.0, 1.0]], [[3.0], [0.0]])
    """

    def __init__(self, data: Any, context: Any = None) -> None:
        if context is not None and len(context) != len(data):
            raise ValueError(
                f"context has {len(context)} rows but data has {len(data)}; they must match "
                "row for row"
            )
        self.data, self.context = data, context

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        row = _tensor(self.data[i])
        return row if self.context is None else (row, _tensor(self.context[i]))

    def __getitems__(self, indices: Sequence[int]) -> Any:
        idx = np.asarray(indices, dtype=np.int64)
        rows = _tensor(self.data[idx])
        return rows if self.context is None else (rows, _tensor(self.context[idx]))


def csv_chunks(
    path: str | Path, *, chunk_rows: int = CHUNK_ROWS, delimiter: str | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_row, float64 array)`` for consecutive chunks of a CSV/TSV file's data rows
    (row numbers from 0 after an optional header line). A cell that is not a number becomes
    NaN, so :func:`scan_rows` reports its row.

    The delimiter (tab, semicolon or comma) is guessed from the first line unless given.

    Raises:
        ValueError: a row with a different number of cells than the first data row.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "t.csv")
        >>> with open(path, "w") as f:
        ...     _ = f.write("a,b\\n1,2\\n3,x\\n5,6\\n")
        >>> for first_row, chunk in csv_chunks(path, chunk_rows=2):
        ...     print(first_row, chunk.tolist())
        0 [[1.0, 2.0], [3.0, nan]]
        2 [[5.0, 6.0]]
    """
    path = Path(path)
    with path.open(newline="") as f:
        first = f.readline()
        if delimiter is None:
            delimiter = (
                "\t" if "\t" in first else ";" if first.count(";") > first.count(",") else ","
            )
        head = next(csv.reader(io.StringIO(first), delimiter=delimiter), [])
        pending: list[list[str]] = []
        if head and not all(_number(c) is not None for c in head):
            pass  # a header line: skip it
        elif head:
            pending.append(head)
        width = len(head) if head else None
        row = 0
        reader = csv.reader(f, delimiter=delimiter)
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue
            pending.append(cells)
            if len(pending) == chunk_rows:
                yield row, _parse(pending, row, width, path)
                row += len(pending)
                pending = []
        if pending:
            yield row, _parse(pending, row, width, path)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _parse(rows: list[list[str]], first: int, width: int | None, path: Path) -> np.ndarray:
    width = width or len(rows[0])
    out = np.empty((len(rows), width))
    for i, cells in enumerate(rows):
        if len(cells) != width:
            raise ValueError(
                f"{path}: data row {first + i} has {len(cells)} cells, the first has {width}"
            )
        for j, cell in enumerate(cells):
            v = _number(cell)
            out[i, j] = np.nan if v is None else v
    return out


class CsvRows(IterableDataset):
    """The rows of a CSV/TSV file as an iterable dataset, read ``chunk_rows`` at a time (the
    file is never loaded whole). ``pf.fit(flow, CsvRows(path))`` trains on it in file order.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "t.tsv")
        >>> with open(path, "w") as f:
        ...     _ = f.write("x\\ty\\n1\\t2\\n3\\t4\\n5\\t6\\n")
        >>> torch.stack(list(CsvRows(path, chunk_rows=2)))
        tensor([[1., 2.],
                [3., 4.],
                [5., 6.]], dtype=torch.float64)
    """

    def __init__(self, path: str | Path, *, chunk_rows: int = CHUNK_ROWS) -> None:
        self.path, self.chunk_rows = Path(path), chunk_rows

    def __iter__(self) -> Iterator[Tensor]:
        for _, chunk in csv_chunks(self.path, chunk_rows=self.chunk_rows):
            yield from torch.from_numpy(chunk)


def csv_to_npy(
    path: str | Path, out: str | Path, *, chunk_rows: int = CHUNK_ROWS, dtype: Any = np.float64
) -> np.ndarray:
    """Convert a CSV/TSV table to a ``.npy`` file chunk by chunk (memory: one chunk), and return
    it memory-mapped. Bad rows are reported first (:func:`scan_rows`).

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> with open(os.path.join(folder, "t.csv"), "w") as f:
        ...     _ = f.write("a;b\\n1;2\\n3;4\\n5;6\\n")
        >>> x = csv_to_npy(os.path.join(folder, "t.csv"), os.path.join(folder, "t.npy"))
        >>> type(x).__name__, x.shape, x[-1].tolist()
        ('memmap', (3, 2), [5.0, 6.0])
        >>> with open(os.path.join(folder, "bad.csv"), "w") as f:
        ...     _ = f.write("1,2\\n3,inf\\n")
        >>> csv_to_npy(os.path.join(folder, "bad.csv"), os.path.join(folder, "bad.npy"))
        Traceback (most recent call last):
            ...
        ValueError: .../bad.csv has 1 row with NaN/Inf (row 1); remove or impute them
    """
    scan_rows(((s, c) for s, c in csv_chunks(path, chunk_rows=chunk_rows)), name=str(path))
    n = width = 0
    for _, chunk in csv_chunks(path, chunk_rows=chunk_rows):
        n, width = n + len(chunk), chunk.shape[1]
    arr = np.lib.format.open_memmap(str(out), mode="w+", dtype=dtype, shape=(n, width))
    for start, chunk in csv_chunks(path, chunk_rows=chunk_rows):
        arr[start : start + len(chunk)] = chunk
    arr.flush()
    del arr
    return open_npy(out)


def array_chunks(data: Any, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_row, chunk)`` over an array or memory map, ``chunk_rows`` rows at a time."""
    for s in range(0, len(data), chunk_rows):
        yield s, data[s : s + chunk_rows]


def scan_rows(
    chunks: Iterable[tuple[int, Any]],
    *,
    name: str = "data",
    shape: Sequence[int] | None = None,
) -> int:
    """Check ``(first_row, chunk)`` pieces of a table for the row shape ``shape`` and for
    NaN/Inf, one chunk in memory at a time; return the number of rows.

    Raises:
        ValueError: naming the first bad rows by their row numbers (up to 10, and how many).

    Example:
        >>> x = np.zeros((100, 2)); x[37, 1] = np.nan; x[80, 0] = np.inf
        >>> scan_rows(array_chunks(x, 16), name="big.npy")
        Traceback (most recent call last):
        ...
        ValueError: big.npy has 2 rows with NaN/Inf (rows 37, 80); remove or impute them
    """
    bad: list[int] = []
    count = n = 0
    for start, chunk in chunks:
        a = np.asarray(chunk.numpy() if isinstance(chunk, Tensor) else chunk)
        if shape is not None and tuple(a.shape[1:]) != tuple(shape):
            raise ValueError(
                f"Expected {name} rows of shape {tuple(shape)}; got {tuple(a.shape[1:])} "
                f"(rows {start} to {start + len(a) - 1})"
            )
        if a.dtype.kind in "fc":
            ok = np.isfinite(a.reshape(len(a), -1)).all(axis=1)
            rows = np.flatnonzero(~ok)
            count += len(rows)
            bad.extend((rows[: 10 - len(bad)] + start).tolist() if len(bad) < 10 else [])
        n += len(a)
    if count:
        s = "s" if count > 1 else ""
        more = ", ..." if count > len(bad) else ""
        raise ValueError(
            f"{name} has {count} row{s} with NaN/Inf (row{s} {', '.join(map(str, bad))}{more}); "
            "remove or impute them"
        )
    return n


class _Standardized(Dataset):
    """Rows of an array standardised on the fly, ``(x - mean) / std``, read by index."""

    def __init__(self, data: Any, mean: np.ndarray, std: np.ndarray) -> None:
        self.data, self.mean, self.std = data, mean, std

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Tensor:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> Tensor:
        rows = np.asarray(self.data[np.asarray(indices, dtype=np.int64)], dtype=np.float64)
        return torch.from_numpy((rows - self.mean) / self.std)


def fit_npy(
    flow: Any,
    path: str | Path | np.ndarray,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    prepare: Any = None,
    **kw: Any,
) -> dict[str, Any]:
    """``pyroflows fit big.npy``: what :func:`pyroflows.infer.table.fit_table` does, without loading the
    file: memory-map it, check it for NaN/Inf rows in chunks (naming them by row number, from
    0), standardise with column means and deviations computed in chunks, fit on the rows read
    a minibatch at a time (``pf.fit``'s seeded index split holds out ``val_fraction``), and
    score the training rows in chunks (after ``prepare(flow)``, if given). ``path`` may be the
    memory-mapped array itself. Returns what ``fit_table`` returns."""
    from ..infer.fit import fit, validation_size
    from .tabular import Standardizer

    x = open_npy(path) if isinstance(path, (str, Path)) else path
    if x.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {x.shape}; a table is 2-D")
    scan_rows(array_chunks(x), name=str(path))
    s1, s2 = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for _, chunk in array_chunks(x):
        c = np.asarray(chunk, dtype=np.float64)
        s1 += c.sum(0)
        s2 += (c * c).sum(0)
    mean = s1 / len(x)
    std = np.sqrt(np.maximum(s2 / len(x) - mean**2, 0.0))
    constant = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    if constant.any():
        cols = ", ".join(str(j + 1) for j in np.flatnonzero(constant))
        raise ValueError(f"column(s) {cols} are constant; drop those columns")
    st = Standardizer(mean, std)
    kw.setdefault("progress", False)
    data = _Standardized(x, mean, std)
    history = fit(flow, data, val_fraction=val_fraction, seed=seed, check_data=False, **kw)
    flow.eval()
    if prepare is not None:
        prepare(flow)
    n_val = validation_size(len(x), val_fraction)
    total = 0.0
    with torch.no_grad():
        for s, _ in array_chunks(x, 8192):
            z = data.__getitems__(range(s, min(s + 8192, len(x))))
            z = z.to(next(flow.parameters()).dtype)
            total -= float(flow().log_prob(z).double().sum())
    # the mean over all rows, and the validation rows' mean, give the training rows' mean
    val_nll = None if not n_val else history.best_val_loss + st.log_det
    n_train = len(x) - n_val
    all_nll = total / len(x) + st.log_det
    train_nll = all_nll if not n_val else (all_nll * len(x) - val_nll * n_val) / n_train
    return {
        "standardizer": st,
        "history": history,
        "train_nll": train_nll,
        "val_nll": val_nll,
        "n_train": n_train,
        "n_val": n_val,
    }
