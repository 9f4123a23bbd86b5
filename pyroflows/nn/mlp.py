"""Dense conditioner: a multilayer perceptron with an optional context input."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from .defaults import default_hidden_dims

__all__ = ["MLP", "with_context"]


def with_context(x: Tensor, context: Tensor | None) -> Tensor:
    """Concatenate ``context`` to ``x`` along the last axis, broadcasting batch dimensions.

    Example:
        >>> with_context(torch.zeros(4, 3, 2), torch.ones(3, 1)).shape
        torch.Size([4, 3, 3])
    """
    if context is None:
        return x
    batch = torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
    x = x.expand(*batch, x.shape[-1])
    context = context.expand(*batch, context.shape[-1])
    return torch.cat((x, context), dim=-1)


class MLP(nn.Sequential):
    r"""Fully connected network :math:`(x, c) \mapsto h`, the dense conditioner of coupling flows.

    The context ``c`` (if any) is concatenated to the input. By default the last layer is
    initialised to zero so that a transform conditioned by this network starts as the identity;
    ``zero_init=False`` keeps PyTorch's default initialisation of that layer.

    Args:
        in_features: size of the input ``x``.
        out_features: size of the output.
        hidden_dims: sizes of the hidden layers (default:
            :func:`~pyroflows.nn.default_hidden_dims`).
        context_dim: size of the context vector (0: no context).
        activation: activation *class*, instantiated once per layer.
        zero_init: zero-initialise the last layer (``False``: ``nn.Linear``'s default).

    Example:
        >>> net = MLP(3, 4, hidden_dims=(16, 16), context_dim=2)
        >>> net(torch.randn(10, 3), torch.randn(10, 2)).shape
        torch.Size([10, 4])
        >>> net(torch.randn(1, 3), torch.randn(1, 2)).abs().sum().item()
        0.0
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        context_dim: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ) -> None:
        dims = [in_features + context_dim, *default_hidden_dims(hidden_dims)]
        layers: list[nn.Module] = []
        for a, b in pairwise(dims):
            layers += [nn.Linear(a, b), activation()]
        layers.append(nn.Linear(dims[-1], out_features))
        super().__init__(*layers)
        self.in_features, self.out_features, self.context_dim = (
            in_features,
            out_features,
            context_dim,
        )
        if zero_init:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(with_context(x, context))
