r"""Convolutional conditioner for image coupling layers (Glow's coupling network [1]).

The network maps an image :math:`x` of shape ``(..., C, H, W)`` (and an optional context vector
:math:`c`, broadcast over the pixels as extra input channels) to ``out_channels`` maps of the
same height and width:

.. math:: \text{conv}_{3\times3} \to \text{act} \to \text{conv}_{1\times1} \to \text{act}
          \to \dots \to \text{conv}_{3\times3}^{\,0},

where the last convolution is zero-initialised so that a coupling layer conditioned by it starts
as the identity [1]. All convolutions keep the height and width (zero padding).

References:
    [1] D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions.
        NeurIPS 2018.
    [2] L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP. ICLR 2017.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ConvNet", "with_context_channels"]


def with_context_channels(x: Tensor, context: Tensor | None) -> Tensor:
    """Append ``context`` (shape ``(..., K)``) to the channels of ``x`` (shape ``(..., C, H, W)``).

    Each context entry becomes a constant channel; batch dimensions broadcast.

    Example:
        >>> with_context_channels(torch.zeros(4, 2, 3, 3), torch.ones(1)).shape
        torch.Size([4, 3, 3, 3])
    """
    if context is None:
        return x
    batch = torch.broadcast_shapes(x.shape[:-3], context.shape[:-1])
    x = x.expand(*batch, *x.shape[-3:])
    maps = context[..., None, None].expand(*batch, context.shape[-1], *x.shape[-2:])
    return torch.cat((x, maps), dim=-3)


class ConvNet(nn.Module):
    r"""Convolutional network ``(x, context) -> h`` that keeps the image size; the conditioner
    of image coupling layers and of Glow's learned prior.

    The first hidden layer is a 3x3 convolution, further hidden layers are 1x1 convolutions, and
    the output layer is a zero-initialised 3x3 convolution [1]; with ``hidden_channels=()`` the
    network is that single output convolution (Glow's learned prior of a factored-out part).
    Inputs may have any number of batch dimensions, including none.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output.
        hidden_channels: channels of the hidden layers.
        context_dim: size of the context vector, appended to the input as constant channels.
        activation: activation *class*, instantiated once per hidden layer.
        zero_init: zero-initialise the output layer (identity start of the coupling).

    Example:
        >>> net = ConvNet(2, 4, hidden_channels=(16, 16), context_dim=3)
        >>> h = net(torch.randn(5, 2, 8, 8), torch.randn(5, 3))
        >>> h.shape, bool((h == 0).all())   # zero output at initialisation
        (torch.Size([5, 4, 8, 8]), True)
        >>> net(torch.randn(2, 8, 8), torch.randn(3)).shape   # no batch dimension
        torch.Size([4, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: Sequence[int] = (64, 64),
        *,
        context_dim: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"in_channels and out_channels must be positive; got {in_channels}, {out_channels}"
            )
        if any(int(h) < 1 for h in hidden_channels):
            raise ValueError(f"hidden_channels must be positive; got {tuple(hidden_channels)}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.context_dim = int(context_dim)
        layers: list[nn.Module] = []
        width = self.in_channels + self.context_dim
        for k, h in enumerate(hidden_channels):
            size = 3 if k == 0 else 1
            layers += [nn.Conv2d(width, int(h), size, padding=size // 2), activation()]
            width = int(h)
        last = nn.Conv2d(width, self.out_channels, 3, padding=1)
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Apply the network to ``x`` of shape ``(..., in_channels, H, W)``."""
        v = with_context_channels(x, context)
        batch = v.shape[:-3]
        h = self.net(v.reshape(-1, *v.shape[-3:]))
        return h.reshape(*batch, *h.shape[-3:])
