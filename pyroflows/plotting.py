r"""Plots of 2-D densities and samples (matplotlib, no display needed); image grids are
:func:`pyroflows.save_image_grid`. Needs matplotlib: ``pip install "pyroflows[plot]"``.

Figures are built with :class:`matplotlib.figure.Figure` directly, never with ``pyplot``, so
nothing opens a window, no global backend is switched, and figures are freed when dropped:
save them with ``fig.savefig(path)``. A density is drawn from any callable that maps points of
shape ``(N, 2)`` to log-densities of shape ``(N,)`` (``flow.log_prob``, or
``lambda x: standardizer.log_prob(flow, x)`` for a flow fitted to standardised data).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ._optional import require

require("matplotlib", "pyroflows.plotting")  # the extra "plot"
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "bounds_of",
    "density_grid",
    "plot_density_2d",
    "plot_fit_2d",
    "plot_samples_2d",
]

Bounds = tuple[tuple[float, float], tuple[float, float]]


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _axes(ax: Axes | None, figsize: tuple[float, float] = (4.0, 4.0)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def bounds_of(points: Tensor | np.ndarray, *, margin: float = 0.1, quantile: float = 0.0) -> Bounds:
    """Axis ranges covering ``points`` (shape ``(N, 2)``), widened by ``margin`` of the span.

    ``quantile`` > 0 ignores that share of outliers at each end.

    Example:
        >>> bounds_of(np.array([[0.0, -1.0], [2.0, 1.0]]), margin=0.5)
        ((-1.0, 3.0), (-2.0, 2.0))
    """
    p = _numpy(points)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) == 0:
        raise ValueError(f"points must have shape (N, 2) with N > 0; got {p.shape}")
    p = p[np.isfinite(p).all(1)]
    if len(p) == 0:
        raise ValueError("points has no finite rows to take bounds from")
    lo, hi = np.quantile(p, quantile, axis=0), np.quantile(p, 1 - quantile, axis=0)
    pad = np.maximum(hi - lo, 1e-6) * margin
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (
        float(lo[1] - pad[1]),
        float(hi[1] + pad[1]),
    )


def density_grid(
    log_prob: Callable[[Tensor], Tensor],
    bounds: Bounds,
    *,
    resolution: int = 200,
    batch_size: int = 8192,
    dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate ``log_prob`` on a ``resolution`` x ``resolution`` grid over ``bounds``.

    Returns:
        ``(xs, ys, log_p)`` with ``log_p[i, j]`` the log-density at ``(xs[j], ys[i])``.

    Example:
        >>> normal = torch.distributions.Normal(0.0, 1.0)
        >>> xs, ys, lp = density_grid(lambda x: normal.log_prob(x).sum(-1), ((-4, 4), (-4, 4)))
        >>> lp.shape, round(float(np.exp(lp).sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])), 3)
        ((200, 200), 1.0)
    """
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2; got {resolution}")
    (x0, x1), (y0, y1) = bounds
    if not (x1 > x0 and y1 > y0):
        raise ValueError(
            f"bounds must be ((xmin, xmax), (ymin, ymax)) with min < max; got {bounds}"
        )
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.from_numpy(np.column_stack([gx.ravel(), gy.ravel()]))
    pts = pts.to(dtype or torch.get_default_dtype())
    with torch.no_grad():
        out = [log_prob(chunk).reshape(-1) for chunk in pts.split(batch_size)]
    return xs, ys, _numpy(torch.cat(out)).reshape(resolution, resolution)


def plot_density_2d(
    log_prob: Callable[[Tensor], Tensor],
    *,
    bounds: Bounds,
    resolution: int = 200,
    title: str | None = None,
    ax: Axes | None = None,
    cmap: str = "viridis",
) -> Figure:
    """Image of the density ``exp(log_prob)`` over ``bounds``.

    Example:
        >>> normal = torch.distributions.Normal(0.0, 1.0)
        >>> fig = plot_density_2d(lambda x: normal.log_prob(x).sum(-1), bounds=((-3, 3), (-3, 3)),
        ...                       resolution=50, title="N(0, I)")
        >>> fig.axes[0].get_title(), fig.axes[0].images[0].get_array().shape
        ('N(0, I)', (50, 50))
    """
    xs, ys, lp = density_grid(log_prob, bounds, resolution=resolution)
    dens = np.exp(np.where(np.isfinite(lp), lp, -np.inf))
    fig, ax = _axes(ax)
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    ax.imshow(
        dens, origin="lower", extent=extent, cmap=cmap, aspect="auto", interpolation="nearest"
    )
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig


def plot_samples_2d(
    samples: Tensor | np.ndarray,
    *,
    bounds: Bounds | None = None,
    bins: int = 150,
    title: str | None = None,
    ax: Axes | None = None,
    cmap: str = "viridis",
) -> Figure:
    """2-D histogram of samples of shape ``(N, 2)`` (a scatter plot for fewer than 2000).

    Example:
        >>> fig = plot_samples_2d(torch.randn(5000, 2), bins=40, title="samples")
        >>> fig.axes[0].get_title(), fig.axes[0].images[0].get_array().shape
        ('samples', (40, 40))
    """
    p = _numpy(samples)
    bounds = bounds or bounds_of(p, quantile=0.001)
    fig, ax = _axes(ax)
    (x0, x1), (y0, y1) = bounds
    if len(p) >= 2000:
        h, _, _ = np.histogram2d(p[:, 0], p[:, 1], bins=bins, range=[[x0, x1], [y0, y1]])
        ax.imshow(h.T, origin="lower", extent=(x0, x1, y0, y1), cmap=cmap, aspect="auto")
    else:
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig


def plot_fit_2d(
    data: Tensor | np.ndarray,
    log_prob: Callable[[Tensor], Tensor],
    samples: Tensor | np.ndarray,
    *,
    name: str = "flow",
    bounds: Bounds | None = None,
    resolution: int = 200,
    size: float = 3.5,
) -> Figure:
    """Three panels: the data, the fitted density, and samples of the fit, on common axes.

    Example:
        >>> normal = torch.distributions.Normal(0.0, 1.0)
        >>> fig = plot_fit_2d(torch.randn(500, 2), lambda x: normal.log_prob(x).sum(-1),
        ...                   torch.randn(500, 2), name="N(0, I)", resolution=20)
        >>> [ax.get_title() for ax in fig.axes]
        ['data', 'N(0, I) density', 'N(0, I) samples']
    """
    bounds = bounds or bounds_of(data, margin=0.15, quantile=0.001)
    fig = Figure(figsize=(3 * size, size), layout="constrained")
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    plot_samples_2d(data, bounds=bounds, ax=axes[0], title="data")
    plot_density_2d(
        log_prob, bounds=bounds, resolution=resolution, ax=axes[1], title=f"{name} density"
    )
    plot_samples_2d(samples, bounds=bounds, ax=axes[2], title=f"{name} samples")
    return fig
