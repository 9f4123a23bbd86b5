r"""Dequantisation of integer images and the logit pre-transform of RealNVP.

Uniform dequantisation [1, 2] turns an image :math:`x \in \{0, \dots, K-1\}^D` with :math:`K`
grey levels (:math:`K = 2^{\text{bits}}`, or any :math:`K`, e.g. 17 for the digits) into
:math:`y = (x + u) / K \in [0, 1)^D` with :math:`u \sim U[0, 1)^D`. For any density :math:`p` on
:math:`[0, 1]^D` the discrete model :math:`P(x) = \int_{[0,1)^D} p((x + u)/K)\, K^{-D}\, du`
obeys (Jensen)

.. math:: -\log P(x) \le \mathbb{E}_u[-\log p((x + u)/K)] + D \log K,

which :func:`~pyroflows.bits_per_dim` reports in bits per dimension.

The logit pre-transform [1] maps :math:`y \in [0, 1]` to
:math:`s = \operatorname{logit}(\alpha + (1 - 2\alpha) y)`, so a flow with a Gaussian base can
model data on an interval. :class:`Logit` is a flow transform placed at the data end of a flow,
so its Jacobian is part of ``log_prob`` automatically:
:math:`\log|\mathrm{d}y/\mathrm{d}s| = \log\sigma(s) + \log\sigma(-s) - \log(1 - 2\alpha)`.

References:
    [1] L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP. ICLR 2017.
    [2] L. Theis, A. van den Oord, M. Bethge. A note on the evaluation of generative models.
        ICLR 2016.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from .base import FlowTransform, is_validation_enabled
from .elementwise import sum_event

__all__ = ["Logit", "dequantize", "num_levels"]


def num_levels(n_bits: int | None = None, levels: int | None = None) -> int:
    """Number of grey levels :math:`K` from ``n_bits`` (:math:`K = 2^{n}`) or ``levels``.

    With neither given, 8-bit images (256 levels) are assumed.

    Example:
        >>> num_levels(), num_levels(n_bits=5), num_levels(levels=17)
        (256, 32, 17)
    """
    if levels is not None:
        if n_bits is not None and 2 ** int(n_bits) != int(levels):
            raise ValueError(
                f"n_bits={n_bits} means {2 ** int(n_bits)} levels but levels={levels}; "
                "pass only one of them (levels=17 for the digits)."
            )
        if int(levels) < 2:
            raise ValueError(f"levels must be at least 2; got {levels}")
        return int(levels)
    n = 8 if n_bits is None else int(n_bits)
    if n < 1:
        raise ValueError(f"n_bits must be at least 1; got {n_bits}")
    return 2**n


def dequantize(
    images: Tensor,
    *,
    n_bits: int | None = None,
    levels: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Uniform dequantisation ``y = (x + u) / K`` of integer images, ``u ~ U[0, 1)``.

    Draw fresh noise at every training step (e.g. ``lambda x: dequantize(x, levels=17)`` as a
    per-batch transform) so the flow cannot fit one noise draw.

    Args:
        images: integer levels in ``0 .. K-1``, any shape (integer or floating dtype).
        n_bits: bits per value, ``K = 2 ** n_bits`` (8 when neither this nor ``levels`` is set).
        levels: number of levels ``K`` when it is not a power of two (17 for the digits).
        generator: random generator of the noise.
        dtype: floating dtype of the result (default: that of floating ``images``, else the
            default dtype).

    Returns:
        Values in ``[0, 1)`` with the shape of ``images``.

    Example:
        >>> y = dequantize(torch.tensor([0, 16]), levels=17)
        >>> bool(((y >= torch.tensor([0, 16]) / 17) & (y < torch.tensor([1, 17]) / 17)).all())
        True
    """
    k = num_levels(n_bits, levels)
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor; got {type(images).__name__}")
    if dtype is None:
        dtype = images.dtype if images.is_floating_point() else torch.get_default_dtype()
    x = images.to(dtype)
    if x.numel() and (bool((x != x.round()).any()) or float(x.min()) < 0 or float(x.max()) > k - 1):
        raise ValueError(
            f"dequantize expects integer levels in 0..{k - 1}; got values in "
            f"[{float(x.min()):g}, {float(x.max()):g}]. Pass the raw integer images and the "
            "right n_bits/levels (e.g. levels=17 for the digits), not images scaled to [0, 1]."
        )
    u = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
    return (x + u) / k


class Logit(FlowTransform):
    r"""Logit pre-transform [1] at the data end of a flow: data :math:`y \in [0, 1]` <-> base
    :math:`s = \operatorname{logit}(\alpha + (1 - 2\alpha) y)`; cheap in both directions.

    ``_call`` (base -> data) is :math:`y = (\sigma(s) - \alpha) / (1 - 2\alpha)`, ``_inverse``
    (data -> base) the logit. The codomain is the interval
    :math:`[-\alpha, 1 - \alpha] / (1 - 2\alpha)` per entry, which contains :math:`[0, 1]`.

    Args:
        shape: event shape (vector ``(D,)`` or image ``(C, H, W)``).
        alpha: margin :math:`\alpha \in (0, 1/2)` that keeps the logit finite at 0 and 1.

    Example:
        >>> t = Logit((2,), alpha=0.05)
        >>> y = torch.tensor([0.0, 0.5])
        >>> t.inv(y)
        tensor([-2.9444,  0.0000])
        >>> torch.allclose(t(t.inv(y)), y)
        True
    """

    def __init__(self, shape: Sequence[int], *, alpha: float = 0.05) -> None:
        super().__init__(tuple(int(s) for s in shape))
        if not 0.0 < float(alpha) < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5); got {alpha} (RealNVP uses 0.05)")
        self.alpha = float(alpha)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        a, width = self.alpha, 1.0 - 2.0 * self.alpha
        box = constraints.interval(-a / width, (1.0 - a) / width)
        return constraints.independent(box, len(self.event_shape))

    def _const(self) -> float:
        return self.event_shape.numel() * math.log1p(-2.0 * self.alpha)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y = (torch.sigmoid(x) - self.alpha) / (1.0 - 2.0 * self.alpha)
        elem = F.logsigmoid(x) + F.logsigmoid(-x)
        return y, sum_event(elem, len(self.event_shape)) - self._const()

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1.0 - 2.0 * self.alpha) * y
        if is_validation_enabled() and y.numel() and not bool(((p > 0) & (p < 1)).all()):
            raise ValueError(
                f"Logit: data must lie in [0, 1]; got values in [{float(y.min()):g}, "
                f"{float(y.max()):g}]. Dequantise integer images first, e.g. "
                "pf.dequantize(images, levels=17), or scale the data to [0, 1]."
            )
        log_p, log_q = torch.log(p), torch.log1p(-p)
        return log_p - log_q, sum_event(log_p + log_q, len(self.event_shape)) - self._const()
