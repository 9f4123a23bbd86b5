r"""Bits per dimension of integer images under a continuous flow (the discrete-data bound).

A flow with density :math:`p` on :math:`[0, 1]^D`, fitted to dequantised images
:math:`y = (x + u) / K` (see :func:`~pyroflows.transforms.dequantize`), assigns the integer
image :math:`x` with :math:`K` levels per value the probability
:math:`P(x) = \int_{[0,1)^D} p((x + u) / K)\, K^{-D}\, du`, and by Jensen's inequality [1, 2]

.. math:: \text{bits/dim}(x) = \frac{-\log_2 P(x)}{D}
          \le \frac{\mathbb{E}_u[-\log p((x + u) / K)] + D \log K}{D \log 2}.

The right-hand side is what is reported (estimated with ``samples`` noise draws per image). A
logit pre-transform is part of the flow (:class:`~pyroflows.transforms.Logit`), so its Jacobian
is already inside :math:`\log p`. Reference point: a model that puts equal mass on every level
scores :math:`\log_2 K` (4.09 bits/dim for the 17-level digits, 8 for 8-bit images).

References:
    [1] L. Theis, A. van den Oord, M. Bethge. A note on the evaluation of generative models.
        ICLR 2016.
    [2] L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP. ICLR 2017.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..transforms.dequantize import dequantize, num_levels

__all__ = ["bits_per_dim", "bits_per_dim_loss"]


def _batch_bits(
    flow, x: Tensor, context: Tensor | None, k: int, generator, dtype: torch.dtype
) -> Tensor:
    """Bits/dim bound of each image of a batch, with one fresh dequantisation draw."""
    y = dequantize(x, levels=k, generator=generator, dtype=dtype)
    lp = flow.log_prob(y) if context is None else flow.log_prob(y, context)
    dims = y[0].numel()
    return (dims * math.log(k) - lp) / (dims * math.log(2))


def bits_per_dim_loss(*, n_bits: int | None = None, levels: int | None = None):
    """A training objective for :func:`~pyroflows.fit` on integer images: the mean bits/dim
    bound of a batch, with fresh dequantisation noise at every call.

    Pass the raw integer images as data; losses (training and validation) are then in bits/dim.

    Args:
        n_bits: bits per value (8 when neither this nor ``levels`` is set).
        levels: number of levels when not a power of two (17 for the digits).

    Returns:
        A callable ``(flow, images, context) -> scalar loss``.

    Example:
        >>> import pyroflows as pf
        >>> loss = bits_per_dim_loss(levels=17)
        >>> flow = pf.Glow(shape=(1, 8, 8), levels=2, steps_per_level=1, hidden_channels=8)
        >>> bool(loss(flow, torch.randint(0, 17, (4, 1, 8, 8)).float(), None) > 0)
        True
    """
    k = num_levels(n_bits, levels)

    def objective(flow, images: Tensor, context: Tensor | None = None) -> Tensor:
        return _batch_bits(flow, images, context, k, None, images.dtype).mean()

    return objective


def bits_per_dim(
    flow,
    images: Tensor,
    *,
    n_bits: int | None = None,
    levels: int | None = None,
    context: Tensor | None = None,
    samples: int = 1,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
) -> float | Tensor:
    r"""Upper bound on the bits per dimension of integer images under a flow on :math:`[0, 1]^D`.

    Runs without gradients and leaves the flow's mode untouched (call ``flow.eval()`` first to
    evaluate an untrained flow without initialising its ActNorm layers from these images).

    Args:
        flow: a :class:`~pyroflows.Flow` (or any object with ``log_prob(y[, context])``) whose
            data are dequantised images in :math:`[0, 1]^D`.
        images: integer levels ``0 .. K-1``, shape ``(N, *event_shape)``.
        n_bits: bits per value, :math:`K = 2^{n}` (8 when neither this nor ``levels`` is set).
        levels: number of levels :math:`K` when not a power of two (17 for the digits).
        context: context for a conditional flow, one row per image or broadcastable.
        samples: dequantisation draws averaged per image.
        batch_size: images per ``log_prob`` call.
        generator: random generator of the dequantisation noise (reproducible figures).
        reduction: ``"mean"`` (a float over all images) or ``"none"`` (a tensor, one per image).

    Example:
        >>> import math, pyroflows as pf
        >>> flow = pf.Flow([], event_shape=(1, 8, 8))   # the identity: a standard normal
        >>> images = torch.randint(0, 17, (2000, 1, 8, 8))
        >>> bpd = bits_per_dim(flow, images, levels=17, generator=torch.Generator().manual_seed(0))
        >>> exact = (0.5 * math.log(2 * math.pi) + 1 / 6 + math.log(17)) / math.log(2)
        >>> round(bpd, 2), round(exact, 2)
        (5.65, 5.65)
    """
    k = num_levels(n_bits, levels)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
    if int(samples) < 1 or int(batch_size) < 1:
        raise ValueError(f"samples and batch_size must be positive; got {samples}, {batch_size}")
    if not isinstance(images, Tensor) or images.dim() < 1 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty tensor of shape (N, *event_shape)")
    event_shape = tuple(getattr(flow, "event_shape", images.shape[1:]))
    if tuple(images.shape[1:]) != event_shape:
        raise ValueError(
            f"images have shape {tuple(images.shape)} but the flow models events of shape "
            f"{event_shape}; pass a tensor of shape (N, {', '.join(map(str, event_shape))})."
        )
    ref = next(iter(flow.parameters()), None) if hasattr(flow, "parameters") else None
    if ref is None and hasattr(flow, "buffers"):
        ref = next(iter(flow.buffers()), None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else images.device
    if context is not None and context.dim() > 1 and context.shape[0] == images.shape[0]:
        rows = context
    else:
        rows = None
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], int(batch_size)):
            x = images[i : i + int(batch_size)].to(device)
            ctx = rows[i : i + int(batch_size)] if rows is not None else context
            draws = [_batch_bits(flow, x, ctx, k, generator, dtype) for _ in range(int(samples))]
            out.append(torch.stack(draws).mean(0))
    bpd = torch.cat(out)
    return float(bpd.mean()) if reduction == "mean" else bpd
