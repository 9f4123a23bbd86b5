r"""Elementwise transformers shared by coupling and autoregressive layers.

A transformer maps one coordinate given parameters produced by a conditioner:

* additive (NICE [1]):  :math:`y = x + t`, log-det 0;
* affine (RealNVP [2], MAF/IAF [3]): :math:`y = x\, e^{s} + t` with the soft-bounded log-scale
  :math:`s = b \tanh(\tilde s / b)`, log-det :math:`\sum s`.

Each function takes a tuple of ``num_params`` tensors shaped like ``x`` (as produced by
``conditioner_output.unbind(axis)``) and returns the output and the elementwise log-scale
(``None`` for volume-preserving transformers).

References:
    [1] L. Dinh, D. Krueger, Y. Bengio. NICE: Non-linear Independent Components Estimation. 2014.
    [2] L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP. ICLR 2017.
    [3] G. Papamakarios, T. Pavlakou, I. Murray. Masked Autoregressive Flow for Density
        Estimation. NeurIPS 2017.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["TRANSFORMERS", "additive", "affine", "soft_clamp", "sum_event"]


def soft_clamp(s: Tensor, bound: float | None) -> Tensor:
    r"""Smoothly bound ``s`` to :math:`(-b, b)`: :math:`b \tanh(s / b)` (identity when ``b`` is None).

    Example:
        >>> soft_clamp(torch.tensor([0.0, 100.0]), 3.0)
        tensor([0., 3.])
    """
    if bound is None:
        return s
    return torch.tanh(s / bound) * bound


def sum_event(t: Tensor, event_dims: int) -> Tensor:
    """Sum the rightmost ``event_dims`` dimensions."""
    return t.flatten(-event_dims).sum(-1) if event_dims else t


def affine(
    x: Tensor, params: tuple[Tensor, ...], *, inverse: bool = False, bound: float | None = 3.0
) -> tuple[Tensor, Tensor | None]:
    """Affine transformer; ``params = (shift, raw_log_scale)``.

    Example:
        >>> p = (torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.5]))
        >>> y, s = affine(torch.ones(2), p)
        >>> y
        tensor([2.0000, 3.6412])
        >>> x, _ = affine(y, p, inverse=True)
        >>> torch.allclose(x, torch.ones(2))
        True
    """
    shift, raw = params
    s = soft_clamp(raw, bound)
    if inverse:
        return (x - shift) * torch.exp(-s), s
    return x * torch.exp(s) + shift, s


def additive(
    x: Tensor, params: tuple[Tensor, ...], *, inverse: bool = False, bound: float | None = None
) -> tuple[Tensor, Tensor | None]:
    """Additive (volume-preserving) transformer; ``params = (shift,)``."""
    shift = params[0]
    return (x - shift if inverse else x + shift), None


Transformer = Callable[..., tuple[Tensor, Tensor | None]]

#: name -> (parameters per coordinate, transformer function)
TRANSFORMERS: dict[str, tuple[int, Transformer]] = {
    "affine": (2, affine),
    "additive": (1, additive),
}
