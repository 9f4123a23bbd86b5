r"""Masked autoregressive transforms: MAF (fast density) and IAF (fast sampling), one class.

With a MADE conditioner :math:`\theta_i = g_i(v_{<i}, c)` and an elementwise transformer
:math:`\tau`, the two families differ only in which side the conditioner reads:

* ``fast="density"`` (MAF [1]): :math:`y_i = \tau(x_i; \theta_i(y_{<i}))`. The inverse
  (data -> base) is one network pass; sampling is sequential.
* ``fast="sample"`` (IAF [2]): :math:`y_i = \tau(x_i; \theta_i(x_{<i}))`. Sampling (base -> data)
  is one network pass; the density direction is sequential.

The sequential direction solves the triangular system by fixed-point iteration,
:math:`v^{(k+1)} = \tau^{-1}(\cdot;\theta(v^{(k)}))`, which is exact after :math:`D` passes for
any input (each pass fixes one more coordinate in the autoregressive order). Only the last
pass's log-derivatives enter the log-det, so the first :math:`D - 1` passes skip them
(``log_det=False`` of the transformers).

References:
    [1] G. Papamakarios, T. Pavlakou, I. Murray. Masked Autoregressive Flow for Density
        Estimation. NeurIPS 2017.
    [2] D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling. Improved
        Variational Inference with Inverse Autoregressive Flow. NeurIPS 2016.
    [3] C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. Neural Spline Flows. NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..nn import MADE
from .base import ConditionalFlowTransform, FlowTransform
from .elementwise import get_transformer

__all__ = [
    "ConditionalMaskedAutoregressive",
    "MaskedAutoregressive",
    "conditional_iaf",
    "conditional_maf",
    "conditional_spline_autoregressive",
    "iaf",
    "maf",
    "spline_autoregressive",
]


class MaskedAutoregressive(FlowTransform):
    r"""Autoregressive layer with a MADE conditioner; ``fast`` picks the one-pass direction.

    Args:
        input_dim: dimension :math:`D`.
        hidden_dims: hidden sizes of the MADE.
        fast: ``"density"`` (MAF) or ``"sample"`` (IAF).
        transformer: ``"affine"``, ``"additive"`` or ``"spline"`` (a rational-quadratic spline,
            the autoregressive NSF [3]).
        order: autoregressive order (a permutation; default natural). Presets alternate
            orders between layers instead of permuting the data.
        context_dim: context size for the conditional variant.
        log_scale_bound: soft bound on affine log-scales.
        bins: spline bins :math:`K` (``transformer="spline"`` only).
        bound: spline interval :math:`[-B, B]`, the identity outside (``"spline"`` only).
        invert_spline, invert_affine: which side of the layer the transformer is on, as
            :class:`~pyroflows.transforms.Coupling`'s (the spline on the data side by default,
            the affine map on the base side; :class:`~pyroflows.MAF` sets the data side).
        activation: activation class.
        zero_init: zero-initialise the MADE's last layer, so that the layer starts as the
            identity (the default here, in the helpers and in guides); ``False`` starts it at a
            random map (``nn.Linear``'s default init), which the density presets may choose.

    Example:
        >>> import torch
        >>> t = MaskedAutoregressive(3, hidden_dims=(8,), fast="density")
        >>> with torch.no_grad():
        ...     _ = t.conditioner.net[-1].bias.normal_()
        >>> y = torch.randn(4, 3)
        >>> x = t.inv(y)                           # one pass
        >>> t.clear_cache(); torch.allclose(t(x), y, atol=1e-6)   # sequential, D passes
        True
    """

    def __init__(
        self,
        input_dim: int,
        *,
        hidden_dims: Sequence[int] | None = None,
        fast: str = "density",
        transformer: str = "affine",
        order: Sequence[int] | None = None,
        context_dim: int = 0,
        log_scale_bound: float | None = 3.0,
        bins: int = 8,
        bound: float = 5.0,
        invert_spline: bool = True,
        invert_affine: bool = False,
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ) -> None:
        super().__init__((input_dim,), context_dim=context_dim)
        if fast not in ("density", "sample"):
            raise ValueError(f"fast must be 'density' (MAF) or 'sample' (IAF); got {fast!r}")
        self.num_params, self._tau = get_transformer(
            transformer,
            log_scale_bound=log_scale_bound,
            bins=bins,
            bound=bound,
            invert_spline=invert_spline,
            invert_affine=invert_affine,
        )
        self.fast, self.transformer = fast, transformer
        self.conditioner = MADE(
            input_dim,
            hidden_dims,
            num_params=self.num_params,
            context_dim=context_dim,
            order=order,
            activation=activation,
            zero_init=zero_init,
        )

    def _layer_name(self) -> str:
        return f"MaskedAutoregressive(fast={self.fast!r})"

    def _parallel(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        params = self.conditioner(v, context)  # (..., num_params, D)
        out, s = self._tau(v, params, inverse=inverse, dim=-2)
        return out, _total(s, out)

    def _sequential(
        self, u: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        # the conditioner reads the unknown side w: iterate w <- tau(u; theta(w)), D passes;
        # only the last pass's log-derivatives are used, so the first D - 1 skip them
        w, s, n = u.new_zeros(u.shape), None, self.event_shape[0]
        for i in range(n):
            params = self.conditioner(w, context)
            w, s = self._tau(u, params, inverse=inverse, dim=-2, log_det=i == n - 1)
        return w, _total(s, w)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if self.fast == "sample":  # IAF: y = tau(x; theta(x))
            return self._parallel(x, context, inverse=False)
        return self._sequential(x, context, inverse=False)  # MAF: y = tau(x; theta(y))

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if self.fast == "density":  # MAF: x = tau^-1(y; theta(y))
            return self._parallel(y, context, inverse=True)
        return self._sequential(y, context, inverse=True)  # IAF: x = tau^-1(y; theta(x))


class ConditionalMaskedAutoregressive(ConditionalFlowTransform, MaskedAutoregressive):
    """Conditional :class:`MaskedAutoregressive`: every hidden unit also sees the context.

    Example:
        >>> import torch
        >>> t = ConditionalMaskedAutoregressive(3, context_dim=2, hidden_dims=(8,))
        >>> t.condition(torch.randn(4, 2)).inv(torch.randn(4, 3)).shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        input_dim: int,
        *,
        context_dim: int,
        hidden_dims: Sequence[int] | None = None,
        **kwargs,
    ):
        super().__init__(input_dim, hidden_dims=hidden_dims, context_dim=context_dim, **kwargs)


def _total(s: Tensor | None, out: Tensor) -> Tensor:
    """The layer's log-det from the transformer's elementwise log-derivatives (``None``: 0)."""
    return s.sum(-1) if s is not None else out.new_zeros(out.shape[:-1])


def maf(input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs) -> MaskedAutoregressive:
    """Masked autoregressive flow layer (fast density), Pyro-helper style; works with
    ``iterated``.

    Example:
        >>> import pyro.distributions as dist, torch
        >>> from pyro.distributions.transforms import iterated
        >>> maf(3, [8]).fast
        'density'
        >>> base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
        >>> d = dist.TransformedDistribution(base, iterated(2, maf, 3))
        >>> d.log_prob(torch.randn(5, 3)).shape   # one network pass per layer
        torch.Size([5])
    """
    return MaskedAutoregressive(input_dim, hidden_dims=hidden_dims, fast="density", **kwargs)


def iaf(input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs) -> MaskedAutoregressive:
    """Inverse autoregressive flow layer (fast sampling), Pyro-helper style.

    Example:
        >>> import pyro.distributions as dist, torch
        >>> from pyro.distributions.transforms import iterated
        >>> base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
        >>> d = dist.TransformedDistribution(base, iterated(2, iaf, 2))
        >>> d.log_prob(d.rsample((5,))).shape
        torch.Size([5])
    """
    return MaskedAutoregressive(input_dim, hidden_dims=hidden_dims, fast="sample", **kwargs)


def conditional_maf(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> ConditionalMaskedAutoregressive:
    """Conditional MAF layer (fast density), Pyro-helper style: a density over ``input_dim``
    features for each context.

    Example:
        >>> import pyro.distributions as dist, torch
        >>> base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
        >>> d = dist.ConditionalTransformedDistribution(base, [conditional_maf(3, 2, [8])])
        >>> context, x = torch.randn(5, 2), torch.randn(5, 3)
        >>> d.condition(context).log_prob(x).shape    # one context per row
        torch.Size([5])
    """
    return ConditionalMaskedAutoregressive(
        input_dim, context_dim=context_dim, hidden_dims=hidden_dims, fast="density", **kwargs
    )


def conditional_iaf(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> ConditionalMaskedAutoregressive:
    """Conditional IAF layer (fast sampling), Pyro-helper style: e.g. an amortised guide whose
    context is the observation.

    Example:
        >>> import pyro.distributions as dist, torch
        >>> base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
        >>> d = dist.ConditionalTransformedDistribution(base, [conditional_iaf(3, 2, [8])])
        >>> z = d.condition(torch.randn(2)).rsample((4,))   # one network pass
        >>> z.shape, d.condition(torch.randn(2)).log_prob(z).shape
        (torch.Size([4, 3]), torch.Size([4]))
    """
    return ConditionalMaskedAutoregressive(
        input_dim, context_dim=context_dim, hidden_dims=hidden_dims, fast="sample", **kwargs
    )


def spline_autoregressive(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    *,
    fast: str = "density",
    **kwargs,
) -> MaskedAutoregressive:
    """Autoregressive rational-quadratic spline layer (NSF [3]), Pyro-helper style; ``fast``
    picks the one-pass direction; options ``bins``, ``bound``, ``order``.

    Example:
        >>> import pyro.distributions as dist, torch
        >>> from pyro.distributions.transforms import iterated
        >>> base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
        >>> d = dist.TransformedDistribution(base, iterated(2, spline_autoregressive, 3, bins=4))
        >>> d.log_prob(torch.randn(5, 3)).shape
        torch.Size([5])
    """
    return MaskedAutoregressive(
        input_dim, hidden_dims=hidden_dims, fast=fast, transformer="spline", **kwargs
    )


def conditional_spline_autoregressive(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    *,
    fast: str = "density",
    **kwargs,
) -> ConditionalMaskedAutoregressive:
    """Conditional autoregressive spline layer.

    Example:
        >>> import torch
        >>> t = conditional_spline_autoregressive(3, 2)
        >>> t.condition(torch.randn(2)).inv(torch.randn(4, 3)).shape
        torch.Size([4, 3])
    """
    return ConditionalMaskedAutoregressive(
        input_dim,
        context_dim=context_dim,
        hidden_dims=hidden_dims,
        fast=fast,
        transformer="spline",
        **kwargs,
    )
