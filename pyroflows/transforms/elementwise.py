r"""Elementwise transformers shared by coupling and autoregressive layers.

A transformer maps one coordinate given parameters produced by a conditioner:

* additive (NICE [1]):  :math:`y = x + t`, log-det 0;
* affine (RealNVP [2], MAF/IAF [3]): :math:`y = x\, e^{s} + t` with the soft-bounded log-scale
  :math:`s = b \tanh(\tilde s / b)`, log-det :math:`\sum s`;
* rational-quadratic spline (NSF [4]): a monotonic spline of ``bins`` rational-quadratic
  pieces on :math:`[-B, B]`, the identity outside; see :func:`rational_quadratic_spline`.
  Layers use it through :func:`spline`, which by default puts the spline itself on the
  data-to-base side (as zuko and nflows do) and its analytic inverse on the other.

Both maps can sit on either side of a layer: :func:`spline` (the data side by default) and
:func:`affine_on_side` (the base side by default; :class:`~pyroflows.MAF` takes the data side).

Each function takes one tensor ``params`` holding the ``num_params`` parameters of every
coordinate on axis ``dim`` (a layer passes its conditioner's output as it comes, e.g.
``(..., num_params, D)`` with ``dim=-2``; the other axes broadcast with ``x``) and returns the
output and the elementwise log-derivative :math:`\log|\partial y / \partial x|` of the forward
map (``None`` for volume-preserving transformers), in both directions. With ``log_det=False``
the log-derivative is not computed and ``None`` comes in its place (for a pass whose
log-derivatives would be thrown away, e.g. the first D - 1 passes of an autoregressive layer's
sequential solve). Every transformer is the identity when all its parameters are 0, so
zero-initialised conditioners start a flow at the identity.

Layers pick a transformer by name and options with :func:`get_transformer`, which returns the
number of parameters per coordinate and the function with its options bound.

References:
    [1] L. Dinh, D. Krueger, Y. Bengio. NICE: Non-linear Independent Components Estimation. 2014.
    [2] L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP. ICLR 2017.
    [3] G. Papamakarios, T. Pavlakou, I. Murray. Masked Autoregressive Flow for Density
        Estimation. NeurIPS 2017.
    [4] C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. Neural Spline Flows. NeurIPS 2019.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TRANSFORMERS",
    "TransformerSpec",
    "additive",
    "affine",
    "affine_on_side",
    "get_transformer",
    "rational_quadratic_spline",
    "soft_clamp",
    "spline",
    "sum_event",
]


def soft_clamp(s: Tensor, bound: float | None) -> Tensor:
    r"""Smoothly bound ``s`` to :math:`(-b, b)`: :math:`b \tanh(s / b)` (identity when ``b`` is None).

    Example:
        >>> soft_clamp(torch.tensor([0.0, 100.0]), 3.0)
        tensor([0., 3.])
    """
    if bound is None:
        return s
    return torch.tanh(s / bound) * bound


def sum_event(t: Tensor, event_dims: int) -> Tensor:
    """Sum the rightmost ``event_dims`` dimensions (per-coordinate log-derivatives -> one
    log-det per event).

    Example:
        >>> t = torch.arange(12.0).reshape(2, 3, 2)
        >>> sum_event(t, 2), sum_event(t, 1).shape, sum_event(t, 0) is t
        (tensor([15., 51.]), torch.Size([2, 3]), True)
    """
    return t.flatten(-event_dims).sum(-1) if event_dims else t


def affine(
    x: Tensor,
    params: Tensor,
    *,
    inverse: bool = False,
    dim: int = -1,
    bound: float | None = 3.0,
    log_det: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Affine transformer; ``params`` holds ``(shift, raw_log_scale)`` on axis ``dim``. The
    log-derivative is the bounded log-scale (``None`` with ``log_det=False``).

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [2.0, 0.5]])   # (shift, raw log-scale) per coordinate
        >>> y, s = affine(torch.ones(2), p)
        >>> y
        tensor([2.0000, 3.6412])
        >>> x, _ = affine(y, p, inverse=True)
        >>> torch.allclose(x, torch.ones(2))
        True
    """
    shift, raw = params.unbind(dim)
    s = soft_clamp(raw, bound)
    y = (x - shift) * torch.exp(-s) if inverse else x * torch.exp(s) + shift
    return y, (s if log_det else None)


def additive(
    x: Tensor,
    params: Tensor,
    *,
    inverse: bool = False,
    dim: int = -1,
    bound: float | None = None,
    log_det: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Additive (volume-preserving) transformer; ``params`` holds the shift on axis ``dim``.
    The log-derivative is ``None``: zero, with nothing to add (``log_det`` changes nothing).

    Example:
        >>> y, logd = additive(torch.ones(2), torch.tensor([[1.0], [-3.0]]))
        >>> y, logd
        (tensor([ 2., -2.]), None)
        >>> additive(y, torch.tensor([[1.0], [-3.0]]), inverse=True)[0]
        tensor([1., 1.])
    """
    shift = params.select(dim, 0)
    return (x - shift if inverse else x + shift), None


def _knots(raw: Tensor, min_size: float, bound: float, dim: int = -1) -> Tensor:
    """Knots ``-B, ..., B`` of bins of sizes ``2B (m + (1 - K m) softmax(raw))`` along ``dim``."""
    k = raw.shape[dim]
    size = min_size + (1 - min_size * k) * torch.softmax(raw, dim=dim)
    inner = torch.cumsum(size.narrow(dim, 0, k - 1), dim=dim) * (2 * bound) - bound
    end = torch.full_like(size.narrow(dim, 0, 1), bound)
    return torch.cat((-end, inner, end), dim=dim)  # exact ends despite rounding


def rational_quadratic_spline(
    x: Tensor,
    params: Tensor,
    *,
    inverse: bool = False,
    dim: int = -1,
    bins: int = 8,
    bound: float = 5.0,
    min_width: float = 1e-3,
    min_height: float = 1e-3,
    min_derivative: float = 1e-3,
    log_det: bool = True,
) -> tuple[Tensor, Tensor | None]:
    r"""Monotonic rational-quadratic spline on :math:`[-B, B]`, the identity outside [4].

    ``params`` holds :math:`3K - 1` values per coordinate on axis ``dim``: :math:`K`
    unnormalised widths :math:`\tilde w`, :math:`K` heights :math:`\tilde h` and :math:`K - 1`
    interior derivatives :math:`\tilde d`.
    Bin widths are :math:`w_k = 2B\,(m_w + (1 - K m_w)\,\mathrm{softmax}(\tilde w)_k)` (heights
    alike), giving knots :math:`(x_k, y_k)_{k=0}^K` from :math:`(-B, -B)` to :math:`(B, B)`; knot
    derivatives are :math:`d_k = m_d + \mathrm{softplus}(\tilde d_k + c)` with
    :math:`\mathrm{softplus}(c) = 1 - m_d` (so :math:`d_k = 1` at :math:`\tilde d = 0`), and
    :math:`d_0 = d_K = 1` so value and slope join the identity tails. In bin :math:`k`, with
    :math:`s = h_k / w_k`, :math:`\xi = (x - x_k) / w_k \in [0, 1]`:

    .. math::
        y = y_k + \frac{h_k\,[s \xi^2 + d_k \xi (1 - \xi)]}{s + \delta\, \xi (1 - \xi)},
        \qquad \delta = d_{k+1} + d_k - 2 s,

    .. math::
        \frac{dy}{dx} = \frac{s^2\,[d_{k+1} \xi^2 + 2 s \xi (1 - \xi) + d_k (1 - \xi)^2]}
                             {[s + \delta\, \xi (1 - \xi)]^2} > 0.

    The inverse solves :math:`a \xi^2 + b \xi + c = 0` with :math:`\Delta = y - y_k`,
    :math:`a = h_k (s - d_k) + \Delta \delta`, :math:`b = h_k d_k - \Delta \delta`,
    :math:`c = -s \Delta`, by the cancellation-free root
    :math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})` (discriminant clamped at 0). The bin of a point is
    the number of interior knots at or below it; the spline is evaluated on inputs clamped to
    :math:`[-B, B]` and the tails selected with ``where``, so all-tail batches, boundary points
    and huge inputs are safe.

    Args:
        x: inputs.
        params: the raw parameters, on axis ``dim`` (negative); the other axes broadcast with
            ``x``. A layer passes its conditioner's output as it comes: ``(..., 3K - 1, D)``
            with ``dim=-2`` (one tensor, no per-parameter views).
        inverse: evaluate :math:`x \mapsto y` (``False``) or its inverse.
        dim: the parameter axis of ``params``.
        bins, bound, min_width, min_height, min_derivative: :math:`K`, :math:`B`,
            :math:`m_w`, :math:`m_h`, :math:`m_d`.
        log_det: compute ``log dy/dx``; ``False`` returns ``(output, None)`` without it (the
            same output, bit for bit).

    Returns:
        ``(output, log dy/dx)``, the forward log-derivative at the base-side point either way.

    Example:
        >>> zero = torch.zeros(3, 5)                    # K = 2 bins: the identity
        >>> rational_quadratic_spline(torch.tensor([-9.0, 0.5, 1.0]), zero, bins=2, bound=1.0)
        (tensor([-9.0000,  0.5000,  1.0000]), tensor([0., 0., 0.]))
        >>> p = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.5]])
        >>> y, ld = rational_quadratic_spline(torch.tensor([0.3]), p, bins=2, bound=1.0)
        >>> y, ld
        (tensor([0.7660]), tensor([-1.7409]))
        >>> rational_quadratic_spline(y, p, inverse=True, bins=2, bound=1.0)[0]
        tensor([0.3000])
        >>> rational_quadratic_spline(y, p, inverse=True, bins=2, bound=1.0, log_det=False)
        (tensor([0.3000]), None)
    """
    if dim >= 0:
        raise ValueError(f"dim must be a negative axis (counted from the end); got {dim}")
    if params.shape[dim] != 3 * bins - 1:
        raise ValueError(
            f"expected {3 * bins - 1} spline parameters (3 * bins - 1, bins={bins}) on axis "
            f"{dim} of params; got shape {tuple(params.shape)}"
        )
    if dim != -1 and math.prod(params.shape[dim + 1 :]) < 8:
        # few coordinates per row: softmax/cumsum/gather along a short strided axis are
        # slower than one transposed copy (measured: 15 % at 1-4 coordinates, 15 % slower at 8+)
        params, dim = params.movedim(dim, -1).contiguous(), -1
    u = x.unsqueeze(dim)  # x aligned with params, a size-1 parameter axis
    one = list(params.shape)
    one[dim] = 1
    full = torch.broadcast_shapes(u.shape, torch.Size(one))
    if u.shape != full:
        u = u.expand(full)
    if torch.Size(one) != full:  # e.g. one parameter set for a batch of inputs
        shape = list(full)
        shape[dim] = params.shape[dim]
        params = params.expand(shape)
    wh = params.narrow(dim, 0, 2 * bins)
    if min_width == min_height:  # widths and heights in one softmax/cumsum pass
        xs, ys = _knots(wh.unflatten(dim, (2, bins)), min_width, bound, dim).unbind(dim - 1)
    else:
        xs = _knots(wh.narrow(dim, 0, bins), min_width, bound, dim)
        ys = _knots(wh.narrow(dim, bins, bins), min_height, bound, dim)
    shift = math.log(math.expm1(1 - min_derivative))
    d = min_derivative + F.softplus(params.narrow(dim, 2 * bins, bins - 1) + shift)
    end = d.new_ones(full)
    d = torch.cat((end, d, end), dim=dim)
    v = u.clamp(-bound, bound)
    # bin index = number of interior knots <= v (searchsorted(right=True) on a short axis)
    k = ((ys if inverse else xs).narrow(dim, 1, bins - 1) <= v).sum(dim, keepdim=True)
    k = torch.cat((k, k + 1), dim=dim)
    (x_k, x_k1), (y_k, y_k1), (d0, d1) = (t.gather(dim, k).unbind(dim) for t in (xs, ys, d))
    v, x = v.squeeze(dim), u.squeeze(dim)
    w, h = x_k1 - x_k, y_k1 - y_k
    s = h / w
    delta = d1 + d0 - 2 * s
    if inverse:
        dy = v - y_k
        a = h * (s - d0) + dy * delta
        b = h * d0 - dy * delta
        c = -s * dy
        disc = (b * b - 4 * a * c).clamp(min=0)
        xi = (2 * c / (-b - disc.sqrt())).clamp(0, 1)
        out = x_k + xi * w
    else:
        xi = (v - x_k) / w
        t = xi * (1 - xi)
        den = s + delta * t
        out = y_k + h * (s * xi * xi + d0 * t) / den
    inside = x == v
    if not log_det:
        return torch.where(inside, out, x), None
    if inverse:  # the output did not need them
        t = xi * (1 - xi)
        den = s + delta * t
    num = d1 * xi * xi + 2 * s * t + d0 * (1 - xi) * (1 - xi)
    r = s / den
    logd = torch.log(num * r * r)  # one log: num >= m_d s^2 and r in [m, 1/m], no overflow
    return torch.where(inside, out, x), torch.where(inside, logd, 0.0)


def spline(
    x: Tensor,
    params: Tensor,
    *,
    inverse: bool = False,
    invert: bool = True,
    log_det: bool = True,
    **options: Any,
) -> tuple[Tensor, Tensor | None]:
    r"""The layers' spline transformer: :func:`rational_quadratic_spline` :math:`S` on the
    data side (``invert=True``, the default) or on the base side (``invert=False``).

    A layer's forward map goes from the base side to the data side. With ``invert=True`` it is
    :math:`S^{-1}`, so the data-to-base direction (``log_prob``, and the one-pass direction of
    ``fast="density"``) evaluates the spline itself, as zuko's and nflows' NSF do, and the other
    direction its analytic inverse; the log-derivative is
    :math:`\log (S^{-1})'(x) = -\log S'(S^{-1}(x))`. ``invert=False`` makes the forward map
    :math:`S` (Pyro's orientation, and pyroflows' before this option existed: model files
    written then load with it).
    The two are different families of maps: the inverse of a rational-quadratic spline is not
    one. On standardised two moons (``benchmarks/splines.py``, 400 steps, six seeds) the
    data-side spline reached a median test NLL of 0.315 (coupling) and 0.323 (autoregressive)
    against 0.332 and 0.338 for the base-side one, and zuko's 0.323 and 0.319; on the wine
    table and the digits the two were level (docs/benchmarks.md, "Which side the spline is on").

    Args:
        x, params, inverse, log_det: as :func:`rational_quadratic_spline`; ``inverse=True``
            maps data side to base side.
        invert: put :math:`S` on the data side (``True``) or the base side (``False``).
        **options: ``dim``, ``bins``, ``bound``, ``min_width``, ``min_height``,
            ``min_derivative`` of :func:`rational_quadratic_spline`.

    Returns:
        ``(output, log-derivative of the forward map at the base-side point)``, as every
        transformer.

    Example:
        >>> p = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.5]])
        >>> kw = dict(bins=2, bound=1.0)
        >>> s, _ = rational_quadratic_spline(torch.tensor([0.3]), p, **kw)
        >>> spline(torch.tensor([0.3]), p, inverse=True, **kw)[0] == s     # data -> base: S
        tensor([True])
        >>> y, ld = spline(s, p, **kw)                                      # base -> data: S^-1
        >>> y, ld
        (tensor([0.3000]), tensor([1.7409]))
        >>> spline(torch.tensor([0.3]), p, invert=False, **kw)[0] == s      # Pyro's side
        tensor([True])
    """
    return _on_side(rational_quadratic_spline, x, params, inverse, invert, log_det, options)


def _on_side(
    fn: Callable[..., tuple[Tensor, Tensor | None]],
    x: Tensor,
    params: Tensor,
    inverse: bool,
    invert: bool,
    log_det: bool,
    options: dict[str, Any],
) -> tuple[Tensor, Tensor | None]:
    """``fn`` as the forward map (``invert=False``) or its inverse (``invert=True``: the
    directions swapped and the log-derivative negated, still at the base-side point)."""
    if not invert:
        return fn(x, params, inverse=inverse, log_det=log_det, **options)
    y, logd = fn(x, params, inverse=not inverse, log_det=log_det, **options)
    return y, None if logd is None else -logd


def affine_on_side(
    x: Tensor,
    params: Tensor,
    *,
    inverse: bool = False,
    invert: bool = False,
    log_det: bool = True,
    **options: Any,
) -> tuple[Tensor, Tensor | None]:
    r"""The layers' affine transformer: ``affine`` :math:`y = x e^{s} + t` as the forward
    (base-to-data) map (``invert=False``, the default: the MAF paper's and Pyro's side, so
    ``log_prob`` computes :math:`z = (y - t) e^{-s}`) or its inverse (``invert=True``: ``log_prob``
    computes :math:`z = y e^{s} + t`, the shift after the scaling, as zuko's and nflows' MAF
    do). :class:`~pyroflows.MAF` takes the data side (``invert_affine=True``); see its docstring
    for the measurement.

    Example:
        >>> p = torch.tensor([[1.0, 0.0]])            # shift 1, raw log-scale 0 -> s = 0
        >>> affine_on_side(torch.tensor([2.0]), p, inverse=True)[0]     # base side: y - 1
        tensor([1.])
        >>> affine_on_side(torch.tensor([2.0]), p, inverse=True, invert=True)[0]   # y + 1
        tensor([3.])
    """
    return _on_side(affine, x, params, inverse, invert, log_det, options)


Transformer = Callable[..., tuple[Tensor, Tensor | None]]


def _affine_count(bound: float | None = 3.0, invert: bool = False) -> int:
    if not isinstance(invert, bool):
        raise ValueError(f"invert_affine must be True or False; got {invert!r}")
    return 2


def _one(**_: object) -> int:
    return 1


def _spline_count(
    bins: int = 8,
    bound: float = 5.0,
    min_width: float = 1e-3,
    min_height: float = 1e-3,
    min_derivative: float = 1e-3,
    invert: bool = True,
) -> int:
    if not isinstance(invert, bool):
        raise ValueError(f"invert_spline must be True or False; got {invert!r}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    if not (isinstance(bound, (int, float)) and math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a positive finite number; got {bound!r}")
    for name, m in (("min_width", min_width), ("min_height", min_height)):
        if not 0 <= m * bins < 1:
            raise ValueError(f"{name} * bins must be in [0, 1); got {name}={m}, bins={bins}")
    if not 0 <= min_derivative < 1:
        raise ValueError(f"min_derivative must be in [0, 1); got {min_derivative}")
    return 3 * bins - 1


@dataclass(frozen=True)
class TransformerSpec:
    """One entry of :data:`TRANSFORMERS`.

    Attributes:
        fn: ``fn(x, params, *, inverse, dim, log_det=True, **options) -> (y, log-derivative
            or None)``, the parameters of every coordinate on axis ``dim`` of the one tensor
            ``params``; ``log_det=False`` skips the log-derivative (``None`` in its place).
        num_params: ``num_params(**options) -> parameters per coordinate`` (it validates them).
        options: layer option name -> keyword of ``fn`` (e.g. a layer's ``log_scale_bound`` is
            the affine transformer's ``bound``); a layer's other options are ignored.

    Example:
        >>> spec = TRANSFORMERS["affine"]
        >>> spec.fn.__name__, spec.num_params(), spec.options
        ('affine_on_side', 2, (('log_scale_bound', 'bound'), ('invert_affine', 'invert')))
    """

    fn: Transformer
    num_params: Callable[..., int]
    options: tuple[tuple[str, str], ...] = ()


#: name -> transformer specification; layers resolve one with :func:`get_transformer`.
TRANSFORMERS: dict[str, TransformerSpec] = {
    "affine": TransformerSpec(
        affine_on_side, _affine_count, (("log_scale_bound", "bound"), ("invert_affine", "invert"))
    ),
    "additive": TransformerSpec(additive, _one),
    "spline": TransformerSpec(
        spline,
        _spline_count,
        (
            *((k, k) for k in ("bins", "bound", "min_width", "min_height", "min_derivative")),
            ("invert_spline", "invert"),
        ),
    ),
}


def get_transformer(name: str, **options: object) -> tuple[int, Transformer]:
    """``(parameters per coordinate, transformer with its options bound)`` for a layer.

    Args:
        name: a key of :data:`TRANSFORMERS` (``"affine"``, ``"additive"``, ``"spline"``).
        **options: the layer's transformer options (``log_scale_bound``, ``bins``, ``bound``,
            ...); each transformer takes those it declares.

    Example:
        >>> n, tau = get_transformer("spline", bins=4, bound=3.0, log_scale_bound=2.0)
        >>> n, tau.keywords
        (11, {'bins': 4, 'bound': 3.0})
        >>> get_transformer("affine", log_scale_bound=2.0)[1].keywords
        {'bound': 2.0}
    """
    if name not in TRANSFORMERS:
        raise ValueError(f"transformer must be one of {sorted(TRANSFORMERS)}; got {name!r}")
    spec = TRANSFORMERS[name]
    kw = {fn_key: options[key] for key, fn_key in spec.options if key in options}
    return spec.num_params(**kw), functools.partial(spec.fn, **kw)
