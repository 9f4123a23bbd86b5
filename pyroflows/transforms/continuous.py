r"""Continuous normalizing flows (FFJORD) on torchdiffeq, with RNODE regularisation.

A continuous flow moves a point along the ODE :math:`dz/dt = f(t, z, c)` from :math:`t_0` (base)
to :math:`t_1` (data). Its log-determinant obeys the instantaneous change of variables [1]

.. math:: \frac{d}{dt} \log|\det \partial z(t) / \partial z(t_0)| = \nabla \cdot f(t, z(t), c),

so one ODE solve of the joint state :math:`(z, \ell)` returns the output and the log-det. The
divergence is exact (one backward pass per dimension) or Hutchinson's estimate
:math:`\epsilon^\top (\partial f/\partial z)\, \epsilon` with one probe :math:`\epsilon` held fixed
for the whole solve [2]. With ``regularize=True`` the solve also integrates the RNODE
penalties [3] :math:`\int \|f\|^2 dt` (kinetic energy) and :math:`\int \|\partial f/\partial
z\|_F^2 dt` (exact with exact divergence, else Hutchinson's :math:`\|\epsilon^\top \partial f /
\partial z\|^2` from the same vector-Jacobian product), read with :meth:`regularization`. The
penalties are integrated in training mode only: an evaluation solve (``module.eval()``) is the
plain flow's, so its cost and NFE do not depend on ``regularize``.

Both directions cost one solve: ``_call`` (base -> data) integrates :math:`t_0 \to t_1`,
``_inverse`` (data -> base) integrates back. Training and evaluation use separate solver
settings (:class:`~pyroflows.transforms.ODESolver` objects ``train_solver`` / ``eval_solver``,
picked by ``module.training``).

References:
    [1] R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud. Neural Ordinary Differential
        Equations. NeurIPS 2018.
    [2] W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud. FFJORD:
        Free-form Continuous Dynamics for Scalable Reversible Generative Models. ICLR 2019.
    [3] C. Finlay, J.-H. Jacobsen, L. Nurbekyan, A. Oberman. How to train your neural ODE: the
        world of Jacobian and kinetic regularization. ICML 2020.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from ..nn.vector_field import VectorField
from .base import ConditionalFlowTransform, FlowTransform, NonFiniteError
from .ode import ADAPTIVE_METHODS, FIXED_GRID_METHODS, Dynamics, ODESolver, SolverError

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_GRID_METHODS",
    "ConditionalContinuousFlow",
    "ContinuousFlow",
    "ODESolver",
    "SolverError",
    "conditional_continuous_flow",
    "continuous_flow",
]

#: exact divergence is the ``"auto"`` choice up to this dimension.
EXACT_MAX_DIM = 8
#: the default solver of continuous flows (training and evaluation).
DEFAULT_SOLVER = ODESolver("dopri5", rtol=1e-5, atol=1e-5)


class ContinuousFlow(FlowTransform):
    r"""Continuous normalizing flow :math:`dz/dt = f(t, z)`; one ODE solve in either direction.

    Neither direction is faster: sampling (``_call``, base -> data) and density (``_inverse``,
    data -> base) each cost one solve, returning the state and the log-det together. The number
    of vector-field evaluations of the latest solve is in :attr:`nfe`.

    Args:
        input_dim: dimension :math:`D`.
        hidden_dims: hidden sizes of the default :class:`~pyroflows.nn.VectorField`.
        context_dim: context size for the conditional variant.
        activation: activation class of the default vector field.
        vector_field: a module ``(t, z, context) -> dz/dt`` to use instead of the default.
        t0: integration time at the base.
        t1: integration time at the data (``t1 > t0``).
        divergence: ``"exact"``, ``"hutchinson"`` or ``"auto"`` (exact when
            :math:`D \le 8`). Switchable at any time (e.g. after loading), by assigning the
            attribute or with :meth:`set_divergence`.
        probe: Hutchinson probe, ``"gaussian"`` or ``"rademacher"``, drawn once per solve.
        regularize: also integrate the RNODE penalties in training mode; see
            :meth:`regularization`.
        adjoint: backpropagate with the adjoint method (``odeint_adjoint``, memory O(1) in the
            number of steps) instead of through the solver's operations.
        solver: the ODE solver, an :class:`ODESolver` or a dict of its settings (``method``,
            ``rtol``, ``atol``, ``step_size``); used in training mode, and in evaluation mode
            too unless ``eval_solver`` is given. Held in :attr:`train_solver`.
        eval_solver: the solver of evaluation mode (``module.eval()``), e.g. tighter
            tolerances for scoring; ``None``: ``solver``. Held in :attr:`eval_solver`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = ContinuousFlow(2, hidden_dims=(16,))
        >>> _ = torch.nn.init.normal_(t.vector_field.layers[-1].linear.weight, std=0.5)
        >>> x = torch.randn(5, 2)
        >>> y, ld = t.forward_and_log_det(x)
        >>> t.nfe > 0, ld.shape
        (True, torch.Size([5]))
        >>> x2, ld2 = t.inverse_and_log_det(y)
        >>> torch.allclose(x2, x, atol=1e-4), torch.allclose(ld2, ld, atol=1e-4)
        (True, True)
        >>> fixed = ContinuousFlow(2, solver=ODESolver("rk4", step_size=0.25),
        ...                        eval_solver={"rtol": 1e-6, "atol": 1e-6})
        >>> fixed.train_solver.method, fixed.eval_solver.method
        ('rk4', 'dopri5')
    """

    def __init__(
        self,
        input_dim: int,
        *,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        activation: type[nn.Module] = nn.SiLU,
        vector_field: nn.Module | None = None,
        t0: float = 0.0,
        t1: float = 1.0,
        divergence: str = "auto",
        probe: str = "gaussian",
        regularize: bool = False,
        adjoint: bool = False,
        solver: ODESolver | Mapping[str, Any] = DEFAULT_SOLVER,
        eval_solver: ODESolver | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__((input_dim,), context_dim=context_dim)
        if not float(t1) > float(t0):
            raise ValueError(f"t1 must be greater than t0; got t0={t0}, t1={t1}.")
        if vector_field is None:
            vector_field = VectorField(
                input_dim, hidden_dims, context_dim=context_dim, activation=activation
            )
        elif not isinstance(vector_field, nn.Module):
            raise TypeError(
                "vector_field must be an nn.Module called as (t, z, context) -> dz/dt; "
                f"got {type(vector_field).__name__}."
            )
        self.vector_field = vector_field
        self.t0, self.t1 = float(t0), float(t1)
        self.divergence, self.probe = divergence, probe
        self._regularization: dict[str, Tensor] | None = None
        self.regularize, self.adjoint = regularize, bool(adjoint)
        self.train_solver = ODESolver.coerce(solver, name="solver")
        self.eval_solver = (
            self.train_solver
            if eval_solver is None
            else ODESolver.coerce(eval_solver, name="eval_solver")
        )
        self.nfe = 0

    # ---- switchable settings (plain attributes, never in the state dict) ------------------
    @property
    def divergence(self) -> str:
        """``"exact"``, ``"hutchinson"`` or ``"auto"``."""
        return self._divergence

    @divergence.setter
    def divergence(self, value: str) -> None:
        if value not in ("exact", "hutchinson", "auto"):
            raise ValueError(f"divergence must be 'exact', 'hutchinson' or 'auto'; got {value!r}.")
        self._divergence = value

    def set_divergence(self, kind: str) -> _DivergenceSetting:
        """Switch the divergence to ``kind`` (``"exact"``, ``"hutchinson"`` or ``"auto"``).

        A plain call switches it for good (e.g. ``set_divergence("exact")`` to score a loaded
        model without Hutchinson noise); in a ``with`` block it switches back on exit, like
        ``torch.set_grad_enabled``.

        Example:
            >>> t = ContinuousFlow(16, hidden_dims=(8,))          # "auto": Hutchinson at D=16
            >>> with t.set_divergence("exact"):
            ...     t.exact_divergence
            True
            >>> t.divergence
            'auto'
            >>> _ = t.set_divergence("exact")
            >>> t.divergence
            'exact'
        """
        previous = self.divergence
        self.divergence = kind
        return _DivergenceSetting(self, previous)

    @property
    def probe(self) -> str:
        """Hutchinson probe distribution, ``"gaussian"`` or ``"rademacher"``."""
        return self._probe

    @probe.setter
    def probe(self, value: str) -> None:
        if value not in ("gaussian", "rademacher"):
            raise ValueError(f"probe must be 'gaussian' or 'rademacher'; got {value!r}.")
        self._probe = value

    @property
    def regularize(self) -> bool:
        """Whether solves integrate the RNODE penalties (switching it forgets the last ones)."""
        return self._regularize

    @regularize.setter
    def regularize(self, value: bool) -> None:
        self._regularize = bool(value)
        self._regularization = None

    @property
    def exact_divergence(self) -> bool:
        """Whether solves use the exact divergence (resolves ``"auto"``)."""
        if self.divergence == "auto":
            return self.event_shape[0] <= EXACT_MAX_DIM
        return self.divergence == "exact"

    @property
    def _penalised(self) -> bool:
        """Whether a solve now integrates the RNODE penalties (training mode only)."""
        return self.regularize and self.training

    @property
    def train_solver(self) -> ODESolver:
        """The solver of training mode; assign an :class:`ODESolver` or a dict to change it."""
        return self._train_solver

    @train_solver.setter
    def train_solver(self, value: ODESolver | Mapping[str, Any]) -> None:
        self._train_solver = ODESolver.coerce(value, name="train_solver")

    @property
    def eval_solver(self) -> ODESolver:
        """The solver of evaluation mode; assign an :class:`ODESolver` or a dict to change it."""
        return self._eval_solver

    @eval_solver.setter
    def eval_solver(self, value: ODESolver | Mapping[str, Any]) -> None:
        self._eval_solver = ODESolver.coerce(value, name="eval_solver")

    @property
    def solver(self) -> ODESolver:
        """The settings in use now: :attr:`train_solver` in training mode, else :attr:`eval_solver`."""
        return self.train_solver if self.training else self.eval_solver

    def _key(self, context: Tensor | None) -> tuple:  # settings changes invalidate the slot
        settings = (self.divergence, self.probe, self._penalised, self.t0, self.t1)
        return (*super()._key(context), tuple(self.solver), settings)

    # ---- the solve ------------------------------------------------------------------------
    def _draw_probe(self, z: Tensor) -> Tensor:
        if self.probe == "gaussian":
            return torch.randn_like(z)
        return torch.randint(0, 2, z.shape, device=z.device).to(z.dtype) * 2 - 1

    def _solve(self, v: Tensor, context: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
        d = self.event_shape[0]
        batch = v.shape[:-1]
        if context is not None:
            batch = torch.broadcast_shapes(batch, context.shape[:-1])
            context = context.expand(*batch, context.shape[-1]).reshape(-1, context.shape[-1])
        z = v.expand(*batch, d).reshape(-1, d)
        zero = z.new_zeros(z.shape[0])
        if not len(z):  # nothing to integrate (the solver's error norm is undefined on it)
            self.nfe, self._regularization = 0, None
            return z.reshape(*batch, d).clone(), zero.reshape(batch)
        penalised = self._penalised
        state = (z, zero, zero, zero) if penalised else (z, zero)
        probe = None if self.exact_divergence else self._draw_probe(z)
        dynamics = Dynamics(self.vector_field, context, probe, penalised)
        start, end = (self.t1, self.t0) if reverse else (self.t0, self.t1)
        times = torch.tensor([start, end], dtype=z.dtype, device=z.device)
        settings = self.solver
        kwargs = settings.odeint_kwargs(z.dtype)
        try:
            if self.adjoint and torch.is_grad_enabled():
                params = tuple(p for p in self.vector_field.parameters() if p.requires_grad)
                if context is not None and context.requires_grad:
                    params += (context,)
                out = odeint_adjoint(dynamics, state, times, adjoint_params=params, **kwargs)
            else:
                out = odeint(dynamics, state, times, **kwargs)
        except AssertionError as exc:
            raise self._solver_error(exc, settings) from exc
        finally:
            self.nfe = dynamics.calls
        final = [s[-1] for s in out]
        sign = -1.0 if reverse else 1.0  # integrals over [t0, t1] whichever way we went
        self._regularization = None
        if penalised:
            self._regularization = {
                "kinetic": sign * final[2].mean(),
                "jacobian": sign * final[3].mean(),
            }
        return final[0].reshape(*batch, d), sign * final[1].reshape(batch)

    def _solver_error(self, exc: AssertionError, settings: ODESolver) -> Exception:
        name, msg = self._layer_name(), str(exc)
        if "underflow in dt" in msg:
            return SolverError(
                f"{name}: the adaptive ODE solver underflowed ({msg}) with method="
                f"{settings.method!r}, rtol={settings.rtol}, atol={settings.atol}: the dynamics "
                "are too stiff for these tolerances. Loosen rtol/atol (solver=/eval_solver=, or "
                "assign transform.train_solver / transform.eval_solver), or use a fixed-grid "
                "method, e.g. solver=ODESolver('rk4', step_size=0.05); when training, "
                "regularize=True (RNODE) keeps dynamics smooth."
            )
        if "non-finite" in msg:
            return NonFiniteError(
                f"{name}: the ODE state became NaN or Inf during the solve; the vector field may "
                "have diverged (lower the learning rate, clip gradients, use regularize=True)."
            )
        return SolverError(f"{name}: torchdiffeq failed ({msg}); check the solver settings.")

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Base -> data: integrate :math:`t_0 \\to t_1`; returns ``(y, log|det dy/dx|)``."""
        return self._solve(x, context, reverse=False)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Data -> base: integrate :math:`t_1 \\to t_0`; returns ``(x, log|det dy/dx|)``."""
        return self._solve(y, context, reverse=True)

    def regularization(self) -> dict[str, Tensor]:
        r"""RNODE penalties of the latest solve, batch means of :math:`\int_{t_0}^{t_1}` of
        :math:`\|f\|^2` (``"kinetic"``) and :math:`\|\partial f/\partial z\|_F^2` (``"jacobian"``).

        ``pf.fit(..., regularization={"kinetic": w1, "jacobian": w2})`` adds
        ``w1 * kinetic + w2 * jacobian`` to the loss. Empty when ``regularize`` is off (the
        penalties are then not integrated at all), when the latest solve ran in evaluation mode
        (which never integrates them), or when no solve has run since it was turned on.

        Example:
            >>> t = ContinuousFlow(2, hidden_dims=(8,), regularize=True)
            >>> _ = t.inverse_and_log_det(torch.randn(4, 2))
            >>> sorted(t.regularization())
            ['jacobian', 'kinetic']
            >>> _ = t.eval().inverse_and_log_det(torch.randn(4, 2))   # evaluation: plain solve
            >>> t.regularization()
            {}
        """
        if not self.regularize or self._regularization is None:
            return {}
        return dict(self._regularization)

    def __getstate__(self) -> dict:  # copies and pickles never carry the last penalties' graph
        state = dict(super().__getstate__())
        state["_regularization"] = None
        return state

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.event_shape[0]}, context_dim={self.context_dim}, "
            f"divergence={self.divergence!r}, regularize={self.regularize}, "
            f"adjoint={self.adjoint}, train_solver={self.train_solver}, "
            f"eval_solver={self.eval_solver}"
        )


class _DivergenceSetting:
    """What :meth:`ContinuousFlow.set_divergence` returns: restores the old one in a ``with``."""

    def __init__(self, flow: ContinuousFlow, previous: str) -> None:
        self.flow, self.previous = flow, previous

    def __enter__(self) -> ContinuousFlow:
        return self.flow

    def __exit__(self, *exc: object) -> None:
        self.flow.divergence = self.previous


class ConditionalContinuousFlow(ConditionalFlowTransform, ContinuousFlow):
    """Conditional :class:`ContinuousFlow`: the vector field also sees the context,
    :math:`dz/dt = f(t, z, c)`; both directions cost one solve.

    Example:
        >>> t = ConditionalContinuousFlow(2, context_dim=3, hidden_dims=(8,))
        >>> t.condition(torch.randn(4, 3))(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        input_dim: int,
        *,
        context_dim: int,
        hidden_dims: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(input_dim, hidden_dims=hidden_dims, context_dim=context_dim, **kwargs)


def continuous_flow(
    input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs: Any
) -> ContinuousFlow:
    """Continuous flow, Pyro-helper style (hidden sizes default to ``(64, 64)``).

    Example:
        >>> continuous_flow(3).event_shape
        torch.Size([3])
    """
    return ContinuousFlow(input_dim, hidden_dims=hidden_dims, **kwargs)


def conditional_continuous_flow(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs: Any
) -> ConditionalContinuousFlow:
    """Conditional continuous flow, Pyro-helper style.

    Example:
        >>> conditional_continuous_flow(3, 2).context_dim
        2
    """
    return ConditionalContinuousFlow(
        input_dim, context_dim=context_dim, hidden_dims=hidden_dims, **kwargs
    )
