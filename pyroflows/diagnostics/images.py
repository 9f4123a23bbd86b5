"""Image grids of samples or data, for tutorials and reports (a PNG file, no figure needed)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["image_grid", "save_image_grid"]


def image_grid(
    images: Tensor,
    *,
    nrow: int = 8,
    padding: int = 1,
    scale: int = 1,
    value_range: tuple[float, float] = (0.0, 1.0),
    pad_value: float = 1.0,
) -> Tensor:
    """Tile images ``(N, C, H, W)`` (``C`` is 1 or 3) into one ``(C, H', W')`` grid in ``[0, 1]``.

    Values are mapped from ``value_range`` to ``[0, 1]`` and clipped (samples of a flow on
    dequantised data live in ``[0, 1]``; pass ``value_range=(0, 16)`` for raw digits levels).

    Args:
        images: the images, ``(N, C, H, W)``.
        nrow: images per row.
        padding: pixels between images (before scaling).
        scale: integer upscaling factor (nearest neighbour), e.g. 4 for 8x8 digits.
        value_range: values shown as black and white.
        pad_value: grey level of the padding, in ``[0, 1]``.

    Example:
        >>> image_grid(torch.rand(10, 1, 8, 8), nrow=5, padding=1).shape
        torch.Size([1, 19, 46])
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (N, C, H, W) with C = 1 or 3; got {shape}")
    if images.shape[0] == 0:
        raise ValueError("images is empty")
    if int(nrow) < 1 or int(padding) < 0 or int(scale) < 1:
        raise ValueError(
            f"need nrow >= 1, padding >= 0, scale >= 1; got {nrow}, {padding}, {scale}"
        )
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low; got {value_range}")
    x = ((images.detach().cpu().double() - lo) / (hi - lo)).clamp(0.0, 1.0)
    n, c, h, w = x.shape
    cols = min(int(nrow), n)
    rows = -(-n // cols)
    p = int(padding)
    grid = torch.full((c, rows * (h + p) + p, cols * (w + p) + p), float(pad_value), dtype=x.dtype)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = p + r * (h + p), p + q * (w + p)
        grid[:, top : top + h, left : left + w] = x[i]
    if int(scale) > 1:
        grid = grid.repeat_interleave(int(scale), 1).repeat_interleave(int(scale), 2)
    return grid


def save_image_grid(images: Tensor, path: str | os.PathLike, **kwargs) -> Path:
    """Write :func:`image_grid` of ``images`` to a PNG file (grey for one channel, RGB for three).

    Keyword arguments are those of :func:`image_grid`. Returns the path written.

    Example:
        >>> import tempfile, os
        >>> path = save_image_grid(torch.rand(16, 1, 8, 8), os.path.join(tempfile.mkdtemp(), "s.png"), scale=4)
        >>> path.suffix, path.stat().st_size > 0
        ('.png', True)
    """
    from .._optional import require

    require("matplotlib.image", "save_image_grid")  # the extra "plot"
    import matplotlib.image

    grid = image_grid(images, **kwargs)
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(
            f"save_image_grid writes PNG files; give a path ending in .png, got {path}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    array = grid.permute(1, 2, 0).numpy()
    if array.shape[-1] == 1:
        matplotlib.image.imsave(path, array[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        matplotlib.image.imsave(path, array)
    return path
