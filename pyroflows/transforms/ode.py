r"""ODE machinery of continuous flows: solver settings, the augmented dynamics, the divergence.

The dynamics integrate, next to the state :math:`z`, the divergence :math:`\nabla \cdot f`
(exact: one backward pass per dimension; Hutchinson: :math:`\epsilon^\top (\partial f /
\partial z) \epsilon` with a probe fixed for the solve) and, on request, the RNODE integrands
:math:`\|f\|^2` and :math:`\|\partial f / \partial z\|_F^2` (exact, or
:math:`\|\epsilon^\top \partial f / \partial z\|^2` from the same vector-Jacobian product).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

__all__ = ["ADAPTIVE_METHODS", "FIXED_GRID_METHODS", "Dynamics", "ODESolver", "SolverError"]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams")


class SolverError(RuntimeError):
    """The ODE solver could not integrate the flow; the message says which setting to change."""


@dataclasses.dataclass
class ODESolver:
    """Settings of one ODE solve (mutable: change them on a loaded model).

    Tolerances below ``16 * eps`` of the state's dtype are raised to that floor, under which an
    adaptive step-size control cannot make progress (float32: 1.9e-6).

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
    """

    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    step_size: float | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` for an unknown method or missing/invalid step settings."""
        if self.method in FIXED_GRID_METHODS:
            if self.step_size is None or not self.step_size > 0:
                raise ValueError(
                    f"the fixed-grid method {self.method!r} needs a positive step_size, "
                    f"e.g. method={self.method!r}, step_size=0.05; got {self.step_size!r}."
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
        self.validate()
        if self.method in FIXED_GRID_METHODS:
            return {"method": self.method, "options": {"step_size": float(self.step_size)}}
        floor = 16 * torch.finfo(dtype).eps
        return {
            "method": self.method,
            "rtol": max(float(self.rtol), floor),
            "atol": max(float(self.atol), floor),
        }


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
