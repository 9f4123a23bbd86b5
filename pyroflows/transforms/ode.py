r"""ODE machinery of continuous flows: solver settings, the augmented dynamics, the divergence.

The dynamics integrate, next to the state :math:`z`, the divergence :math:`\nabla \cdot f`
(exact: one backward pass per dimension; Hutchinson: :math:`\epsilon^\top (\partial f /
\partial z) \epsilon` with a probe fixed for the solve) and, on request, the RNODE integrands
:math:`\|f\|^2` and :math:`\|\partial f / \partial z\|_F^2` (exact, or
:math:`\|\epsilon^\top \partial f / \partial z\|^2` from the same vector-Jacobian product).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["ADAPTIVE_METHODS", "FIXED_GRID_METHODS", "Dynamics", "ODESolver", "SolverError"]

#: torchdiffeq methods with step-size control: they use :class:`ODESolver`'s ``rtol``/``atol``.
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
#: torchdiffeq methods on a fixed grid: they need :class:`ODESolver`'s ``step_size``.
FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams")


class SolverError(RuntimeError):
    """The ODE solver could not integrate the flow; the message says which setting to change.

    Example:
        >>> from pyroflows.transforms import ContinuousFlow
        >>> class BlowUp(nn.Module):   # dz/dt = z^2 from z = 1 blows up at t = 1
        ...     def forward(self, t, z, context=None):
        ...         return z * z
        >>> ContinuousFlow(1, vector_field=BlowUp(), t1=2.0)(torch.ones(1, 1))
        Traceback (most recent call last):
            ...
        pyroflows.transforms.ode.SolverError: ContinuousFlow: the adaptive ODE solver underflowed ...
    """


class _SolverFields(NamedTuple):
    method: str
    rtol: float
    atol: float
    step_size: float | None


class ODESolver(_SolverFields):
    """Settings of one ODE solve: immutable and validated, stored in model files as plain values.

    A continuous flow holds one for training and one for evaluation
    (``ContinuousFlow(..., solver=..., eval_solver=...)``); to change one, assign a new one
    (``transform.eval_solver = ODESolver("rk4", step_size=0.05)``, or a dict of its fields) or
    use :meth:`replace`. Tolerances below ``16 * eps`` of the state's dtype are raised to that
    floor, under which an adaptive step-size control cannot make progress (float32: 1.9e-6).

    Args:
        method: a torchdiffeq method; adaptive ones use ``rtol``/``atol``, fixed-grid ones
            (``"rk4"``, ``"euler"``, ...) use ``step_size``.
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        step_size: step of fixed-grid methods (required for them).

    Example:
        >>> ODESolver("rk4", step_size=0.1).odeint_kwargs(torch.float64)
        {'method': 'rk4', 'options': {'step_size': 0.1}}
        >>> ODESolver(rtol=1e-9).odeint_kwargs(torch.float32)["rtol"]
        1.9073...e-06
        >>> ODESolver.coerce({"method": "euler", "step_size": 0.25}).replace(step_size=0.5)
        ODESolver(method='euler', rtol=1e-05, atol=1e-05, step_size=0.5)
    """

    __slots__ = ()

    def __new__(
        cls,
        method: str = "dopri5",
        *,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        step_size: float | None = None,
    ) -> ODESolver:
        self = super().__new__(cls, method, rtol, atol, step_size)
        self.validate()
        return self

    def __getnewargs_ex__(self) -> tuple[tuple, dict]:  # copies and pickles re-validate
        return (self.method,), {"rtol": self.rtol, "atol": self.atol, "step_size": self.step_size}

    @classmethod
    def coerce(cls, value: Any, *, name: str = "solver") -> ODESolver:
        """An :class:`ODESolver` from itself, a dict of its fields, or the list of its four
        values that a model file stores (:func:`pyroflows.save` writes it as a JSON list).

        Raises:
            TypeError: for anything else, or a dict with unknown keys.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(cls._fields))
            if unknown:
                raise TypeError(
                    f"{name} got unknown solver setting(s) {unknown}; the settings are "
                    f"{list(cls._fields)}."
                )
            method = value.get("method", "dopri5")
            return cls(method, **{k: v for k, v in value.items() if k != "method"})
        if isinstance(value, (tuple, list)) and len(value) == len(cls._fields):
            method, rtol, atol, step_size = value
            return cls(method, rtol=rtol, atol=atol, step_size=step_size)
        raise TypeError(
            f"{name} must be an ODESolver, e.g. ODESolver('rk4', step_size=0.05), or a dict of "
            f"its settings, e.g. {{'rtol': 1e-4, 'atol': 1e-4}}; got {type(value).__name__}."
        )

    def replace(self, **changes: Any) -> ODESolver:
        """A validated copy with ``changes`` applied (e.g. ``solver.replace(rtol=1e-6)``)."""
        return type(self).coerce({**self._asdict(), **changes})

    def _replace(self, **changes: Any) -> ODESolver:  # the NamedTuple spelling validates too
        return self.replace(**changes)

    def validate(self) -> None:
        """Raise ``ValueError`` for an unknown method or missing/invalid step settings."""
        if self.method in FIXED_GRID_METHODS:
            if self.step_size is None or not self.step_size > 0:
                raise ValueError(
                    f"the fixed-grid method {self.method!r} needs a positive step_size, "
                    f"e.g. ODESolver({self.method!r}, step_size=0.05); got {self.step_size!r}."
                )
        elif self.method in ADAPTIVE_METHODS:
            if not (self.rtol > 0 and self.atol > 0):
                raise ValueError(
                    f"rtol and atol must be positive; got rtol={self.rtol}, atol={self.atol}."
                )
        else:
            raise ValueError(
                f"unknown ODE method {self.method!r}; use an adaptive one {ADAPTIVE_METHODS} "
                f"or a fixed-grid one {FIXED_GRID_METHODS} with step_size."
            )

    def odeint_kwargs(self, dtype: torch.dtype) -> dict:
        """Keyword arguments for ``torchdiffeq.odeint`` on a state of ``dtype``."""
        if self.method in FIXED_GRID_METHODS:
            return {"method": self.method, "options": {"step_size": float(self.step_size)}}
        floor = 16 * torch.finfo(dtype).eps
        return {
            "method": self.method,
            "rtol": max(float(self.rtol), floor),
            "atol": max(float(self.atol), floor),
        }


def upgrade_solver_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options of a model file written before solver objects: ``method``/``rtol``/``atol``/
    ``step_size`` and ``eval_*`` become ``solver``/``eval_solver`` dicts (with a FutureWarning);
    other options pass through. Used by :class:`~pyroflows.CNF`, so old files still load.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     upgrade_solver_options({"rtol": 1e-4, "eval_rtol": 1e-6, "regularize": True})
        {'regularize': True, 'solver': {'rtol': 0.0001}, 'eval_solver': {'rtol': 1e-06}}
    """
    options = dict(options)
    fields = ODESolver._fields
    train = {k: options.pop(k) for k in fields if k in options}
    evals = {k: options.pop(f"eval_{k}") for k in fields if f"eval_{k}" in options}
    evals = {k: v for k, v in evals.items() if v is not None}  # None meant "the training value"
    if not train and not evals:
        return options
    if "solver" in options or "eval_solver" in options:
        raise TypeError(
            "pass the solver settings as solver=ODESolver(...) / eval_solver=ODESolver(...) "
            f"only, not also as {sorted(train) + [f'eval_{k}' for k in evals]}."
        )
    warnings.warn(
        f"the solver keywords {sorted(train) + [f'eval_{k}' for k in evals]} are replaced by "
        "solver= and eval_solver= (an ODESolver or a dict of its settings, e.g. "
        "solver={'rtol': 1e-5, 'atol': 1e-5}); save the model again to update its file.",
        FutureWarning,
        stacklevel=3,
    )
    if train:
        options["solver"] = train
    if evals:
        options["eval_solver"] = {**train, **evals}
    return options


def _divergence(
    f: Tensor, z: Tensor, probe: Tensor | None, create_graph: bool, frobenius: bool
) -> tuple[Tensor, Tensor | None]:
    """Divergence of ``f`` w.r.t. ``z`` (rows independent) and optionally ``||df/dz||_F^2``."""
    if probe is None:  # exact: one backward pass per output dimension
        rows = []
        for i in range(f.shape[-1]):
            (g,) = torch.autograd.grad(
                f[:, i].sum(), z, create_graph=create_graph, retain_graph=True, allow_unused=True
            )
            rows.append(torch.zeros_like(z) if g is None else g)
        jac = torch.stack(rows, dim=-2)
        div = jac.diagonal(dim1=-2, dim2=-1).sum(-1)
        return div, jac.pow(2).sum((-2, -1)) if frobenius else None
    (vjp,) = torch.autograd.grad(
        (f * probe).sum(), z, create_graph=create_graph, retain_graph=True, allow_unused=True
    )
    if vjp is None:
        vjp = torch.zeros_like(z)
    return (vjp * probe).sum(-1), vjp.pow(2).sum(-1) if frobenius else None


class Dynamics:
    """The augmented ODE right-hand side ``(f, div f[, ||f||^2, ||J||_F^2])``; counts calls.

    Args:
        field: the vector field ``(t, z, context) -> dz/dt``.
        context: the context, one row per state row (or ``None``).
        probe: Hutchinson probe, one row per state row (``None``: exact divergence).
        regularize: also return the RNODE integrands.

    Example:
        >>> from pyroflows.nn import VectorField
        >>> dynamics = Dynamics(VectorField(2, (8,)), None, None, regularize=True)
        >>> state = (torch.randn(4, 2), torch.zeros(4), torch.zeros(4), torch.zeros(4))
        >>> [tuple(v.shape) for v in dynamics(torch.tensor(0.5), state)], dynamics.calls
        ([(4, 2), (4,), (4,), (4,)], 1)
    """

    def __init__(
        self, field: nn.Module, context: Tensor | None, probe: Tensor | None, regularize: bool
    ):
        self.field, self.context, self.probe, self.regularize = field, context, probe, regularize
        self.calls = 0

    def __call__(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self.calls += 1
        create = torch.is_grad_enabled()  # True while training and in adjoint backward solves
        with torch.enable_grad():
            z = state[0]
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.field(t, z, self.context)
            div, frob = _divergence(f, z, self.probe, create, self.regularize)
        out = (f, div)
        if self.regularize:
            out = (f, div, f.pow(2).sum(-1), frob)
        return out if create else tuple(o.detach() for o in out)
