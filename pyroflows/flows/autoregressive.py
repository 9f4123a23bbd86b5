"""Autoregressive presets: ``MAF`` (fast density) and ``IAF`` (fast sampling), one transform."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch  # noqa: F401  (doctests)
from torch import nn

from ..transforms.autoregressive import ConditionalMaskedAutoregressive, MaskedAutoregressive
from .base import Flow, _layer

__all__ = ["IAF", "MAF"]


#: one masked autoregressive layer, conditional when ``context_dim`` > 0
_autoregressive = functools.partial(_layer, MaskedAutoregressive, ConditionalMaskedAutoregressive)


class MAF(Flow):
    r"""Masked autoregressive flow [Papamakarios et al. 2017]: density in one pass per layer,
    sampling sequential. Layers alternate natural and reversed autoregressive orders.

    ``zero_init=True`` (the default) zero-initialises the last layer of every MADE, so the flow
    starts as the identity; ``False`` leaves it at ``nn.Linear``'s default initialisation (a
    random start, as zuko and Pyro do). In the plain-loop benchmark at the default (64, 64)
    MADEs, 5 layers, 1000 steps, the random start converged faster but did not end better:
    median test NLL 0.477 against 0.410 nats on two moons, 3.756 against 3.782 on checkerboard,
    both inside the seeds' spread (docs/benchmarks.md, "The last layer's initialisation, per
    family"), so MAF keeps the identity start.

    ``invert_affine=True`` (the default) puts each affine map on the data side: ``log_prob``
    computes :math:`z = y\,e^{s} + t` per layer, the shift after the scaling, as zuko's and
    nflows' MAF do; ``False`` is the MAF paper's side, :math:`z = (y - t)\,e^{-s}` (Pyro's, and
    pyroflows' before the option: model files written then load with it). In the plain-loop
    benchmark at (64, 64) MADEs, 5 layers, 1000 steps, ten seeds, the data side reached a median
    test NLL of 0.379 against 0.452 nats on two moons (better on 9 of 10 seeds) and 3.777
    against 3.780 on checkerboard (level, 4 of 10) (``benchmarks/convergence.py``, variant
    ``shift-after``; docs/benchmarks.md, "Which side the affine map is on"). :class:`IAF`
    keeps the paper's side, which the variational-inference tables were measured with.

    Example:
        >>> flow = MAF(3, num_layers=2, hidden_dims=(16,))
        >>> flow.log_prob(torch.randn(5, 3)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        input_dim: int,
        *,
        num_layers: int = 5,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        transformer: str = "affine",
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
        fast: str = "density",
        zero_init: bool = True,
        invert_affine: bool = True,
    ) -> None:
        layers = []
        for k in range(num_layers):
            order = list(range(input_dim)) if k % 2 == 0 else list(range(input_dim - 1, -1, -1))
            layers.append(
                _autoregressive(
                    input_dim,
                    hidden_dims=hidden_dims,
                    context_dim=context_dim,
                    fast=fast,
                    transformer=transformer,
                    order=order,
                    activation=activation,
                    zero_init=zero_init,
                    invert_affine=invert_affine,
                )
            )
        super().__init__(layers, event_shape=(input_dim,), context_dim=context_dim, base=base)


class IAF(MAF):
    """Inverse autoregressive flow [Kingma et al. 2016]: sampling (and sampling with log-density)
    in one pass per layer; scoring external data is sequential. The flow of choice for guides,
    so it starts as the identity (``zero_init=True``, as in :class:`MAF`).

    Example:
        >>> flow = IAF(3, num_layers=2, hidden_dims=(16,))
        >>> x, lp = flow.rsample_and_log_prob((4,))
        >>> x.shape, lp.shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    def __init__(
        self,
        input_dim: int,
        *,
        num_layers: int = 5,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        transformer: str = "affine",
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
        zero_init: bool = True,
    ) -> None:
        super().__init__(
            input_dim,
            num_layers=num_layers,
            hidden_dims=hidden_dims,
            context_dim=context_dim,
            transformer=transformer,
            activation=activation,
            base=base,
            fast="sample",
            zero_init=zero_init,
            invert_affine=False,
        )
