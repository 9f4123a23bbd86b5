"""The planar-flow preset ``Planar`` (Rezende & Mohamed 2015)."""

from __future__ import annotations

from collections.abc import Sequence

import torch  # noqa: F401  (doctests)

from ..transforms.planar import ConditionalPlanarTransform, PlanarTransform
from .base import Flow

__all__ = ["Planar"]


class Planar(Flow):
    """Planar flow [Rezende & Mohamed 2015]: fast sampling; scoring data uses the exact
    scalar-root inverse (Pyro's planar flow cannot score data at all).

    Example:
        >>> flow = Planar(2, num_layers=4)
        >>> flow.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        input_dim: int,
        *,
        num_layers: int = 16,
        hidden_dims: Sequence[int] | None = None,
        context_dim: int = 0,
        base: str = "normal",
    ) -> None:
        if context_dim:
            layers = [
                ConditionalPlanarTransform(
                    input_dim, context_dim=context_dim, hidden_dims=hidden_dims
                )
                for _ in range(num_layers)
            ]
        else:
            layers = [PlanarTransform(input_dim) for _ in range(num_layers)]
        super().__init__(layers, event_shape=(input_dim,), context_dim=context_dim, base=base)
