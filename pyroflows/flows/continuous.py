"""The continuous-flow preset ``CNF`` (FFJORD), optionally augmented."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..augmented import AugmentedFlowDistribution, GaussianAuxiliary
from ..transforms.continuous import ConditionalContinuousFlow, ContinuousFlow
from .base import Flow, FlowDistribution

__all__ = ["CNF"]


class CNF(Flow):
    r"""Continuous normalizing flow (FFJORD [Grathwohl et al. 2019]): one
    :class:`~pyroflows.transforms.ContinuousFlow`, :math:`dz/dt = f(t, z[, c])`, trained by
    maximum likelihood (``pf.fit``, optionally with RNODE ``regularization``) or by flow
    matching (``pf.fit(..., objective="flow_matching")``); either way ``log_prob`` is the ODE
    likelihood. Sampling and density cost one ODE solve each; ``flow.transform.nfe`` counts the
    vector-field evaluations of the latest solve.

    With ``augment_dim=k`` [Dupont et al. 2019] the ODE runs on :math:`(x, a) \in
    \mathbb{R}^{d+k}` and calling the flow returns an
    :class:`~pyroflows.augmented.AugmentedFlowDistribution` over :math:`x`: its ``log_prob`` is a
    lower BOUND on :math:`\log p(x)` (importance-weighted, ``num_bound_samples`` samples of a
    learnable Gaussian :math:`q(a \mid x)`), and ``sample`` drops :math:`a`.

    Args:
        input_dim: data dimension :math:`d`.
        hidden_dims: hidden sizes of the vector field.
        context_dim: context size (0: unconditional).
        augment_dim: extra dimensions :math:`k` (0: none).
        augment_hidden_dims: hidden sizes of :math:`q(a \mid x)`'s network.
        num_bound_samples: importance samples of the augmented ``log_prob`` bound.
        base: ``"normal"`` or ``"diag"`` (flow matching does not train the base).
        **kwargs: options of :class:`~pyroflows.transforms.ContinuousFlow` (``solver`` and
            ``eval_solver``: an :class:`~pyroflows.transforms.ODESolver` or a dict of its
            settings; ``divergence``, ``regularize``, ``adjoint``, ``activation``, ``t0``,
            ``t1``, ``probe``). A saved model keeps its solvers.

    Example:
        >>> flow = CNF(2, hidden_dims=(16,), solver={"rtol": 1e-4, "atol": 1e-4})
        >>> x, lp = flow.rsample_and_log_prob((3,))
        >>> x.shape, lp.shape, flow.transform.nfe > 0
        (torch.Size([3, 2]), torch.Size([3]), True)
        >>> flow.transform.eval_solver
        ODESolver(method='dopri5', rtol=0.0001, atol=0.0001, step_size=None)
    """

    def __init__(
        self,
        input_dim: int,
        *,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        augment_dim: int = 0,
        augment_hidden_dims: Sequence[int] = (32, 32),
        num_bound_samples: int = 1,
        base: str = "normal",
        **kwargs: Any,
    ) -> None:
        from ..transforms.ode import upgrade_solver_options

        if int(augment_dim) < 0:
            raise ValueError(f"augment_dim must be >= 0; got {augment_dim}.")
        kwargs = upgrade_solver_options(kwargs)  # model files written with method=, rtol=, ...
        dim = input_dim + int(augment_dim)
        if context_dim:
            t = ConditionalContinuousFlow(
                dim, context_dim=context_dim, hidden_dims=hidden_dims, **kwargs
            )
        else:
            t = ContinuousFlow(dim, hidden_dims=hidden_dims, **kwargs)
        super().__init__([t], event_shape=(dim,), context_dim=context_dim, base=base)
        self.augment_dim, self.num_bound_samples = int(augment_dim), int(num_bound_samples)
        if self.augment_dim:
            self.auxiliary = GaussianAuxiliary(
                input_dim, self.augment_dim, augment_hidden_dims, context_dim=context_dim
            )
            self.event_shape = torch.Size((input_dim,))  # the data side; the base is (d + k,)

    @property
    def transform(self) -> ContinuousFlow:
        """The flow's one :class:`~pyroflows.transforms.ContinuousFlow`."""
        return self.transforms[0]

    def forward(  # type: ignore[override]
        self, context: Tensor | None = None, *, temperature: float = 1.0
    ) -> FlowDistribution | AugmentedFlowDistribution:
        """The distribution over data (an augmented one, with a bound, if ``augment_dim > 0``)."""
        d = super().forward(context, temperature=temperature)
        if not self.augment_dim:
            return d
        return AugmentedFlowDistribution(
            d,
            self.auxiliary,
            context,
            data_dim=self.event_shape[0],
            num_samples=self.num_bound_samples,
        )
