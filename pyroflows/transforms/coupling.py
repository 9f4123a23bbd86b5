r"""Coupling layers: NICE (additive), RealNVP (affine) and NSF (spline) share one implementation.

The input is split into an identity part :math:`x_a` and a transformed part :math:`x_b`;
a conditioner network :math:`\theta = g(x_a, c)` parameterises an elementwise transformer:

.. math:: y_a = x_a, \qquad y_b = \tau(x_b; \theta(x_a, c)).

Both directions cost one network pass. With ``input_dim=1`` a conditional layer has no identity
part: its conditioner reads the context alone, :math:`y = \tau(x; \theta(c))`. Image forms (channel and checkerboard masks with a conv
conditioner) subclass :class:`Coupling` and override only ``_split``/``_merge``.

References:
    [1] L. Dinh, D. Krueger, Y. Bengio. NICE: Non-linear Independent Components Estimation. 2014.
    [2] L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP. ICLR 2017.
    [3] C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. Neural Spline Flows. NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn import MLP
from .base import ConditionalFlowTransform, FlowTransform
from .elementwise import get_transformer, sum_event

__all__ = [
    "ConditionalCoupling",
    "Coupling",
    "additive_coupling",
    "affine_coupling",
    "conditional_additive_coupling",
    "conditional_affine_coupling",
    "conditional_spline_coupling",
    "spline_coupling",
]


class Coupling(FlowTransform):
    r"""Coupling layer on vectors; fast in both directions.

    Args:
        input_dim: dimension :math:`D` of the data.
        hidden_dims: hidden sizes of the dense conditioner.
        transformer: ``"affine"`` (RealNVP), ``"additive"`` (NICE) or ``"spline"`` (NSF, a
            rational-quadratic spline, :func:`~pyroflows.transforms.elementwise.rational_quadratic_spline`).
        swap: transform the first part and keep the second (alternate it between layers).
        split_dim: size of the first part (default ``D // 2``).
        context_dim: context size for the conditional variant.
        log_scale_bound: soft bound :math:`b` on affine log-scales.
        bins: spline bins :math:`K` (``transformer="spline"`` only).
        bound: spline interval :math:`[-B, B]`, the identity outside (``"spline"`` only).
        invert_spline: the spline on the data side (``True``: ``log_prob`` evaluates it, as
            zuko and nflows) or the base side (``False``: as Pyro); see
            :func:`~pyroflows.transforms.elementwise.spline` (``"spline"`` only).
        invert_affine: the affine map as the forward map (``False``: ``log_prob`` computes
            :math:`(y - t) e^{-s}`, as the MAF paper and Pyro) or its inverse (``True``:
            :math:`y e^{s} + t`, as zuko and nflows); see
            :func:`~pyroflows.transforms.elementwise.affine_on_side` (``"affine"`` only).
        activation: activation class of the conditioner.
        zero_init: zero-initialise the default conditioner's last layer, so that the layer
            starts as the identity (the default here, in the helpers and in guides); ``False``
            starts it at a random map (``nn.Linear``'s default init). Ignored with
            ``conditioner``.
        conditioner: a network ``(x_a, context) -> params`` to use instead of the default MLP;
            it must return ``num_params`` values per transformed coordinate stacked on axis
            ``-1 - len(event_shape)``.

    Example:
        >>> t = Coupling(4, hidden_dims=(8,))
        >>> x = torch.randn(3, 4)
        >>> torch.equal(t(x), x)   # identity at initialisation
        True
        >>> t.log_abs_det_jacobian(x, t(x)).shape
        torch.Size([3])
        >>> torch.equal(Coupling(4, hidden_dims=(8,), zero_init=False)(x), x)   # a random start
        False
    """

    def __init__(
        self,
        input_dim: int,
        *,
        hidden_dims: Sequence[int] | None = None,
        transformer: str = "affine",
        swap: bool = False,
        split_dim: int | None = None,
        context_dim: int = 0,
        log_scale_bound: float | None = 3.0,
        bins: int = 8,
        bound: float = 5.0,
        invert_spline: bool = True,
        invert_affine: bool = False,
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
        conditioner: nn.Module | None = None,
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(event_shape or (input_dim,), context_dim=context_dim)
        self.num_params, self._tau = get_transformer(
            transformer,
            log_scale_bound=log_scale_bound,
            bins=bins,
            bound=bound,
            invert_spline=invert_spline,
            invert_affine=invert_affine,
        )
        self.transformer, self.swap = transformer, bool(swap)
        if conditioner is None:
            if input_dim == 1 and context_dim:  # nothing to keep: parameters from the context
                d = 0 if split_dim is None else int(split_dim)
                if d != 0:
                    raise ValueError(f"split_dim must be 0 (or None) for input_dim=1; got {d}")
                self.sizes = [1, 0] if self.swap else [0, 1]
            elif input_dim < 2:
                raise ValueError(
                    f"a coupling layer needs input_dim >= 2 (or a context); got {input_dim}"
                )
            else:
                d = input_dim // 2 if split_dim is None else int(split_dim)
                if not 0 < d < input_dim:
                    raise ValueError(f"split_dim must be in [1, {input_dim - 1}]; got {split_dim}")
                self.sizes = [d, input_dim - d]
            d_id, d_tr = (self.sizes[1], self.sizes[0]) if self.swap else self.sizes
            conditioner = MLP(
                d_id,
                self.num_params * d_tr,
                hidden_dims,
                context_dim=context_dim,
                activation=activation,
                zero_init=zero_init,
            )
        self.conditioner = conditioner

    # --- the split; image forms override these three -------------------------------------
    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x.split(self.sizes, dim=-1)
        return (b, a) if self.swap else (a, b)

    def _merge(self, ident: Tensor, trans: Tensor) -> Tensor:
        return torch.cat((trans, ident) if self.swap else (ident, trans), dim=-1)

    def _params(self, ident: Tensor, context: Tensor | None) -> Tensor:
        """The conditioner's output ``(..., num_params, *trans_shape)``: one tensor, the
        parameters on axis ``-1 - len(event_shape)``, as the transformer takes it."""
        return self.conditioner(ident, context).unflatten(-1, (self.num_params, -1))

    # --- the math, once -------------------------------------------------------------------
    def _couple(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        ident, trans = self._split(v)
        n = len(self.event_shape)
        params = self._params(ident, context)
        out, s = self._tau(trans, params, inverse=inverse, dim=-1 - n)
        batch = out.shape[: out.dim() - n]
        if ident.shape[: ident.dim() - n] != batch:  # a batched context broadcasts the output
            ident = ident.expand(*batch, *ident.shape[ident.dim() - n :])
        ld = self._log_det(s, n) if s is not None else out.new_zeros(batch)
        return self._merge(ident, out), ld

    def _log_det(self, s: Tensor, event_dims: int) -> Tensor:
        return sum_event(s, event_dims)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self._couple(y, context, inverse=True)


class ConditionalCoupling(ConditionalFlowTransform, Coupling):
    """Conditional :class:`Coupling`: the conditioner also sees a context vector.

    With ``input_dim=1`` the one coordinate is transformed with parameters computed from the
    context alone (a conditional elementwise transform).

    Example:
        >>> t = ConditionalCoupling(4, context_dim=2, hidden_dims=(8,))
        >>> t.condition(torch.randn(2)).inv(torch.randn(5, 4)).shape
        torch.Size([5, 4])
        >>> one = ConditionalCoupling(1, context_dim=2, hidden_dims=(8,), transformer="spline")
        >>> one.sizes, one.condition(torch.randn(5, 2)).inv(torch.randn(5, 1)).shape
        ([0, 1], torch.Size([5, 1]))
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


def affine_coupling(input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs) -> Coupling:
    """Affine coupling layer (RealNVP), Pyro-helper style; works with ``iterated``.

    Example:
        >>> from pyro.distributions.transforms import iterated
        >>> len(iterated(3, affine_coupling, 4).parts)
        3
    """
    return Coupling(input_dim, hidden_dims=hidden_dims, transformer="affine", **kwargs)


def additive_coupling(
    input_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> Coupling:
    """Additive coupling layer (NICE), Pyro-helper style: volume preserving, so its log-det is
    zero whatever the weights.

    Example:
        >>> t = additive_coupling(4, [8])
        >>> with torch.no_grad():
        ...     for p in t.parameters():
        ...         _ = p.normal_()
        >>> x = torch.randn(3, 4)
        >>> y = t(x)
        >>> t.log_abs_det_jacobian(x, y)
        tensor([0., 0., 0.])
        >>> t.clear_cache(); torch.allclose(t.inv(y), x, atol=1e-5)   # computed, not cached
        True
    """
    return Coupling(input_dim, hidden_dims=hidden_dims, transformer="additive", **kwargs)


def conditional_affine_coupling(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> ConditionalCoupling:
    """Conditional affine coupling layer (RealNVP with a context), Pyro-helper style.

    Example:
        >>> import pyro.distributions as dist
        >>> base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
        >>> t = conditional_affine_coupling(3, 2, [8])
        >>> d = dist.ConditionalTransformedDistribution(base, [t]).condition(torch.randn(2))
        >>> d.rsample((5,)).shape, d.log_prob(torch.randn(5, 3)).shape
        (torch.Size([5, 3]), torch.Size([5]))
    """
    return ConditionalCoupling(
        input_dim, context_dim=context_dim, hidden_dims=hidden_dims, transformer="affine", **kwargs
    )


def conditional_additive_coupling(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> ConditionalCoupling:
    """Conditional additive coupling layer (NICE with a context): log-det zero for every
    context.

    Example:
        >>> t = conditional_additive_coupling(4, 2, [8])
        >>> with torch.no_grad():
        ...     for p in t.parameters():
        ...         _ = p.normal_()
        >>> c, x = torch.randn(3, 2), torch.randn(3, 4)
        >>> y = t.condition(c)(x)
        >>> t.condition(c).log_abs_det_jacobian(x, y)
        tensor([0., 0., 0.])
        >>> t.clear_cache(); torch.allclose(t.condition(c).inv(y), x, atol=1e-5)
        True
    """
    return ConditionalCoupling(
        input_dim,
        context_dim=context_dim,
        hidden_dims=hidden_dims,
        transformer="additive",
        **kwargs,
    )


def spline_coupling(
    input_dim: int, *, hidden_dims: Sequence[int] | None = None, **kwargs
) -> Coupling:
    """Rational-quadratic spline coupling layer (NSF [3]), Pyro-helper style; options ``bins``,
    ``bound``, ``swap``, ``split_dim``; works with ``iterated``.

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.distributions.transforms import iterated
        >>> base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
        >>> d = dist.TransformedDistribution(base, iterated(2, spline_coupling, 2, bins=4))
        >>> d.log_prob(d.rsample((5,))).shape
        torch.Size([5])
    """
    return Coupling(input_dim, hidden_dims=hidden_dims, transformer="spline", **kwargs)


def conditional_spline_coupling(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> ConditionalCoupling:
    """Conditional spline coupling layer (``input_dim=1`` allowed: parameters from the context).

    Example:
        >>> t = conditional_spline_coupling(1, 3)
        >>> t.condition(torch.randn(4, 3))(torch.randn(4, 1)).shape
        torch.Size([4, 1])
    """
    return ConditionalCoupling(
        input_dim, context_dim=context_dim, hidden_dims=hidden_dims, transformer="spline", **kwargs
    )
