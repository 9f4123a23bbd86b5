"""Image data: scikit-learn's bundled 8x8 digits and a reader for MNIST-format IDX files.

Both return integer *levels* (not floats): dequantise them with
:func:`pyroflows.transforms.dequantize` before fitting a continuous flow, and score them with
:func:`pyroflows.bits_per_dim`.

References:
    [1] E. Alpaydin, C. Kaynak. Optical Recognition of Handwritten Digits. UCI Machine Learning
        Repository, 1998 (the data behind ``sklearn.datasets.load_digits``).
    [2] Y. LeCun, C. Cortes, C. J. C. Burges. The MNIST database of handwritten digits
        (the IDX file format is described on its page).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._optional import require

__all__ = ["DIGITS_LEVELS", "digits", "read_idx"]

#: Number of grey levels of the digits images (values 0..16).
DIGITS_LEVELS = 17

_SPLITS = ("train", "test", "all")


def digits(split: str = "train", *, seed: int = 0, test_fraction: float = 0.2) -> Tensor:
    """The 1797 bundled 8x8 digits of scikit-learn as an ``(N, 1, 8, 8)`` tensor of levels 0..16.

    Needs scikit-learn: ``pip install "pyroflows[data]"``.

    The held-out split is a fixed permutation drawn from ``seed``: the same ``seed`` and
    ``test_fraction`` always give the same split, and ``"train"`` and ``"test"`` never overlap.
    There are 17 grey levels (not a power of two): pass ``levels=DIGITS_LEVELS`` to
    :func:`~pyroflows.transforms.dequantize` and :func:`~pyroflows.bits_per_dim`.

    Args:
        split: ``"train"`` (the first ``1 - test_fraction`` of the permutation), ``"test"``
            (the rest) or ``"all"`` (every image, in the original order).
        seed: seed of the permutation that defines the split.
        test_fraction: fraction of the images held out, in ``(0, 1)``.

    Returns:
        An ``int64`` tensor of shape ``(N, 1, 8, 8)``; ``N`` is 1438 (train) and 359 (test) with
        the defaults.

    Example:
        >>> train, test = digits("train"), digits("test")
        >>> train.shape, test.shape, train.dtype
        (torch.Size([1438, 1, 8, 8]), torch.Size([359, 1, 8, 8]), torch.int64)
        >>> int(train.min()), int(train.max())
        (0, 16)
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}; got {split!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    load_digits = require("sklearn.datasets", "pyroflows.datasets.digits").load_digits

    data = load_digits().data  # (1797, 64) float64 with integer values 0..16
    images = torch.from_numpy(data.astype(np.int64)).reshape(-1, 1, 8, 8)
    if split == "all":
        return images
    n = images.shape[0]
    n_test = round(n * float(test_fraction))
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split of {n} images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    idx = perm[n - n_test :] if split == "test" else perm[: n - n_test]
    return images[idx.sort().values]


# IDX type byte -> numpy big-endian dtype
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> Tensor:
    """Read an IDX file (the MNIST format), gzip-compressed or not, into a tensor.

    The header is two zero bytes, a type byte (``0x08`` unsigned byte, ``0x09`` signed byte,
    ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of
    dimensions, then each size as a big-endian 32-bit integer, followed by the data in C order.
    MNIST image files (``train-images-idx3-ubyte.gz``) give ``(N, 28, 28)`` ``uint8``; add the
    channel axis with ``x[:, None]``.

    Args:
        path: file to read; a gzip file is recognised by its magic bytes, not its name.

    Returns:
        A tensor with the file's shape and dtype (``uint8`` for MNIST).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not IDX (bad magic number, unknown type, truncated or too long).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny-idx2-ubyte")
        >>> with open(path, "wb") as f:
        ...     _ = f.write(bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6]))
        >>> read_idx(path)
        tensor([[1, 2, 3],
                [4, 5, 6]], dtype=torch.uint8)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no IDX file at {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path} is not an IDX file: it must start with two zero bytes (magic number "
            "0x0000TTNN); MNIST files look like train-images-idx3-ubyte[.gz]."
        )
    type_byte, ndim = raw[2], raw[3]
    if type_byte not in _IDX_TYPES:
        known = ", ".join(f"0x{k:02X}" for k in _IDX_TYPES)
        raise ValueError(
            f"{path}: unknown IDX data type 0x{type_byte:02X} (expected one of {known})"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions announced)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_TYPES[type_byte]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header} bytes; the file is truncated or not IDX."
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))
