r"""Numerical self-checks of transforms and flows (the code behind the property tests).

For a bijection :math:`f` with Jacobian :math:`J_f`, :func:`check_flow` measures, on a few points
and in float64,

* the round-trip errors :math:`\max|f^{-1}(f(x)) - x|` and :math:`\max|f(f^{-1}(y)) - y|`,
  computed *without* the cache slot (real numerical inverses);
* the log-det errors :math:`|\log|\det J_f(x)| - \text{reported}|` in both directions, against
  ``torch.autograd.functional.jacobian`` and ``slogdet`` (not finite differences).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from pyro.distributions.conditional import ConditionalTransform
from torch import Tensor
from torch.distributions import Transform

from ..transforms.base import FlowTransform

__all__ = ["CheckReport", "check_flow", "jacobian_log_det", "roundtrip_errors"]

Step = tuple[FlowTransform, "Tensor | None"]


def steps_of(obj, context: Tensor | None = None) -> list[Step]:
    """The ``(transform, context)`` pairs of a Flow, a transform, or a list of transforms."""
    from ..flows import Flow

    if isinstance(obj, Flow):
        parts: Sequence[Transform] = list(obj.transforms)
    elif isinstance(obj, (list, tuple)):
        parts = obj
    else:
        parts = [obj]
    steps = []
    for t in parts:
        if not isinstance(t, FlowTransform):
            raise TypeError(f"check_flow checks pyroflows transforms; got {type(t).__name__}")
        steps.append((t, context if isinstance(t, ConditionalTransform) or t.context_dim else None))
    return steps


def _forward(steps: list[Step], x: Tensor) -> tuple[Tensor, Tensor]:
    ld = 0
    for t, c in steps:
        x, d = t.forward_and_log_det(x, c)
        ld = ld + d
    return x, ld


def _inverse(steps: list[Step], y: Tensor) -> tuple[Tensor, Tensor]:
    ld = 0
    for t, c in reversed(steps):
        y, d = t.inverse_and_log_det(y, c)
        ld = ld + d
    return y, ld


def jacobian_log_det(fn: Callable[[Tensor], Tensor], x: Tensor, event_dims: int) -> Tensor:
    """``log|det J_fn|`` at each point of ``x`` (batch of events) with autograd, one point at a time.

    Args:
        fn: ``fn(v, i)`` maps one event ``v`` (the ``i``-th point of ``x``, flattened over the
            batch) to one event; ``i`` lets it pick that point's context.
        x: points, shape ``batch + event``.
        event_dims: number of rightmost dimensions of ``x`` that form one event.

    Returns:
        ``log|det J|`` per point, shape ``batch``; the reference :func:`check_flow` compares a
        transform's reported log-det with.

    Example:
        >>> scale = torch.tensor([2.0, 0.5, 3.0])
        >>> jacobian_log_det(lambda v, i: scale * v, torch.randn(2, 3), event_dims=1)
        tensor([1.0986, 1.0986])
        >>> float(scale.prod().log())   # log 3
        1.0986...
    """
    batch = x.shape[: x.dim() - event_dims]
    flat = x.reshape(-1, *x.shape[x.dim() - event_dims :])
    out = []
    for i in range(flat.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v, i=i: fn(v, i).reshape(-1), flat[i])
        jac = jac.reshape(jac.shape[0], -1)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out).reshape(batch)


def roundtrip_errors(steps: list[Step], x: Tensor) -> tuple[float, float]:
    """Max abs error of ``inverse(forward(x))`` and ``forward(inverse(y))`` with ``y = forward(x)``.

    Args:
        steps: the layers as ``(transform, context)`` pairs, applied in order (context ``None``
            for an unconditional layer), e.g. ``[(t, None) for t in flow.transforms]``.
        x: base-side points.

    The passes call ``forward_and_log_det`` / ``inverse_and_log_det`` directly, so the cache
    slot plays no part: the errors are those of the numerical inverse.

    Example:
        >>> from pyroflows.transforms import PlanarTransform
        >>> _ = torch.manual_seed(0)
        >>> t = PlanarTransform(2).double()
        >>> errs = roundtrip_errors([(t, None)], torch.randn(5, 2, dtype=torch.float64))
        >>> [e < 1e-10 for e in errs]
        [True, True]
    """
    with torch.no_grad():
        y, _ = _forward(steps, x)
        x2, _ = _inverse(steps, y)
        y2, _ = _forward(steps, x2)
    return float((x2 - x).abs().max()), float((y2 - y).abs().max())


@dataclass
class CheckReport:
    """What :func:`check_flow` measured; ``passed`` compares the errors with ``tolerance``.

    Attributes:
        roundtrip_error: max abs error of ``x -> y -> x``.
        inverse_roundtrip_error: max abs error of ``y -> x -> y``.
        logdet_error: max abs error of the forward log-det against autograd.
        inverse_logdet_error: the same for the inverse log-det.
        tolerance: the largest error that passes.
        num_points: points checked.
        layers: ``(name, round-trip error, log-det error)`` per layer (``per_layer=True``).

    Example:
        >>> import pyroflows as pf
        >>> report = pf.check_flow(pf.Glow(2, num_layers=1, hidden_dims=(8,)), per_layer=True)
        >>> report.passed, [name for name, _, _ in report.layers]
        (True, ['0:Coupling', '1:LULinear', '2:ActNorm'])
        >>> bad = CheckReport(0.0, 0.0, 2e-3, 0.0, tolerance=1e-5, num_points=4)
        >>> print(bad)
        check_flow on 4 points (float64): FAILED
          round trip  x -> y -> x : 0.00e+00
          round trip  y -> x -> y : 0.00e+00
          log-det vs autograd (forward) : 2.00e-03
          log-det vs autograd (inverse) : 0.00e+00
    """

    roundtrip_error: float
    inverse_roundtrip_error: float
    logdet_error: float
    inverse_logdet_error: float
    tolerance: float
    num_points: int
    layers: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        errs = (
            self.roundtrip_error,
            self.inverse_roundtrip_error,
            self.logdet_error,
            self.inverse_logdet_error,
        )
        return all(e <= self.tolerance for e in errs)

    def __str__(self) -> str:
        lines = [
            f"check_flow on {self.num_points} points (float64): {'PASSED' if self.passed else 'FAILED'}",
            f"  round trip  x -> y -> x : {self.roundtrip_error:.2e}",
            f"  round trip  y -> x -> y : {self.inverse_roundtrip_error:.2e}",
            f"  log-det vs autograd (forward) : {self.logdet_error:.2e}",
            f"  log-det vs autograd (inverse) : {self.inverse_logdet_error:.2e}",
        ]
        lines += [
            f"  layer {name}: round trip {rt:.2e}, log-det {ld:.2e}" for name, rt, ld in self.layers
        ]
        return "\n".join(lines)


def check_flow(
    flow,
    x: Tensor | None = None,
    *,
    context: Tensor | None = None,
    num_points: int = 4,
    tolerance: float = 1e-5,
    per_layer: bool = False,
) -> CheckReport:
    """Check a flow (or transform) for invertibility and correct log-determinants.

    Works on a float64 copy in eval mode, so the flow itself is left untouched.

    Args:
        flow: a :class:`~pyroflows.Flow`, a pyroflows transform, or a list of transforms.
        x: base-side points to check at (default: ``num_points`` standard normal draws).
        context: context for conditional flows (one row per point, or broadcastable).
        num_points: number of random points when ``x`` is not given.
        tolerance: largest error that counts as passed.
        per_layer: also report each layer's round-trip and log-det errors.

    Example:
        >>> import pyroflows as pf
        >>> report = pf.check_flow(pf.RealNVP(3, num_layers=2, hidden_dims=(8,)))
        >>> report.passed
        True
    """
    context_dim = max((t.context_dim for t, _ in steps_of(flow)), default=0)
    if context_dim and context is None:
        raise ValueError(
            f"check_flow: this flow is conditional (context_dim={context_dim}); pass "
            f"context=..., one row per point (shape (num_points, {context_dim})) or one "
            f"vector for all (shape ({context_dim},))."
        )
    if context is not None:
        if not context_dim:
            raise ValueError("check_flow: this flow is unconditional; do not pass a context.")
        if not isinstance(context, Tensor) or context.shape[-1:] != (context_dim,):
            got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(
                f"check_flow: expected a context of shape (..., {context_dim}); got {got}."
            )
    model = copy.deepcopy(flow).double().eval()
    if isinstance(model, FlowTransform):
        model.clear_cache()
    steps = steps_of(model, None if context is None else context.double())
    event_shape = steps[0][0].event_shape
    if x is None:
        x = torch.randn(num_points, *event_shape, dtype=torch.float64)
    x = x.double()
    n = len(event_shape)
    ctx = None if context is None else context.double()

    def step_ctx(i: int) -> Tensor | None:
        if ctx is None:
            return None
        return ctx.reshape(-1, ctx.shape[-1])[i % ctx.reshape(-1, ctx.shape[-1]).shape[0]][None]

    def fwd(v: Tensor, i: int, ss: list[Step]) -> Tensor:
        s = [(t, step_ctx(i) if c is not None else None) for t, c in ss]
        return _forward(s, v[None])[0][0]

    def inv(v: Tensor, i: int, ss: list[Step]) -> Tensor:
        s = [(t, step_ctx(i) if c is not None else None) for t, c in ss]
        return _inverse(s, v[None])[0][0]

    def errors(ss: list[Step], x0: Tensor) -> tuple[float, float, float, float]:
        rt, irt = roundtrip_errors(ss, x0)
        with torch.no_grad():
            y, ld = _forward(ss, x0)
            _, ild = _inverse(ss, y)
        ref = jacobian_log_det(lambda v, i: fwd(v, i, ss), x0, n)
        iref = jacobian_log_det(lambda v, i: inv(v, i, ss), y, len(ss[-1][0].event_shape))
        return rt, irt, float((ld - ref).abs().max()), float((ild + iref).abs().max())

    rt, irt, lde, ilde = errors(steps, x)
    layers = []
    if per_layer:
        v = x
        for k, s in enumerate(steps):
            e = errors([s], v)
            layers.append((f"{k}:{s[0]._layer_name()}", max(e[0], e[1]), max(e[2], e[3])))
            with torch.no_grad():
                v = _forward([s], v)[0]
    return CheckReport(
        rt, irt, lde, ilde, tolerance, int(x.reshape(-1, *event_shape).shape[0]), layers
    )
