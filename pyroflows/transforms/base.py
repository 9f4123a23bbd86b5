"""What every pyroflows transform shares: direction, the one cache slot, validation.

Direction convention (Pyro's): ``_call`` maps base -> data (the sampling direction) and
``_inverse`` maps data -> base (the density direction). Subclasses implement both directions
as methods that return the output *and* the log-determinant together:

* ``forward_and_log_det(x, context)`` -> ``(y, log|det dy/dx|)``   (base -> data)
* ``inverse_and_log_det(y, context)`` -> ``(x, log|det dy/dx|)``   (data -> base)

Both return the log-determinant of the *forward* map evaluated at ``x``, so
``TransformedDistribution.log_prob`` subtracts it unchanged whichever direction computed it.

The cache slot
--------------
Each transform keeps exactly one slot, ``(x, y, log_det, key, context, versions)``, written by whichever
direction ran last. ``_call(x)`` returns the cached ``y`` when ``x`` is the cached input (and the reverse for
``_inverse``), so scoring a sample of the same flow never inverts numerically. The key holds the
parameters' and buffers' version counters and the grad mode, and the context must be the very same
tensor, so an optimiser step, a new context or a ``.double()`` invalidates it. ``log_abs_det_jacobian`` *consumes* the slot: the log-det is handed
out once, so a graph freed by ``backward()`` is never reused ("backward through the graph a second
time" cannot happen, unlike Pyro's own flows).
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
from collections.abc import Iterator

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor
from torch.distributions import Transform, constraints
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)

__all__ = [
    "ConditionalFlowTransform",
    "ConditionedTransform",
    "FlowTransform",
    "NonFiniteError",
    "is_validation_enabled",
    "nonfinite_rows",
    "validation",
]

_VALIDATE = True


class NonFiniteError(FloatingPointError):
    """A transform produced NaN or Inf; the message names the layer and the direction."""


def is_validation_enabled() -> bool:
    """Whether transforms check shapes, dtypes and finiteness (on by default)."""
    return _VALIDATE


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Context manager that switches input/output checks of every transform on or off.

    Example:
        >>> with validation(False):
        ...     is_validation_enabled()
        False
        >>> is_validation_enabled()
        True
    """
    global _VALIDATE
    old, _VALIDATE = _VALIDATE, bool(enabled)
    try:
        yield
    finally:
        _VALIDATE = old


def nonfinite_rows(v: Tensor, event_dims: int) -> Tensor:
    """Flat indices of the events (rows) of ``v`` that hold NaN or Inf.

    Example:
        >>> nonfinite_rows(torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [3.0, 4.0]]), 1)
        tensor([1])
    """
    events = v.reshape(-1, *v.shape[v.dim() - event_dims :]).flatten(1)
    return torch.nonzero(~torch.isfinite(events).all(1)).reshape(-1)


def _event_text(shape: torch.Size) -> str:
    return "(..., " + ", ".join(map(str, shape)) + ")"


@functools.cache
def _constraint(event_dim: int) -> constraints.Constraint:
    return constraints.independent(constraints.real, event_dim)


# A token replaced whenever any module registers (or replaces) a parameter, buffer or submodule.
# Each transform caches the list of its tensors with the token it saw, so the slot key (their
# version counters) costs a tuple of attribute reads instead of a walk of the module tree.
_STRUCTURE: list[object] = [object()]
_VERSION = operator.attrgetter("_version")


def _structure_changed(*_: object) -> None:
    _STRUCTURE[0] = object()


register_module_parameter_registration_hook(_structure_changed)
register_module_buffer_registration_hook(_structure_changed)
register_module_module_registration_hook(_structure_changed)


class FlowTransform(TransformModule):
    """Base class of every pyroflows bijection (a Pyro ``TransformModule``).

    Args:
        event_shape: shape of one input event, e.g. ``(D,)`` or ``(C, H, W)``.
        context_dim: size of the context vector for conditional transforms (0: none).

    ``event_shape`` is the base-side shape (the input of ``_call``); ``output_shape`` is the
    data-side shape (the input of ``_inverse``). They differ only for shape-changing transforms
    (e.g. ``Squeeze``), which set ``output_shape`` and implement ``forward_shape`` and
    ``inverse_shape``; the input check uses the shape of the direction being run.
    """

    bijective = True

    def __init__(self, event_shape: tuple[int, ...], *, context_dim: int = 0) -> None:
        super().__init__(cache_size=0)
        self.event_shape = torch.Size(event_shape)
        self.output_shape = self.event_shape
        self.context_dim = int(context_dim)
        self._slot: tuple | None = None

    # ---- what subclasses implement -------------------------------------------------------
    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: returns ``(y, log|det dy/dx|)``."""
        raise NotImplementedError

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: returns ``(x, log|det dy/dx|)`` (the forward log-det at ``x``)."""
        raise NotImplementedError

    # ---- torch.distributions.Transform interface -----------------------------------------
    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return _constraint(len(self.event_shape))

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return _constraint(len(self.event_shape))

    def _call(self, x: Tensor) -> Tensor:
        return self.apply_forward(x, None)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self.apply_inverse(y, None)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.log_det_for(x, y, None)

    # ---- the slot ------------------------------------------------------------------------
    def _state_tensors(self) -> tuple[tuple[Tensor, ...], int]:
        """``(parameters + buffers, number of parameters)``, cached until modules change.

        The cache is dropped by ``_apply`` (``.to()``, ``.double()``) and whenever any module
        registers or replaces a parameter, buffer or submodule (torch's global registration
        hooks); deleting one with ``del`` is not seen, so call :meth:`clear_cache` after that.
        """
        cached = self.__dict__.get("_tensors_cache")
        token = _STRUCTURE[0]
        if cached is None or cached[0] is not token:
            params = tuple(self.parameters())
            cached = (token, params + tuple(self.buffers()), len(params))
            self.__dict__["_tensors_cache"] = cached
        return cached[1], cached[2]

    def _key(self, context: Tensor | None) -> tuple:
        return (tuple(map(_VERSION, self._state_tensors()[0])), torch.is_grad_enabled())

    def clear_cache(self) -> None:
        """Empty the cache slot."""
        self._slot = None
        self.__dict__.pop("_tensors_cache", None)

    def _hit(self, x: Tensor | None, y: Tensor | None, context: Tensor | None) -> tuple | None:
        """The slot if it holds this very ``x`` and/or ``y`` (unmodified) and is still valid."""
        slot = self._slot
        if (
            slot is None
            or (x is not None and slot[0] is not x)
            or (y is not None and slot[1] is not y)
            or slot[4] is not context
            or slot[5] != (slot[0]._version, slot[1]._version)  # modified in place since
            or slot[3] != self._key(context)
        ):
            return None
        return slot

    def _store(self, x: Tensor, y: Tensor, ld: Tensor, context: Tensor | None) -> None:
        self._slot = (x, y, ld, self._key(context), context, (x._version, y._version))

    def apply_forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Forward pass through the slot: returns ``(y, log_det)`` and caches them."""
        slot = self._hit(x, None, context)
        if slot is not None:
            return slot[1], slot[2]
        self._check_input(x, context, "forward")
        y, ld = self.forward_and_log_det(x, context)
        self._check_output(x, y, ld, "forward")
        self._store(x, y, ld, context)
        return y, ld

    def apply_inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Inverse pass through the slot: returns ``(x, log_det)`` and caches them."""
        slot = self._hit(None, y, context)
        if slot is not None:
            return slot[0], slot[2]
        self._check_input(y, context, "inverse")
        x, ld = self.inverse_and_log_det(y, context)
        self._check_output(y, x, ld, "inverse")
        self._store(x, y, ld, context)
        return x, ld

    def log_det_for(self, x: Tensor, y: Tensor, context: Tensor | None) -> Tensor:
        """Log-det for a pair ``(x, y)``: taken (once) from the slot, else recomputed."""
        slot = self._hit(x, y, context)
        self._slot = None
        if slot is not None:
            return slot[2]
        ld = self.forward_and_log_det(x, context)[1]
        return ld

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), .cuda() invalidate the slot
        self._slot = None
        self.__dict__.pop("_tensors_cache", None)
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict:  # deepcopy/pickle: the slot may hold graph tensors
        state = super().__getstate__()
        state["_slot"] = None
        state.pop("_tensors_cache", None)
        return state

    # ---- validation ----------------------------------------------------------------------
    def _layer_name(self) -> str:
        return type(self).__name__

    def _reference(self) -> Tensor | None:
        tensors, n_params = self._state_tensors()
        return tensors[0] if n_params else None

    def _check_input(self, v: Tensor, context: Tensor | None, direction: str) -> None:
        if not _VALIDATE:
            return
        name = self._layer_name()
        if not isinstance(v, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor; got {type(v).__name__}.")
        shape = self.output_shape if direction == "inverse" else self.event_shape
        n = len(shape)
        if v.dim() < n or v.shape[v.dim() - n :] != shape:
            want = _event_text(shape)
            raise ValueError(
                f"{name}: expected input shape {want}; got {tuple(v.shape)}. "
                "The trailing dimensions must equal the flow's event shape."
            )
        ref = self._reference()
        if ref is not None:
            if v.dtype != ref.dtype:
                raise TypeError(
                    f"{name}: got {v.dtype} input for a {ref.dtype} transform; convert one of "
                    f"them, e.g. x.to({ref.dtype}) or flow.to({v.dtype})."
                )
            if v.device != ref.device:
                raise ValueError(
                    f"{name}: input is on {v.device} but the transform is on {ref.device}; "
                    f"move one of them, e.g. x.to('{ref.device}')."
                )
        if self.context_dim:
            if context is None:
                raise ValueError(
                    f"{name}: this transform is conditional (context_dim={self.context_dim}); "
                    "pass a context, e.g. flow(context) or transform.condition(context)."
                )
            if context.shape[-1:] != (self.context_dim,):
                raise ValueError(
                    f"{name}: expected context shape (..., {self.context_dim}); "
                    f"got {tuple(context.shape)}."
                )
            if ref is not None and (context.dtype != ref.dtype or context.device != ref.device):
                raise TypeError(
                    f"{name}: context is {context.dtype} on {context.device} but the transform "
                    f"is {ref.dtype} on {ref.device}; convert the context first."
                )

    def _check_output(self, inp: Tensor, out: Tensor, ld: Tensor, direction: str) -> None:
        if not _VALIDATE:
            return
        # Fast path: one reduction per tensor and a single host sync. NaN/Inf anywhere makes
        # the sum non-finite; a sum that merely overflows falls through to the exact check.
        if math.isfinite(float(out.detach().sum() + ld.detach().sum())):
            return
        if bool(torch.isfinite(out).all()) and bool(torch.isfinite(ld).all()):
            return
        name = self._layer_name()
        shape = self.output_shape if direction == "inverse" else self.event_shape
        rows = nonfinite_rows(inp, len(shape))[:5].tolist()
        if rows:
            raise NonFiniteError(
                f"{name} ({direction}): the input contains NaN or Inf (first bad rows {rows}); "
                "remove or impute those rows before calling the flow."
            )
        raise NonFiniteError(
            f"{name} ({direction}): produced NaN or Inf from a finite input. The parameters may "
            "have diverged (lower the learning rate, clip gradients) or the input lies far outside "
            "the training data (an exploding inverse); see pyroflows.check_flow."
        )


class ConditionedTransform(Transform):
    """A conditional transform with its context fixed (what ``condition(context)`` returns).

    It shares the parent's parameters and cache slot; the context is part of the slot's key.
    """

    bijective = True

    def __init__(self, parent: FlowTransform, context: Tensor) -> None:
        super().__init__(cache_size=0)
        self.parent = parent
        self.context = context

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.parent.domain

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.parent.codomain

    def _call(self, x: Tensor) -> Tensor:
        return self.parent.apply_forward(x, self.context)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self.parent.apply_inverse(y, self.context)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.parent.log_det_for(x, y, self.context)

    def forward_shape(self, shape):
        return self.parent.forward_shape(shape)

    def inverse_shape(self, shape):
        return self.parent.inverse_shape(shape)

    def __repr__(self) -> str:
        return f"Conditioned({self.parent._layer_name()})"


class ConditionalFlowTransform(ConditionalTransformModule):
    """Mixin that turns a :class:`FlowTransform` subclass into a Pyro conditional transform.

    Use it first in the bases: ``class ConditionalX(ConditionalFlowTransform, X)``; the math of
    ``X`` is reused unchanged and receives the context. ``condition(context)`` returns a
    :class:`ConditionedTransform`.
    """

    def condition(self, context: Tensor) -> ConditionedTransform:
        if not isinstance(context, Tensor):
            raise TypeError(f"context must be a torch.Tensor; got {type(context).__name__}.")
        return ConditionedTransform(self, context)  # type: ignore[arg-type]
