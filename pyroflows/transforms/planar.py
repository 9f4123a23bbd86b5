r"""Planar flow (Rezende & Mohamed 2015) with an exact numerical inverse.

.. math:: y = x + \hat u \tanh(w^\top x + b), \qquad
          \log|\det J| = \log\left|1 + \hat u^\top w\,(1 - \tanh^2(w^\top x + b))\right|,

with :math:`\hat u = u + (m(w^\top u) - w^\top u)\, w / \|w\|^2`, :math:`m(a) = -1 +
\mathrm{softplus}(a)`, which keeps :math:`\hat u^\top w > -1` and the map invertible [1].

The sampling direction (``_call``) is closed form. The density direction reduces to the monotone
scalar equation :math:`w^\top y = \alpha + \hat u^\top w \tanh(\alpha + b)` for
:math:`\alpha = w^\top x`, solved by safeguarded Newton iterations inside the bracket
:math:`|\alpha - w^\top y| \le |\hat u^\top w|`; one final differentiable Newton step gives exact
gradients (implicit differentiation), so planar flows can score data they did not sample.

References:
    [1] D. J. Rezende, S. Mohamed. Variational Inference with Normalizing Flows. ICML 2015.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import MLP
from .base import ConditionalFlowTransform, FlowTransform

__all__ = ["ConditionalPlanarTransform", "PlanarTransform", "conditional_planar", "planar"]

#: names used before 0.2 (``pf.Planar`` is the flow; these are its layers) -> current names.
DEPRECATED_NAMES = {"Planar": "PlanarTransform", "ConditionalPlanar": "ConditionalPlanarTransform"}


class PlanarTransform(FlowTransform):
    r"""Planar transform, a layer of the :class:`~pyroflows.Planar` flow (Pyro's ``Planar``; here
    that name is the flow); fast sampling, iterative (but exact) density direction.

    Args:
        input_dim: dimension :math:`D`.
        context_dim: context size; the conditional variant produces :math:`(u, w, b)` with a
            hypernetwork on the context.
        hidden_dims: hidden sizes of that hypernetwork.
        max_iter: Newton iterations for the inverse.

    Example:
        >>> _ = torch.manual_seed(0); t = PlanarTransform(2)
        >>> x = torch.randn(5, 2)
        >>> t.clear_cache(); torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True
    """

    def __init__(
        self,
        input_dim: int,
        *,
        context_dim: int = 0,
        hidden_dims: Sequence[int] | None = None,
        max_iter: int = 100,
    ) -> None:
        super().__init__((input_dim,), context_dim=context_dim)
        self.max_iter = max_iter
        if context_dim:
            self.hypernet = MLP(context_dim, 2 * input_dim + 1, hidden_dims, zero_init=False)
        else:
            bound = 1.0 / input_dim**0.5
            self.u = nn.Parameter(torch.empty(input_dim).uniform_(-bound, bound))
            self.w = nn.Parameter(torch.empty(input_dim).uniform_(-bound, bound))
            self.b = nn.Parameter(torch.empty(1).uniform_(-bound, bound))

    def _uwb(self, v: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if self.context_dim:
            h = self.hypernet(context)
            d = self.event_shape[0]
            u, w, b = h[..., :d], h[..., d : 2 * d], h[..., 2 * d :]
        else:
            u, w, b = self.u, self.w, self.b
        wu = (w * u).sum(-1, keepdim=True)
        u_hat = u + (F.softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True).clamp_min(1e-12)
        return u_hat, w, b

    @staticmethod
    def _log_det(alpha: Tensor, c: Tensor) -> Tensor:
        return torch.log1p(c * (1 - torch.tanh(alpha) ** 2)).squeeze(-1)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        u, w, b = self._uwb(x, context)
        a = (x * w).sum(-1, keepdim=True) + b
        c = (u * w).sum(-1, keepdim=True)
        return x + u * torch.tanh(a), self._log_det(a, c)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        u, w, b = self._uwb(y, context)
        wy = (y * w).sum(-1, keepdim=True)
        c = (u * w).sum(-1, keepdim=True)

        def h(alpha: Tensor) -> tuple[Tensor, Tensor]:
            t = torch.tanh(alpha + b)
            return alpha + c * t - wy, 1 + c * (1 - t * t)

        with torch.no_grad():  # root of the increasing scalar function h
            lo, hi = wy - c.abs(), wy + c.abs()
            alpha = wy - c * torch.tanh(wy + b)
            alpha = torch.maximum(torch.minimum(alpha, hi), lo)
            for _ in range(self.max_iter):
                r, dr = h(alpha)
                lo = torch.where(r < 0, alpha, lo)
                hi = torch.where(r > 0, alpha, hi)
                step = alpha - r / dr
                inside = (step > lo) & (step < hi)
                new = torch.where(inside, step, (lo + hi) / 2)
                if bool(
                    ((new - alpha).abs() <= 1e-12 + 4 * torch.finfo(y.dtype).eps * new.abs()).all()
                ):
                    alpha = new
                    break
                alpha = new
        r, dr = h(alpha)
        alpha = alpha - r / dr  # one differentiable Newton step: exact gradients at the root
        x = y - u * torch.tanh(alpha + b)
        return x, self._log_det(alpha + b, c)


class ConditionalPlanarTransform(ConditionalFlowTransform, PlanarTransform):
    """Conditional :class:`PlanarTransform`: :math:`(u, w, b)` come from a hypernetwork on the context.

    Example:
        >>> t = ConditionalPlanarTransform(2, context_dim=3, hidden_dims=(8,))
        >>> t.condition(torch.randn(4, 3))(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        input_dim: int,
        *,
        context_dim: int,
        hidden_dims: Sequence[int] | None = None,
        **kwargs,
    ):
        super().__init__(input_dim, context_dim=context_dim, hidden_dims=hidden_dims, **kwargs)


def planar(input_dim: int) -> PlanarTransform:
    """Planar layer, Pyro-helper style; works with ``iterated``.

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.distributions.transforms import iterated
        >>> base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
        >>> d = dist.TransformedDistribution(base, iterated(3, planar, 2))
        >>> z = d.rsample((5,))
        >>> z.shape, d.log_prob(z).shape
        (torch.Size([5, 2]), torch.Size([5]))
    """
    return PlanarTransform(input_dim)


def conditional_planar(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None
) -> ConditionalPlanarTransform:
    """Conditional planar layer, Pyro-helper style: the layer's parameters are computed from
    the context by an MLP of ``hidden_dims``.

    Example:
        >>> import pyro.distributions as dist
        >>> base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
        >>> t = conditional_planar(2, 3, [8])
        >>> d = dist.ConditionalTransformedDistribution(base, [t]).condition(torch.randn(3))
        >>> z = d.rsample((5,))
        >>> z.shape, d.log_prob(z).shape
        (torch.Size([5, 2]), torch.Size([5]))
    """
    return ConditionalPlanarTransform(input_dim, context_dim=context_dim, hidden_dims=hidden_dims)


def __getattr__(name: str) -> type:
    return deprecated_name(__name__, name)


def deprecated_name(module: str, name: str) -> type:
    """The class an old name stands for, with a ``DeprecationWarning`` naming the new one."""
    import warnings

    if name not in DEPRECATED_NAMES:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = DEPRECATED_NAMES[name]
    warnings.warn(
        f"pyroflows.transforms.{name} is now pyroflows.transforms.{new} (pf.Planar is the flow "
        "made of these layers); the old name will be removed in pyroflows 0.2.",
        DeprecationWarning,
        stacklevel=3,
    )
    return globals()[new]
