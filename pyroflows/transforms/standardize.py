r"""``Standardize``: a fixed elementwise affine map between standardised and original units.

A density fitted to standardised data :math:`z = (x - \mu) / \sigma` gives the density of the
original data by the change of variables

.. math:: \log p_x(x) = \log p_z\big((x - \mu) / \sigma\big) - \sum_j \log \sigma_j .

:class:`Standardize` is that map as the data-end layer of a flow (``_call``: :math:`z \mapsto
\mu + \sigma \odot z`, base -> data; ``_inverse``: :math:`x \mapsto (x - \mu) / \sigma`, data ->
base; both directions are one elementwise pass). :math:`\mu` and :math:`\sigma` are *buffers*:
they are saved with the flow and follow ``.to()``, but no optimiser ever changes them. Attach one
to a flow with :meth:`pyroflows.Flow.standardize_`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import FlowTransform

__all__ = ["Standardize"]


class Standardize(FlowTransform):
    r"""Fixed (non-learnable) elementwise affine map :math:`y = \mu + \sigma \odot x`.

    Args:
        mean: :math:`\mu`, broadcastable to ``event_shape`` (e.g. per-column means, shape
            ``(D,)``).
        std: :math:`\sigma` (finite, > 0), broadcastable to ``event_shape``.
        event_shape: shape of one event; default: the broadcast shape of ``mean`` and ``std``.

    The log-determinant of the base -> data map is :math:`\sum \log \sigma` over the event
    (constant). ``mean`` and ``std`` are stored as buffers (``mean``, ``std``) in their own
    floating dtype (the default dtype for integers and lists); ``.to()`` moves them with the flow.

    Example:
        >>> t = Standardize(torch.tensor([100.0, -5.0]), torch.tensor([10.0, 1.0]))
        >>> t.inv(torch.tensor([110.0, -5.0]))          # data -> base: (x - mean) / std
        tensor([1., 0.])
        >>> t(torch.tensor([1.0, 0.0]))                 # base -> data
        tensor([110.,  -5.])
        >>> round(float(t.log_abs_det_jacobian(torch.zeros(2), t(torch.zeros(2)))), 4)  # log 10
        2.3026
    """

    def __init__(
        self,
        mean: Tensor | Sequence[float] | float,
        std: Tensor | Sequence[float] | float,
        *,
        event_shape: Sequence[int] | None = None,
    ) -> None:
        mean_t, std_t = torch.as_tensor(mean), torch.as_tensor(std)
        dtype = torch.promote_types(mean_t.dtype, std_t.dtype)
        dtype = dtype if dtype.is_floating_point else torch.get_default_dtype()
        mean_t, std_t = mean_t.detach().to(dtype).clone(), std_t.detach().to(dtype).clone()
        try:
            shape = torch.broadcast_shapes(mean_t.shape, std_t.shape)
            if event_shape is not None:
                want = torch.Size(event_shape)
                if torch.broadcast_shapes(shape, want) != want:
                    raise RuntimeError
                shape = want
        except RuntimeError:
            want_text = "" if event_shape is None else f" {tuple(event_shape)}"
            raise ValueError(
                f"mean {tuple(mean_t.shape)} and std {tuple(std_t.shape)} must broadcast to the "
                f"event shape{want_text}; give one value per column, e.g. shape (D,) for rows of "
                "D columns."
            ) from None
        if not (bool(torch.isfinite(mean_t).all()) and bool(torch.isfinite(std_t).all())):
            raise ValueError("mean and std must be finite.")
        if not bool((std_t > 0).all()):
            raise ValueError(
                "std must be > 0 everywhere; a column with zero spread has no density (drop it)."
            )
        super().__init__(tuple(shape))
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def _log_det(self, v: Tensor) -> Tensor:
        n = len(self.event_shape)
        total = self.std.log().expand(self.event_shape).sum()
        return total.expand(v.shape[: v.dim() - n])

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return x * self.std + self.mean, self._log_det(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return (y - self.mean) / self.std, self._log_det(y)

    def _reference(self) -> Tensor:  # dtype/device checks against the buffers (no parameters)
        return self.std

    def extra_repr(self) -> str:
        return f"event_shape={tuple(self.event_shape)}"
