r"""Two-dimensional toy densities (FFJORD's generators) with exact log-densities.

The generators reproduce the distributions of FFJORD's ``lib/toy_data.py`` [1] (itself after [2])
and scikit-learn's ``make_moons``, drawing every point i.i.d. (FFJORD spaces the ring angles on a
shuffled grid and makes the mixture counts exactly equal; the distribution is the same). Each
returns a tensor of shape ``(n, 2)`` in the default dtype.

Where the density is known, :func:`toy_log_density` evaluates it exactly, so the entropy
:math:`H(p) = -\mathbb{E}_p[\log p(x)]` is the best test NLL any model can reach
(:data:`OPTIMAL_NLL`, in nats):

* ``8gaussians``: :math:`p(x) = \frac18 \sum_k \mathcal N(x;\, c_k, s^2 I)`, with centres
  :math:`c_k = 4 u_k / 1.414` on the eight compass directions :math:`u_k` and :math:`s = 0.5/1.414`;
  :math:`H = 2.8313` in [1]'s table (numerical integration on a 2001² grid gives 2.83188).
* ``checkerboard``: uniform on 8 squares of side 2 in :math:`[-4, 4)^2` (area 32),
  :math:`H = \log 32 = 3.4657`.
* ``rings``: four circles of radii :math:`R_k = 3, 2.25, 1.5, 0.75` with uniform angle, equal
  weight, and isotropic noise :math:`\sigma = 0.08`. The integral over the angle has the closed
  form :math:`\frac{1}{2\pi}\int_0^{2\pi} \mathcal N(x;\, R(\cos\theta, \sin\theta), \sigma^2 I)\,
  d\theta = \frac{1}{2\pi\sigma^2} e^{-(r - R)^2 / 2\sigma^2}\, \tilde I_0(rR/\sigma^2)` with
  :math:`r = \|x\|` and the scaled Bessel function :math:`\tilde I_0(z) = e^{-z} I_0(z)`;
  :math:`H = 2.6233`.
* ``moons``: scikit-learn's ``make_moons`` (not FFJORD's rescaled variant): two half circles,
  :math:`(\cos\theta, \sin\theta)` and :math:`(1 - \cos\theta, \tfrac12 - \sin\theta)` with
  :math:`\theta \sim U(0, \pi)`, plus isotropic noise (0.05 by default). The angle is integrated
  numerically (composite Simpson, 513 nodes: pointwise within 1e-5 nats of 4097 nodes);
  :math:`H = 0.2892` for noise 0.05 (2-D grid integration, step 0.004).
* ``spirals``: FFJORD's ``2spirals`` (uniform jitter, then Gaussian noise); no closed-form density.

References:
    [1] Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud. "FFJORD: Free-form continuous dynamics
        for scalable reversible generative models." ICLR 2019 (github.com/rtqichen/ffjord).
    [2] Behrmann, Grathwohl, Chen, Duvenaud, Jacobsen. "Invertible residual networks." ICML 2019.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "OPTIMAL_NLL",
    "TOY_DATASETS",
    "checkerboard",
    "eight_gaussians",
    "rings",
    "spirals",
    "toy_data",
    "toy_log_density",
    "two_moons",
]

_F64 = torch.float64
_EIGHT_SCALE = 1.414  # FFJORD divides by 1.414, not sqrt(2); kept so the entropy matches [1]
_EIGHT_STD = 0.5 / _EIGHT_SCALE
_RING_RADII = (3.0, 2.25, 1.5, 0.75)
_RING_NOISE = 0.08


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int; got {type(seed).__name__}")
        return torch.Generator().manual_seed(int(seed))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    return generator


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be an int number of points; got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    return int(n)


def _out(x: Tensor) -> Tensor:
    return x.to(torch.get_default_dtype())


def _eight_centres() -> Tensor:
    h = 1.0 / math.sqrt(2.0)
    units = [(1, 0), (-1, 0), (0, 1), (0, -1), (h, h), (h, -h), (-h, h), (-h, -h)]
    return torch.tensor(units, dtype=_F64) * 4.0 / _EIGHT_SCALE


def _moon_arcs(theta: Tensor) -> tuple[Tensor, Tensor]:
    outer = torch.stack([theta.cos(), theta.sin()], -1)
    inner = torch.stack([1.0 - theta.cos(), 0.5 - theta.sin()], -1)
    return outer, inner


def two_moons(
    n: int,
    *,
    noise: float = 0.05,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Two interleaved half circles with Gaussian noise (scikit-learn's ``make_moons``).

    Args:
        n: number of points.
        noise: standard deviation of the isotropic Gaussian noise.
        seed: seed of a private generator (the global torch RNG is used when both are None).
        generator: a ``torch.Generator`` to draw from.

    Returns:
        Tensor of shape ``(n, 2)``.

    Example:
        >>> x = two_moons(1000, seed=0)
        >>> x.shape, bool(x[:, 0].min() > -1.5), bool(x[:, 0].max() < 2.5)
        (torch.Size([1000, 2]), True, True)
    """
    n, gen = _check_n(n), _generator(seed, generator)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0; got {noise}")
    theta = torch.rand(n, generator=gen, dtype=_F64) * math.pi
    inner = torch.rand(n, generator=gen, dtype=_F64) < 0.5
    outer_pts, inner_pts = _moon_arcs(theta)
    x = torch.where(inner[:, None], inner_pts, outer_pts)
    return _out(x + noise * torch.randn(n, 2, generator=gen, dtype=_F64))


def eight_gaussians(
    n: int, *, seed: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Equal mixture of 8 isotropic Gaussians on a circle of radius ``4 / 1.414`` (FFJORD).

    Example:
        >>> x = eight_gaussians(4000, seed=0)
        >>> round(float(x.norm(dim=1).mean()), 1)
        2.8
    """
    n, gen = _check_n(n), _generator(seed, generator)
    idx = torch.randint(0, 8, (n,), generator=gen)
    x = _eight_centres()[idx] + _EIGHT_STD * torch.randn(n, 2, generator=gen, dtype=_F64)
    return _out(x)


def checkerboard(
    n: int, *, seed: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Uniform on the 8 "black" squares of side 2 of a 4 x 4 board on ``[-4, 4)^2`` (FFJORD).

    Example:
        >>> x = checkerboard(1000, seed=0)
        >>> cells = torch.floor(x / 2)
        >>> bool(((cells[:, 0] + cells[:, 1]) % 2 == 0).all()), bool(x.abs().max() <= 4)
        (True, True)
    """
    n, gen = _check_n(n), _generator(seed, generator)
    x1 = torch.rand(n, generator=gen, dtype=_F64) * 4 - 2
    x2 = torch.rand(n, generator=gen, dtype=_F64)
    x2 = x2 - 2 * torch.randint(0, 2, (n,), generator=gen).to(_F64) + torch.floor(x1) % 2
    return _out(torch.stack([x1, x2], -1) * 2)


def rings(n: int, *, seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Four concentric noisy circles of radii 3, 2.25, 1.5, 0.75 (FFJORD's ``rings``).

    Example:
        >>> x = rings(2000, seed=0)
        >>> sorted({round(float(r) / 0.75) * 0.75 for r in x.norm(dim=1)})
        [0.75, 1.5, 2.25, 3.0]
    """
    n, gen = _check_n(n), _generator(seed, generator)
    radius = torch.tensor(_RING_RADII, dtype=_F64)[torch.randint(0, 4, (n,), generator=gen)]
    theta = torch.rand(n, generator=gen, dtype=_F64) * (2 * math.pi)
    x = radius[:, None] * torch.stack([theta.cos(), theta.sin()], -1)
    return _out(x + _RING_NOISE * torch.randn(n, 2, generator=gen, dtype=_F64))


def spirals(n: int, *, seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved spirals (FFJORD's ``2spirals``); no closed-form density.

    Example:
        >>> x = spirals(1000, seed=0)
        >>> x.shape, bool(x.abs().max() < 5)
        (torch.Size([1000, 2]), True)
    """
    n, gen = _check_n(n), _generator(seed, generator)
    t = torch.sqrt(torch.rand(n, 1, generator=gen, dtype=_F64)) * (540 * 2 * math.pi / 360)
    jitter = torch.rand(n, 2, generator=gen, dtype=_F64) * 0.5
    x = torch.cat([-t.cos() * t, t.sin() * t], -1) + jitter
    sign = torch.where(torch.rand(n, 1, generator=gen, dtype=_F64) < 0.5, -1.0, 1.0).to(_F64)
    x = sign * x / 3
    return _out(x + 0.1 * torch.randn(n, 2, generator=gen, dtype=_F64))


# ---- exact log-densities ---------------------------------------------------------------------


def _eight_log_density(x: Tensor) -> Tensor:
    diff = x[..., None, :] - _eight_centres()
    lp = -(diff**2).sum(-1) / (2 * _EIGHT_STD**2) - math.log(2 * math.pi * _EIGHT_STD**2)
    return torch.logsumexp(lp, -1) - math.log(8)


def _checkerboard_log_density(x: Tensor) -> Tensor:
    cells = torch.floor(x / 2)
    inside = ((x >= -4) & (x < 4)).all(-1) & ((cells.sum(-1) % 2) == 0)
    return torch.where(inside, -math.log(32.0), -math.inf).to(x.dtype)


def _rings_log_density(x: Tensor) -> Tensor:
    s2 = _RING_NOISE**2
    r = x.norm(dim=-1, keepdim=True)
    radii = torch.tensor(_RING_RADII, dtype=x.dtype)
    ring = (
        -math.log(2 * math.pi * s2)
        - (r - radii) ** 2 / (2 * s2)
        + torch.log(torch.special.i0e(r * radii / s2))
    )
    return torch.logsumexp(ring, -1) - math.log(len(_RING_RADII))


def _moons_log_density(x: Tensor, *, noise: float = 0.05, nodes: int = 513) -> Tensor:
    if not noise > 0:
        raise ValueError(f"the density exists only for noise > 0; got {noise}")
    if nodes < 3 or nodes % 2 == 0:
        raise ValueError(f"nodes must be an odd number >= 3 (Simpson's rule); got {nodes}")
    theta = torch.linspace(0, math.pi, nodes, dtype=_F64)
    w = torch.full((nodes,), 2.0, dtype=_F64)
    w[1::2], w[0], w[-1] = 4.0, 1.0, 1.0
    # Simpson weights of (1/pi) dtheta, times the mixture weight 1/2 of each arc
    log_w = (w * (math.pi / (nodes - 1)) / 3 / math.pi / 2).log().repeat(2)
    arcs = torch.cat(_moon_arcs(theta))  # (2 * nodes, 2)
    const = log_w - (arcs**2).sum(-1) / (2 * noise**2) - math.log(2 * math.pi * noise**2)
    flat = x.reshape(-1, 2)
    # |x - a|^2 = |x|^2 - 2 x.a + |a|^2, so each chunk is one matrix product
    out = [
        torch.logsumexp(const + (c @ arcs.T) / noise**2, -1) - (c**2).sum(-1) / (2 * noise**2)
        for c in flat.split(4096)
    ]
    return torch.cat(out).reshape(x.shape[:-1]) if out else x.new_zeros(x.shape[:-1])


_LOG_DENSITIES: dict[str, Callable[..., Tensor]] = {
    "moons": _moons_log_density,
    "8gaussians": _eight_log_density,
    "checkerboard": _checkerboard_log_density,
    "rings": _rings_log_density,
}


def toy_log_density(name: str, x: Tensor, **params: float) -> Tensor:
    """Exact log-density of toy distribution ``name`` at points ``x`` of shape ``(..., 2)``.

    Computed in float64, returned in ``x``'s dtype. ``params`` are the generator's options
    (``noise`` for ``moons``; ``nodes``, the odd number of Simpson nodes over the angle).

    Example:
        >>> round(float(toy_log_density("checkerboard", torch.tensor([1.0, 1.0]))), 4)
        -3.4657
        >>> x = eight_gaussians(50000, seed=1)
        >>> round(float(-toy_log_density("8gaussians", x).mean()), 1)
        2.8
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {sorted(TOY_DATASETS)}")
    if name not in _LOG_DENSITIES:
        raise ValueError(
            f"{name!r} has no closed-form density; use one of {sorted(_LOG_DENSITIES)}"
        )
    if not isinstance(x, Tensor) or x.shape[-1:] != (2,):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (..., 2); got {shape}")
    return _LOG_DENSITIES[name](x.to(_F64), **params).to(x.dtype)


#: name -> generator ``f(n, *, seed=None, generator=None) -> (n, 2)``; FFJORD's names.
TOY_DATASETS: dict[str, Callable[..., Tensor]] = {
    "moons": two_moons,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "rings": rings,
    "spirals": spirals,
}

#: name -> entropy in nats (the optimal expected test NLL); ``moons`` is for noise 0.05.
OPTIMAL_NLL: dict[str, float] = {
    "moons": 0.2892,
    "8gaussians": 2.8313,
    "checkerboard": math.log(32.0),
    "rings": 2.6233,
}


def toy_data(
    name: str, n: int, *, seed: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Draw ``n`` points of toy data set ``name`` (a key of :data:`TOY_DATASETS`).

    Example:
        >>> toy_data("rings", 5, seed=0).shape
        torch.Size([5, 2])
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy data set {name!r}; choose one of {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name](n, seed=seed, generator=generator)
