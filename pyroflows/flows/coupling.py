"""Coupling presets: ``RealNVP``, ``NICE``, ``Glow`` (vector and image forms) and ``NSF``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import Transform

from ..transforms.coupling import ConditionalCoupling, Coupling
from ..transforms.linear import ActNorm, ElementwiseAffine, LULinear
from ..transforms.multiscale import glow_transforms, is_image_form, realnvp_image_transforms
from .autoregressive import _autoregressive
from .base import Flow, _layer

__all__ = ["NICE", "NSF", "Glow", "RealNVP"]


#: one coupling layer, conditional when ``context_dim`` > 0
_coupling = functools.partial(_layer, Coupling, ConditionalCoupling)


def _vector_or_image(
    name: str,
    input_dim: int | None,
    shape: Sequence[int] | None,
    vector: Callable[[int], list[Transform]],
    image: Callable[..., list[Transform]],
    **image_options: Any,
) -> tuple[list[Transform], tuple[int, ...]]:
    """Transforms and event shape of a preset with a vector and an image form (RealNVP, Glow).

    ``vector(input_dim)`` when only ``input_dim`` is given, ``image(shape, **image_options)``
    (a multi-scale builder of :mod:`pyroflows.transforms.multiscale`) when only
    ``shape=(C, H, W)`` is; anything else raises the same ``ValueError`` for every preset.
    """
    if is_image_form(name, input_dim, shape):
        return list(image(shape, **image_options)), tuple(shape)  # type: ignore[arg-type]
    return vector(input_dim), (input_dim,)  # type: ignore[arg-type]


class RealNVP(Flow):
    """RealNVP [Dinh et al. 2017]: affine coupling layers with alternating halves; both
    directions in one pass per layer.

    Image form (``shape=(C, H, W)``, no ``input_dim``): the multi-scale architecture with
    checkerboard and channel masks and conv conditioners, ``levels`` scales of
    ``steps_per_level`` couplings per mask type, ActNorm after each coupling and a ``logit``
    pre-transform; see
    :func:`pyroflows.transforms.realnvp_image_transforms`.

    ``zero_init`` (vector form): ``False`` (the default) leaves the last layer of each
    coupling's conditioner at ``nn.Linear``'s default initialisation, as zuko and Pyro do, so the
    flow starts at a random map; ``True`` zero-initialises it, so the flow starts as the identity
    (:class:`~pyroflows.AutoFlow` builds its guides that way). In the plain-loop benchmark at
    the default (64, 64) conditioners, 5 layers, 1000 steps, 3 seeds, two draws of the random
    start reached a median test NLL of 0.464 and 0.389 nats on two moons against the zero
    start's 0.525, and 3.762 and 3.805 on checkerboard against 3.790, i.e. better on moons and
    level on checkerboard (``benchmarks/convergence.py``; docs/benchmarks.md, "The last layer's
    initialisation, per family" and "What is left between RealNVP and zuko"). The image form's
    conv conditioners are always zero-initialised.

    ``invert_affine`` (vector form): ``False`` (the default) makes each coupling's forward map
    :math:`y = x e^{s} + t`, the paper's side; ``True`` puts it on the data side
    (``log_prob`` computes :math:`z = y e^{s} + t`, as zuko and nflows). Measured
    (docs/benchmarks.md, "Which side the affine map is on"): the data side was better on
    checkerboard, wine and the digits and worse on two moons (10 seeds at the default width:
    0.386 against 0.354), so the default is unchanged; :class:`MAF` takes the data side.

    Example:
        >>> flow = RealNVP(4, num_layers=2, hidden_dims=(16,))
        >>> flow.sample((3,)).shape
        torch.Size([3, 4])
        >>> x = torch.zeros(1, 4)
        >>> identity = RealNVP(4, num_layers=2, hidden_dims=(16,), zero_init=True)
        >>> identity.log_prob(x)                        # N(0, I) at initialisation
        tensor([-3.6758], grad_fn=<...>)
        >>> bool(flow.log_prob(x) != identity.log_prob(x))   # the default: a random start
        True
        >>> images = RealNVP(shape=(1, 8, 8), levels=2, steps_per_level=1, hidden_channels=8)
        >>> images.sample((3,), temperature=0.7).shape
        torch.Size([3, 1, 8, 8])
    """

    def __init__(
        self,
        input_dim: int | None = None,
        *,
        num_layers: int = 5,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
        shape: Sequence[int] | None = None,
        levels: int = 2,
        steps_per_level: int = 3,
        hidden_channels: int | Sequence[int] = 64,
        coupling: str = "affine",
        logit: float | None = 0.05,
        zero_init: bool = False,
        invert_affine: bool = False,
    ) -> None:
        layers, event_shape = _vector_or_image(
            "RealNVP",
            input_dim,
            shape,
            lambda d: [
                _coupling(
                    d,
                    hidden_dims=hidden_dims,
                    context_dim=context_dim,
                    swap=k % 2 == 1,
                    activation=activation,
                    zero_init=zero_init,
                    invert_affine=invert_affine,
                )
                for k in range(num_layers)
            ],
            realnvp_image_transforms,
            levels=levels,
            steps_per_level=steps_per_level,
            hidden_channels=hidden_channels,
            coupling=coupling,
            context_dim=context_dim,
            activation=activation,
            logit=logit,
        )
        super().__init__(layers, event_shape=event_shape, context_dim=context_dim, base=base)


class NICE(Flow):
    """NICE [Dinh et al. 2014]: additive (volume-preserving) couplings and a diagonal scaling
    layer at the base end, which carries all of the change of volume.

    ``zero_init=True`` (the default) starts every coupling at the identity (zero last conditioner
    layers); ``False`` at ``nn.Linear``'s default initialisation, which was worse at the default
    (64, 64) on two moons and checkerboard (docs/benchmarks.md, "The last layer's
    initialisation, per family").

    Example:
        >>> flow = NICE(4, num_layers=2, hidden_dims=(16,))
        >>> [type(t).__name__ for t in flow.transforms]
        ['ElementwiseAffine', 'Coupling', 'Coupling']
    """

    def __init__(
        self,
        input_dim: int,
        *,
        num_layers: int = 4,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
        zero_init: bool = True,
    ) -> None:
        layers: list[Transform] = [ElementwiseAffine(input_dim, shift=False)]
        layers += [
            _coupling(
                input_dim,
                hidden_dims=hidden_dims,
                context_dim=context_dim,
                transformer="additive",
                swap=k % 2 == 1,
                activation=activation,
                zero_init=zero_init,
            )
            for k in range(num_layers)
        ]
        super().__init__(layers, event_shape=(input_dim,), context_dim=context_dim, base=base)


class Glow(Flow):
    """Glow [Kingma & Dhariwal 2018] on vectors: steps of ActNorm -> invertible linear (LU) ->
    affine coupling, applied in that order to the data.

    Image form (``shape=(C, H, W)``, no ``input_dim``): the multi-scale architecture, ``levels``
    scales of squeeze and ``steps_per_level`` x (ActNorm, invertible 1x1 convolution, coupling
    with a conv
    conditioner), half of the channels factored out after each level under a learned prior;
    see :func:`pyroflows.transforms.glow_transforms`. Both directions are fast.

    Example:
        >>> flow = Glow(4, num_layers=2, hidden_dims=(16,))
        >>> [type(t).__name__ for t in flow.transforms][:3]
        ['Coupling', 'LULinear', 'ActNorm']
        >>> images = Glow(shape=(1, 8, 8), levels=2, steps_per_level=2, hidden_channels=8)
        >>> images.log_prob(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        input_dim: int | None = None,
        *,
        num_layers: int = 5,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
        shape: Sequence[int] | None = None,
        levels: int = 2,
        steps_per_level: int = 4,
        hidden_channels: int | Sequence[int] = 64,
        coupling: str = "affine",
        learned_prior: bool = True,
        logit: float | None = 0.05,
    ) -> None:
        def vector(d: int) -> list[Transform]:
            layers: list[Transform] = []
            for k in range(num_layers):
                c = _coupling(
                    d,
                    hidden_dims=hidden_dims,
                    context_dim=context_dim,
                    swap=k % 2 == 1,
                    activation=activation,
                )
                layers += [c, LULinear(d), ActNorm(d)]
            return layers

        layers, event_shape = _vector_or_image(
            "Glow",
            input_dim,
            shape,
            vector,
            glow_transforms,
            levels=levels,
            steps_per_level=steps_per_level,
            hidden_channels=hidden_channels,
            coupling=coupling,
            learned_prior=learned_prior,
            context_dim=context_dim,
            activation=activation,
            logit=logit,
        )
        super().__init__(layers, event_shape=event_shape, context_dim=context_dim, base=base)


class NSF(Flow):
    r"""Neural spline flow [Durkan et al. 2019]: monotonic rational-quadratic splines with
    ``bins`` bins on :math:`[-B, B]` (``bound``), identity tails, conditioned by dense networks.

    * ``fast=None`` (default): coupling form, both directions in one pass per layer. At
      ``input_dim=2`` layers alternate halves; above, a fixed seeded permutation precedes every
      layer after the first, drawn so that the half a layer keeps was transformed by the layer
      before (every coordinate is transformed in any two consecutive layers). With ``input_dim=1`` and a context, each layer's spline parameters
      come from the context alone (without a context a 1-D coupling has nothing to condition
      on: use ``fast="density"``).
    * ``fast="density"`` / ``fast="sample"``: autoregressive form (MADE conditioners), one pass
      in that direction and :math:`D` passes in the other. Layer :math:`2j` takes a fixed
      random order (``torch.randperm`` seeded with :math:`2j`) and layer :math:`2j + 1` its
      reverse, so consecutive layers condition each coordinate on complementary sets (at
      :math:`D = 2`: natural and reversed). On the 8 x 8 digits (64-D) random orders beat
      natural/reversed ones by about 0.07 bits/dim at equal steps (``benchmarks/splines.py
      --part quality``, docs/benchmarks.md).

    Args:
        input_dim: data dimension :math:`D`.
        num_layers: number of spline layers.
        hidden_dims: hidden sizes of each conditioner (default
            :func:`~pyroflows.nn.default_hidden_dims`; on two moons, 3000 steps, the test NLL
            was 0.300 with it against the optimum 0.289, inside the 0.03 nats that
            ``tests/test_spline.py`` asks for, which was tuned at ``(128, 128)``).
        context_dim: context size (0: unconditional).
        bins: spline bins :math:`K` per coordinate.
        bound: half-width :math:`B` of the spline interval; the identity outside, so a spline
            maps :math:`[-B, B]` onto itself: standardise data (or guide targets) wider than that.
            Defaults ``bins=8, bound=5``: in ``benchmarks/splines.py --part sweep`` (two
            moons, bins 4/8/16 x bound 3/5, 2 seeds) they tied with ``bins=16, bound=5`` for
            the lowest mean test NLL after 1000 steps (0.3148 vs 0.3145 nats; all six
            settings within 0.315-0.322, inside the seed spread) at 14 % fewer parameters,
            and after 400 steps 8 and 16 bins tied while 4 trailed by 0.02-0.06 nats.
        fast: ``None`` (coupling), ``"density"`` or ``"sample"`` (autoregressive).
        activation: activation class of the conditioners.
        base: ``"normal"`` or ``"diag"``.
        zero_init: zero-initialise each conditioner's last layer (default), so the flow starts
            as the identity; ``False`` leaves ``nn.Linear``'s default there (a random start).
            The random start was worse in the coupling form at the default (64, 64) (median
            test NLL 0.316 against 0.311 nats on two moons, 3.648 against 3.630 on
            checkerboard, ``benchmarks/convergence.py``) and, at (128, 128), on all six
            data-set/form pairs of ``benchmarks/splines.py`` (docs/benchmarks.md).
        invert_spline: which side each spline is on
            (:func:`~pyroflows.transforms.elementwise.spline`). ``True`` (the default): the
            data side, as in zuko and nflows, so ``log_prob`` evaluates the splines and sampling
            their analytic inverses. ``False``: the base side, as in Pyro (and in model files
            saved before this option, which load that way). On two moons (400 steps, six seeds)
            the data side gave a median test NLL of 0.315 / 0.323 (coupling / autoregressive)
            against 0.332 / 0.338, and zuko 0.323 / 0.319; level on wine and the digits.

    Example:
        >>> flow = NSF(3, num_layers=2, hidden_dims=(16,))
        >>> [type(t).__name__ for t in flow.transforms]
        ['Coupling', 'Permute', 'Coupling']
        >>> flow.log_prob(torch.randn(5, 3)).shape
        torch.Size([5])
        >>> NSF(2, num_layers=2, fast="sample").rsample_and_log_prob((4,))[1].shape
        torch.Size([4])
    """

    def __init__(
        self,
        input_dim: int,
        *,
        num_layers: int = 5,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        bins: int = 8,
        bound: float = 5.0,
        fast: str | None = None,
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
        zero_init: bool = True,
        invert_spline: bool = True,
    ) -> None:
        from ..transforms.linear import Permute

        if fast not in (None, "density", "sample"):
            raise ValueError(
                f"fast must be None (coupling), 'density' or 'sample' (autoregressive); got {fast!r}"
            )
        if fast is None and input_dim == 1 and not context_dim:
            raise ValueError(
                "NSF's coupling form needs input_dim >= 2 or a context (a 1-D coupling has "
                "nothing to condition on); use NSF(1, fast='density') for a 1-D density."
            )
        spline = dict(
            transformer="spline",
            bins=bins,
            bound=bound,
            invert_spline=invert_spline,
            activation=activation,
            zero_init=zero_init,
        )
        layers: list[Transform] = []
        if fast is None:
            keep = input_dim // 2
            for k in range(num_layers):
                if k and input_dim > 2:  # the kept half comes from the last transformed half
                    g = torch.Generator().manual_seed(k)
                    done = keep + torch.randperm(input_dim - keep, generator=g)
                    rest = torch.cat((done[keep:], torch.arange(keep)))
                    rest = rest[torch.randperm(len(rest), generator=g)]
                    layers.append(Permute(torch.cat((done[:keep], rest))))
                swap = input_dim == 2 and k % 2 == 1
                layers.append(
                    _coupling(
                        input_dim,
                        hidden_dims=hidden_dims,
                        context_dim=context_dim,
                        swap=swap,
                        **spline,
                    )
                )
        else:
            order: list[int] = []
            for k in range(num_layers):
                if k % 2 == 0:  # a seeded random order, then its reverse
                    g = torch.Generator().manual_seed(k)
                    order = torch.randperm(input_dim, generator=g).tolist()
                else:
                    order = order[::-1]
                layers.append(
                    _autoregressive(
                        input_dim,
                        hidden_dims=hidden_dims,
                        context_dim=context_dim,
                        fast=fast,
                        order=order,
                        **spline,
                    )
                )
        super().__init__(layers, event_shape=(input_dim,), context_dim=context_dim, base=base)
