"""Masked autoregressive conditioner (MADE, Germain et al. 2015)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .defaults import default_hidden_dims
from .mlp import with_context

__all__ = ["MADE", "MaskedLinear"]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary mask.

    Args:
        mask: ``(out_features, in_features)`` tensor of 0/1; output ``i`` sees input ``j`` only
            where ``mask[i, j] == 1`` (kept as a buffer, so it follows ``.to()`` and is saved).
        bias: whether the layer has a bias (unmasked).

    Example:
        >>> layer = MaskedLinear(torch.tril(torch.ones(3, 3)))   # output i sees inputs <= i
        >>> jac = torch.autograd.functional.jacobian(layer, torch.randn(3))
        >>> (jac != 0).int()
        tensor([[1, 0, 0],
                [1, 1, 0],
                [1, 1, 1]], dtype=torch.int32)
    """

    def __init__(self, mask: Tensor, bias: bool = True) -> None:
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation [1]: outputs ``num_params`` parameters per
    input dimension, where the parameters of dimension :math:`i` depend only on the inputs that
    precede it in ``order`` and on the context.

    Each hidden unit gets a degree :math:`m` and sees the inputs of degree :math:`\le m`; an
    output of degree :math:`d` sees the hidden units of degree :math:`< d`. Without a context the
    hidden degrees run over :math:`1, \dots, D-1`. With a context they run over
    :math:`0, \dots, D-1`: units of degree 0 see the context only and feed every output, so the
    first dimension in the order (degree 1, which no input may reach) depends on the context too,
    and every other unit sees the context as well.

    The output has shape ``(..., num_params, input_dim)``. By default the last layer is
    zero-initialised, so that an autoregressive transform built on it starts as the identity;
    ``zero_init=False`` keeps PyTorch's default initialisation of that layer (a random start).

    Args:
        input_dim: number of autoregressive inputs :math:`D`.
        hidden_dims: sizes of the hidden layers (each at least ``input_dim - 1``, or
            ``input_dim`` with a context, for full connectivity; default:
            :func:`~pyroflows.nn.default_hidden_dims`).
        num_params: parameters per dimension (2 for an affine transformer).
        context_dim: size of the context vector (0: no context).
        order: a permutation of ``range(input_dim)`` giving the autoregressive order
            (default: natural order). Flows alternate orders instead of permuting data.
        activation: activation class.
        zero_init: zero-initialise the last layer (the identity start); ``False`` keeps
            ``nn.Linear``'s default initialisation there.

    References:
        [1] M. Germain, K. Gregor, I. Murray, H. Larochelle. MADE: Masked Autoencoder for
            Distribution Estimation. ICML 2015.

    Example:
        >>> made = MADE(3, hidden_dims=(8,), num_params=2, order=[2, 0, 1])
        >>> made(torch.randn(5, 3)).shape
        torch.Size([5, 2, 3])
        >>> made.degrees.tolist()
        [2, 3, 1]
        >>> cond = MADE(2, hidden_dims=(4,), num_params=1, context_dim=1)
        >>> cond.net[0].mask   # hidden degrees 0, 1, 0, 1; columns: x0, x1, context
        tensor([[0., 0., 1.],
                [1., 0., 1.],
                [0., 0., 1.],
                [1., 0., 1.]])
        >>> x = torch.randn(4, 3)
        >>> bool((made(x) == 0).all()), bool((MADE(3, (8,), zero_init=False)(x) == 0).all())
        (True, False)
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        num_params: int = 2,
        context_dim: int = 0,
        order: Sequence[int] | None = None,
        activation: type[nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ) -> None:
        hidden_dims = default_hidden_dims(hidden_dims)
        super().__init__()
        if order is None:
            order = range(input_dim)
        order_t = torch.as_tensor(list(order), dtype=torch.long)
        if sorted(order_t.tolist()) != list(range(input_dim)):
            raise ValueError(
                f"order must be a permutation of range({input_dim}); got {list(order)}"
            )
        self.input_dim, self.num_params, self.context_dim = input_dim, num_params, context_dim
        # degrees[j] = position of input j in the autoregressive order, 1-based
        degrees = torch.empty(input_dim, dtype=torch.long)
        degrees[order_t] = torch.arange(1, input_dim + 1)
        self.register_buffer("degrees", degrees)
        self.register_buffer("order", order_t)

        layers: list[nn.Module] = []
        dtype = torch.get_default_dtype()
        # the context has degree 0: every hidden unit sees it, and so does every output
        d_in = torch.cat([degrees, torch.zeros(context_dim, dtype=torch.long)])
        for h in hidden_dims:
            if context_dim:  # degree-0 units (context only) feed the first variable's outputs
                d_h = torch.arange(h) % input_dim
            else:
                d_h = torch.arange(h) % max(1, input_dim - 1) + 1
            layers += [MaskedLinear((d_h[:, None] >= d_in[None, :]).to(dtype)), activation()]
            d_in = d_h
        d_out = degrees.repeat(num_params)
        last = MaskedLinear((d_out[:, None] > d_in[None, :]).to(dtype))
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        out = self.net(with_context(x, context))
        return out.unflatten(-1, (self.num_params, self.input_dim))
