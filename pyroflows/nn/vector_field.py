r"""Time-conditioned vector field :math:`f(t, z, c)`, the conditioner of continuous flows.

Each layer is a *concat-squash* layer [1]: an affine map of the hidden state whose output is
gated and shifted by the time,

.. math:: h' = (W h + b) \odot 2\sigma(a\, t + g) + d\, t,

so time enters every layer. The gate is written :math:`2\sigma(\cdot)` so that it equals 1 when
its parameters :math:`a, g` are zero; with :math:`a = g = d = 0` a layer is the plain affine map
:math:`W h + b`. The context :math:`c` (if any) is concatenated to :math:`z` at the input.

References:
    [1] W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud. FFJORD:
        Free-form Continuous Dynamics for Scalable Reversible Generative Models. ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from .defaults import default_hidden_dims
from .mlp import with_context

__all__ = ["ConcatSquashLinear", "VectorField"]


class ConcatSquashLinear(nn.Module):
    r"""Affine layer gated and shifted by time: :math:`(W h + b) \odot 2\sigma(a t + g) + d t`.

    Args:
        in_features: size of the input ``h``.
        out_features: size of the output.

    Example:
        >>> layer = ConcatSquashLinear(3, 2)
        >>> layer(torch.tensor(0.5), torch.randn(4, 3)).shape
        torch.Size([4, 2])
        >>> with torch.no_grad():   # zero time parameters: the plain affine map
        ...     for p in (layer.gate_weight, layer.gate_bias, layer.time_weight):
        ...         _ = p.zero_()
        >>> h = torch.randn(4, 3)
        >>> torch.allclose(layer(torch.tensor(0.7), h), layer.linear(h))
        True
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        # like nn.Linear(1, out_features): U(-1, 1), so time matters from the start [1]
        self.gate_weight = nn.Parameter(torch.empty(out_features).uniform_(-1, 1))
        self.gate_bias = nn.Parameter(torch.empty(out_features).uniform_(-1, 1))
        self.time_weight = nn.Parameter(torch.empty(out_features).uniform_(-1, 1))

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        """Apply the layer; ``t`` has shape ``()`` or the batch shape of ``h``."""
        t = t.unsqueeze(-1)
        gate = 2 * torch.sigmoid(t * self.gate_weight + self.gate_bias)
        return self.linear(h) * gate + t * self.time_weight


class VectorField(nn.Module):
    r"""Time-conditioned MLP :math:`f(t, z, c) \in \mathbb{R}^D` for continuous flows.

    The velocity :math:`dz/dt = f(t, z, c)` of a :class:`~pyroflows.transforms.ContinuousFlow`
    (trained by maximum likelihood or by flow matching). A smooth activation keeps the ODE
    solver's step control effective; the last layer starts at zero, so the flow starts as the
    identity.

    Args:
        input_dim: dimension :math:`D` of the state :math:`z`.
        hidden_dims: hidden sizes; ``()`` gives one concat-squash layer, which is affine in
            :math:`z` (handy to build a linear field :math:`f(z) = A z`).
        context_dim: size of the context vector (0: none).
        activation: activation *class*, instantiated once per hidden layer.
        zero_init: zero-initialise the last layer (identity flow at initialisation).

    Example:
        >>> f = VectorField(2, hidden_dims=(16, 16), context_dim=3)
        >>> f(torch.tensor(0.5), torch.randn(5, 2), torch.randn(5, 3)).shape
        torch.Size([5, 2])
        >>> f(torch.rand(5), torch.randn(5, 2), torch.randn(3)).shape   # one time per row
        torch.Size([5, 2])
        >>> bool((f(torch.tensor(0.0), torch.randn(1, 2), torch.randn(1, 3)) == 0).all())
        True
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        context_dim: int = 0,
        activation: type[nn.Module] = nn.SiLU,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if int(input_dim) < 1:
            raise ValueError(f"input_dim must be a positive integer; got {input_dim!r}.")
        dims = [
            int(input_dim) + int(context_dim),
            *default_hidden_dims(hidden_dims),
            int(input_dim),
        ]
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b) for a, b in pairwise(dims))
        self.activations = nn.ModuleList(activation() for _ in dims[2:])
        self.input_dim, self.context_dim = int(input_dim), int(context_dim)
        if zero_init:
            last = self.layers[-1]
            for p in (last.linear.weight, last.linear.bias, last.time_weight):
                nn.init.zeros_(p)

    def forward(self, t: Tensor, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Velocity at time ``t`` (shape ``()`` or ``z``'s batch shape) and state ``z``."""
        if context is not None:
            z = with_context(z, context)
            if t.dim():
                t = t.expand(z.shape[:-1])
        h = z
        for k, layer in enumerate(self.layers):
            h = layer(t, h)
            if k < len(self.activations):
                h = self.activations[k](h)
        return h
