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
Each transform keeps exactly one slot, a :class:`Slot` ``(x, y, log_det, context, key,
versions)``, written by whichever direction ran last. ``_call(x)`` returns the cached ``y`` when
``x`` is the cached input (and the reverse for ``_inverse``), so scoring a sample of the same flow
never inverts numerically. A hit needs the very same ``x``/``y`` and context tensors, unmodified
since (their in-place version counters, so ``c.fill_(5.0)`` between ``rsample`` and ``log_prob``
recomputes), and the same :meth:`FlowTransform._key`: the identity, version counter and storage
of every parameter and buffer, and the grad mode. So an optimiser step, ``p.data = ...``
(``torch.nn.utils.vector_to_parameters``), a new or edited context, a replaced submodule or a
``.double()`` all invalidate it. ``log_abs_det_jacobian`` *consumes* the slot: the log-det is
handed out once, so a graph freed by ``backward()`` is never reused ("backward through the graph
a second time" cannot happen, unlike Pyro's own flows).

One kind of edit cannot be seen: an in-place change made through ``.data`` (``p.data.mul_(2)``,
``x.data.add_(1)``), which bypasses torch's version counters. After such an edit call
``clear_cache()`` on the transform (or on the :class:`~pyroflows.Flow`), or make the edit under
``torch.no_grad()`` without ``.data``, which is seen.

Validation
----------
:func:`validation` switches the checks for the current thread only: a ``validation(False)`` block
in one thread never turns them off in another, and each block restores what it found.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import threading
from collections.abc import Iterator
from typing import NamedTuple

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform, constraints

__all__ = [
    "ConditionalFlowTransform",
    "ConditionedTransform",
    "FlowTransform",
    "NonFiniteError",
    "is_validation_enabled",
    "nonfinite_rows",
    "validation",
]


class _Validation(threading.local):
    """Per-thread switch of the checks (a new thread starts with them on)."""

    enabled = True


_VALIDATION = _Validation()


class NonFiniteError(FloatingPointError):
    """A transform produced NaN or Inf; the message names the layer and the direction.

    Raised by every transform while validation is on (:func:`validation`), for a non-finite
    input or context (naming the first bad rows) and for a non-finite output of a finite input.

    Example:
        >>> from pyroflows.transforms import ElementwiseAffine
        >>> ElementwiseAffine(2).inv(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
        Traceback (most recent call last):
            ...
        pyroflows.transforms.base.NonFiniteError: ElementwiseAffine (inverse): the input contains NaN or Inf (first bad rows [1]); ...
    """


def is_validation_enabled() -> bool:
    """Whether transforms check shapes, dtypes and finiteness in this thread (on by default).

    Example:
        >>> is_validation_enabled()
        True
        >>> with validation(False):
        ...     is_validation_enabled()
        False
    """
    return _VALIDATION.enabled


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Context manager that switches input/output checks of every transform on or off.

    The switch is thread-local: it applies to the calling thread only, and the block restores
    that thread's previous setting on exit (blocks nest).

    Example:
        >>> with validation(False):
        ...     is_validation_enabled()
        False
        >>> is_validation_enabled()
        True
    """
    old, _VALIDATION.enabled = _VALIDATION.enabled, bool(enabled)
    try:
        yield
    finally:
        _VALIDATION.enabled = old


def nonfinite_rows(v: Tensor, event_dims: int) -> Tensor:
    """Flat indices of the events (rows) of ``v`` that hold NaN or Inf.

    Example:
        >>> nonfinite_rows(torch.tensor([[0.0, 1.0], [float("nan"), 2.0], [3.0, 4.0]]), 1)
        tensor([1])
    """
    events = v.reshape(-1, *v.shape[v.dim() - event_dims :]).flatten(1)
    return torch.nonzero(~torch.isfinite(events).all(1)).reshape(-1)


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether two batch shapes broadcast (torch's rule), without building a tensor."""
    return all(i == j or i == 1 or j == 1 for i, j in zip(reversed(a), reversed(b), strict=False))


def _event_text(shape: torch.Size) -> str:
    return "(..., " + ", ".join(map(str, shape)) + ")"


@functools.cache
def _constraint(event_dim: int) -> constraints.Constraint:
    return constraints.independent(constraints.real, event_dim)


_VERSION = operator.attrgetter("_version")
_DATA_PTR = Tensor.data_ptr


def _storages(tensors: list[Tensor]) -> tuple[int, ...] | None:
    """Data pointers of ``tensors`` (``p.data = ...`` changes them, not the version counter);
    ``None`` where some tensor has no storage (``torch.func`` wrappers), so the key relies on
    identities and versions alone there."""
    try:
        return tuple(map(_DATA_PTR, tensors))
    except RuntimeError:
        return None


def _tree_dicts(module: nn.Module, out: list[dict]) -> list[dict]:
    """The non-empty ``_parameters``, ``_buffers`` and ``_modules`` dicts of ``module``'s tree."""
    out += [d for d in (module._parameters, module._buffers, module._modules) if d]
    for child in module._modules.values():
        if child is not None:
            _tree_dicts(child, out)
    return out


class _Tree:
    """A transform's parameters and buffers, with the registration entries they came from.

    Compared by identity (the default): a slot key holds the tree it was computed on, and a
    change of structure builds a new tree, so the old key no longer matches.
    """

    __slots__ = ("dicts", "members", "reference", "tensors")

    def __init__(self, module: nn.Module) -> None:
        self.dicts = _tree_dicts(module, [])  # the non-empty registration dicts of the tree
        self.members = [v for d in self.dicts for v in d.values()]  # what they held, in order
        self.tensors = [v for v in self.members if isinstance(v, Tensor)]
        # the first parameter: the transform's dtype and device
        self.reference = next((t for t in self.tensors if isinstance(t, nn.Parameter)), None)

    def unchanged(self) -> bool:
        """Whether the dicts still hold exactly the same objects (one flat read)."""
        now = [v for d in self.dicts for v in d.values()]
        return len(now) == len(self.members) and all(map(operator.is_, now, self.members))


def _version_of(t: Tensor | None) -> int:
    return -1 if t is None else t._version


class Slot(NamedTuple):
    """The one cache slot of a transform: the latest pass and what it depended on.

    Attributes:
        x: base-side tensor of the pass.
        y: data-side tensor of the pass.
        log_det: ``log|det dy/dx|`` at ``x`` (handed out once).
        context: the context tensor of the pass (``None`` if unconditional).
        key: :meth:`FlowTransform._key` when stored (parameters, buffers, grad mode).
        versions: in-place version counters of ``x``, ``y`` and ``context`` when stored.
    """

    x: Tensor
    y: Tensor
    log_det: Tensor
    context: Tensor | None
    key: tuple
    versions: tuple[int, int, int]


class FlowTransform(TransformModule):
    """Base class of every pyroflows bijection (a Pyro ``TransformModule``).

    Args:
        event_shape: shape of one input event, e.g. ``(D,)`` or ``(C, H, W)``.
        context_dim: size of the context vector for conditional transforms (0: none).

    ``event_shape`` is the base-side shape (the input of ``_call``); ``output_shape`` is the
    data-side shape (the input of ``_inverse``). They differ only for shape-changing transforms
    (e.g. ``Squeeze``), which set ``output_shape`` and implement ``forward_shape`` and
    ``inverse_shape``; the input check uses the shape of the direction being run.

    A subclass implements :meth:`forward_and_log_det` and :meth:`inverse_and_log_det`; the
    base class adds the checks, the cache slot and Pyro's ``Transform`` interface.

    Example:
        >>> class Shift(FlowTransform):
        ...     def __init__(self, dim, *, context_dim=0):
        ...         super().__init__((dim,), context_dim=context_dim)
        ...         self.b = torch.nn.Parameter(torch.ones(dim))
        ...     def forward_and_log_det(self, x, context=None):
        ...         b = self.b if context is None else self.b + context
        ...         return x + b, x.new_zeros(x.shape[:-1])
        ...     def inverse_and_log_det(self, y, context=None):
        ...         b = self.b if context is None else self.b + context
        ...         return y - b, y.new_zeros(y.shape[:-1])
        >>> t = Shift(2)
        >>> t(torch.zeros(2)), t.inv(torch.ones(2))
        (tensor([1., 1.], grad_fn=<...>), tensor([0., 0.], grad_fn=<...>))
        >>> t(torch.zeros(3))
        Traceback (most recent call last):
            ...
        ValueError: Shift: expected input shape (..., 2); got (3,). ...
    """

    bijective = True

    def __init__(self, event_shape: tuple[int, ...], *, context_dim: int = 0) -> None:
        super().__init__(cache_size=0)
        self.event_shape = torch.Size(event_shape)
        self.output_shape = self.event_shape
        self.context_dim = int(context_dim)
        self._slot: Slot | None = None

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
    def _tree(self) -> _Tree:
        """This transform's module tree, rebuilt when any registration entry below changed.

        No hook on torch: the tree keeps the registration dicts it was read from and the objects
        they held, and is reused only while they hold exactly the same ones, so a parameter,
        buffer or submodule replaced or deleted anywhere below, or added beside existing ones, is
        seen at the next pass.
        """
        tree = self.__dict__.get("_tree_cache")
        if tree is None or not tree.unchanged():
            tree = self.__dict__["_tree_cache"] = _Tree(self)
        return tree

    def _state_tensors(self) -> list[Tensor]:
        """Every parameter and buffer of this transform's module tree."""
        return self._tree().tensors

    def _key(self, context: Tensor | None) -> tuple:
        """What a cached pass depends on besides its inputs: the module tree (which parameters,
        buffers and submodules), the version counter and storage of every parameter and buffer,
        and the grad mode. Subclasses with settings that change the map (e.g. ODE solver
        tolerances) extend it."""
        tree = self._tree()
        return (
            tree,
            tuple(map(_VERSION, tree.tensors)),
            _storages(tree.tensors),
            torch.is_grad_enabled(),
        )

    def clear_cache(self) -> None:
        """Empty the cache slot.

        Needed after an in-place edit through ``.data`` (``p.data.mul_(2)``,
        ``x.data.add_(1)``), which torch's version counters do not record; optimiser steps,
        ``p.data = ...``, replaced parameters or submodules and edited inputs or contexts are
        detected without it.

        Example:
            >>> from pyroflows.transforms import ElementwiseAffine
            >>> t = ElementwiseAffine(1)
            >>> x = torch.ones(1)
            >>> t(x)
            tensor([1.], grad_fn=<...>)
            >>> _ = t.shift.data.add_(1.0)   # invisible to the slot
            >>> t.clear_cache(); t(x)
            tensor([2.], grad_fn=<...>)
        """
        self._slot = None
        self.__dict__.pop("_tree_cache", None)

    def _hit(
        self, x: Tensor | None, y: Tensor | None, context: Tensor | None, key: tuple
    ) -> Slot | None:
        """The slot if it holds this very ``x`` and/or ``y`` (unmodified) and ``key`` still holds."""
        slot = self._slot
        if (
            slot is None
            or (x is not None and slot.x is not x)
            or (y is not None and slot.y is not y)
            or slot.context is not context
            or slot.versions != (slot.x._version, slot.y._version, _version_of(context))
            or slot.key != key
        ):
            return None
        return slot

    def _store(self, x: Tensor, y: Tensor, ld: Tensor, context: Tensor | None, key: tuple) -> None:
        versions = (x._version, y._version, _version_of(context))
        self._slot = Slot(x, y, ld, context, key, versions)

    # The key is taken before the pass: a pass that changes the state (ActNorm's data-dependent
    # initialisation) leaves a slot that no longer matches, so it is recomputed, never reused.
    def apply_forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Forward pass through the slot: returns ``(y, log_det)`` and caches them."""
        key = self._key(context)
        slot = self._hit(x, None, context, key)
        if slot is not None:
            return slot.y, slot.log_det
        self._check_input(x, context, "forward")
        y, ld = self.forward_and_log_det(x, context)
        self._check_output(x, y, ld, "forward", context)
        self._store(x, y, ld, context, key)
        return y, ld

    def apply_inverse(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """Inverse pass through the slot: returns ``(x, log_det)`` and caches them."""
        key = self._key(context)
        slot = self._hit(None, y, context, key)
        if slot is not None:
            return slot.x, slot.log_det
        self._check_input(y, context, "inverse")
        x, ld = self.inverse_and_log_det(y, context)
        self._check_output(y, x, ld, "inverse", context)
        self._store(x, y, ld, context, key)
        return x, ld

    def log_det_for(self, x: Tensor, y: Tensor, context: Tensor | None) -> Tensor:
        """Log-det for a pair ``(x, y)``: taken (once) from the slot, else recomputed."""
        slot = self._hit(x, y, context, self._key(context)) if self._slot is not None else None
        self._slot = None
        if slot is not None:
            return slot.log_det
        ld = self.forward_and_log_det(x, context)[1]
        return ld

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), .cuda() invalidate the slot
        self._slot = None
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict:  # deepcopy/pickle: the slot may hold graph tensors
        state = super().__getstate__()
        state["_slot"] = None
        state.pop("_tree_cache", None)
        return state

    # ---- validation ----------------------------------------------------------------------
    def _layer_name(self) -> str:
        return type(self).__name__

    def _reference(self) -> Tensor | None:
        """The first parameter (its dtype and device are the transform's), if any, as of the
        last tree read (every pass reads it first, through :meth:`_key`)."""
        tree = self.__dict__.get("_tree_cache")
        return (tree if tree is not None else self._tree()).reference

    def _check_input(self, v: Tensor, context: Tensor | None, direction: str) -> None:
        if not _VALIDATION.enabled:
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
            if not v.is_floating_point():
                raise TypeError(
                    f"{name}: got {v.dtype} input; flows need floating-point data, convert it "
                    f"first, e.g. x.to({ref.dtype})."
                )
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
                    f"is {ref.dtype} on {ref.device}; convert the context first, e.g. "
                    f"context.to({ref.dtype})."
                )
            batch, cbatch = v.shape[: v.dim() - n], context.shape[:-1]
            if not _broadcastable(batch, cbatch):
                raise ValueError(
                    f"{name}: the input's batch shape {tuple(batch)} does not broadcast with the "
                    f"context's batch shape {tuple(cbatch)}; expected batch shapes that "
                    f"broadcast, e.g. one context row per input row (context shape "
                    f"{(*batch, self.context_dim)}) or one context of shape ({self.context_dim},)."
                )

    def _check_output(
        self,
        inp: Tensor,
        out: Tensor,
        ld: Tensor,
        direction: str,
        context: Tensor | None = None,
    ) -> None:
        if not _VALIDATION.enabled:
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
        if context is not None:
            rows = nonfinite_rows(context, 1)[:5].tolist()
            if rows:
                raise NonFiniteError(
                    f"{name} ({direction}): the context contains NaN or Inf (first bad rows "
                    f"{rows}); remove or impute those rows before calling the flow."
                )
        raise NonFiniteError(
            f"{name} ({direction}): produced NaN or Inf from a finite input"
            f"{' and context' if context is not None else ''}. The parameters may "
            "have diverged (lower the learning rate, clip gradients) or the input lies far outside "
            "the training data (an exploding inverse); see pyroflows.check_flow."
        )


class ConditionedTransform(Transform):
    """A conditional transform with its context fixed (what ``condition(context)`` returns).

    It shares the parent's parameters and cache slot; the context is part of the slot's key.

    Example:
        >>> from pyroflows.transforms import ConditionalCoupling
        >>> t = ConditionalCoupling(2, context_dim=3, hidden_dims=(8,))
        >>> c = torch.randn(3)
        >>> ct = t.condition(c)
        >>> type(ct).__name__, ct.parent is t, ct.context is c
        ('ConditionedTransform', True, True)
        >>> ct(torch.zeros(4, 2)).shape          # one context for the 4 points
        torch.Size([4, 2])
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

    Example:
        >>> class Shift(FlowTransform):         # y = x + b (+ context)
        ...     def __init__(self, dim, *, context_dim=0):
        ...         super().__init__((dim,), context_dim=context_dim)
        ...         self.b = torch.nn.Parameter(torch.ones(dim))
        ...     def forward_and_log_det(self, x, context=None):
        ...         b = self.b if context is None else self.b + context
        ...         return x + b, x.new_zeros(x.shape[:-1])
        ...     def inverse_and_log_det(self, y, context=None):
        ...         b = self.b if context is None else self.b + context
        ...         return y - b, y.new_zeros(y.shape[:-1])
        >>> class ConditionalShift(ConditionalFlowTransform, Shift):
        ...     pass
        >>> t = ConditionalShift(2, context_dim=2)
        >>> t.condition(torch.tensor([1.0, -1.0]))(torch.zeros(2))
        tensor([2., 0.], grad_fn=<...>)
    """

    def condition(self, context: Tensor) -> ConditionedTransform:
        if not isinstance(context, Tensor):
            raise TypeError(f"context must be a torch.Tensor; got {type(context).__name__}.")
        return ConditionedTransform(self, context)  # type: ignore[arg-type]
