r"""Linear and elementwise layers: permutations, learnable scaling, ActNorm, LU linear maps.

All of them act along the *feature* axis: the last axis of a vector, or the channel axis of an
image (event shape ``(C, H, W)``), where the same map is applied at every pixel and the
log-determinant is multiplied by :math:`H W` (Glow's 1x1 convolution is :class:`LULinear` on
an image shape).

References:
    [1] D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions.
        NeurIPS 2018.
    [2] L. Dinh, D. Krueger, Y. Bengio. NICE: Non-linear Independent Components Estimation. 2014.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import FlowTransform

__all__ = ["ActNorm", "ElementwiseAffine", "LULinear", "Permute", "Reverse", "actnorm", "lu_linear"]


class _FeatureAxis(FlowTransform):
    """Helpers for layers acting on the feature axis of a vector or an image."""

    def __init__(self, features: int, event_shape: Sequence[int] | None) -> None:
        shape = tuple(event_shape) if event_shape is not None else (features,)
        if len(shape) not in (1, 3) or shape[0 if len(shape) == 3 else -1] != features:
            raise ValueError(
                f"event_shape must be ({features},) or ({features}, H, W); got {shape}"
            )
        super().__init__(shape)
        self.features = features
        self._pixels = 1 if len(shape) == 1 else shape[1] * shape[2]

    def _view(self, p: Tensor) -> Tensor:
        """A per-feature parameter shaped to broadcast against an event."""
        return p if len(self.event_shape) == 1 else p[:, None, None]

    def _batch_zeros(self, v: Tensor) -> Tensor:
        return v.new_zeros(v.shape[: v.dim() - len(self.event_shape)])


class Permute(_FeatureAxis):
    """Fixed permutation of the features: ``y = x[..., perm]``; volume preserving.

    Example:
        >>> t = Permute([2, 0, 1])
        >>> t(torch.tensor([10.0, 11.0, 12.0]))
        tensor([12., 10., 11.])
        >>> t.inv(t(torch.tensor([10.0, 11.0, 12.0])))
        tensor([10., 11., 12.])
    """

    def __init__(self, perm: Sequence[int] | Tensor, *, event_shape: Sequence[int] | None = None):
        perm_t = torch.as_tensor(perm, dtype=torch.long)
        n = perm_t.numel()
        if sorted(perm_t.tolist()) != list(range(n)):
            raise ValueError(f"perm must be a permutation of range({n}); got {perm_t.tolist()}")
        super().__init__(n, event_shape)
        self.register_buffer("perm", perm_t)
        self.register_buffer("inv_perm", torch.argsort(perm_t))

    def _take(self, v: Tensor, idx: Tensor) -> Tensor:
        return v.index_select(v.dim() - len(self.event_shape), idx)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self._take(x, self.perm), self._batch_zeros(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self._take(y, self.inv_perm), self._batch_zeros(y)


class Reverse(Permute):
    """Reverse the order of the features.

    Example:
        >>> Reverse(3)(torch.tensor([1.0, 2.0, 3.0]))
        tensor([3., 2., 1.])
    """

    def __init__(self, features: int, *, event_shape: Sequence[int] | None = None) -> None:
        super().__init__(torch.arange(features - 1, -1, -1), event_shape=event_shape)


class ElementwiseAffine(_FeatureAxis):
    r"""Learnable per-feature affine map :math:`y = x\,e^{s} + b` (NICE's scaling layer when
    ``shift=False``); log-det :math:`\sum s` (times :math:`HW` on images).

    Example:
        >>> t = ElementwiseAffine(2)
        >>> with torch.no_grad():
        ...     _ = t.log_scale.fill_(1.0)
        >>> t.log_abs_det_jacobian(torch.zeros(2), t(torch.zeros(2)))
        tensor(2., grad_fn=<...>)
    """

    def __init__(
        self, features: int, *, shift: bool = True, event_shape: Sequence[int] | None = None
    ):
        super().__init__(features, event_shape)
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.shift = nn.Parameter(torch.zeros(features)) if shift else None

    def _log_det(self, v: Tensor) -> Tensor:
        return (self.log_scale.sum() * self._pixels).expand(
            v.shape[: v.dim() - len(self.event_shape)]
        )

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y = x * self._view(self.log_scale).exp()
        if self.shift is not None:
            y = y + self._view(self.shift)
        return y, self._log_det(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if self.shift is not None:
            y = y - self._view(self.shift)
        return y * self._view(-self.log_scale).exp(), self._log_det(y)


class ActNorm(ElementwiseAffine):
    r"""Activation normalisation [1]: :class:`ElementwiseAffine` initialised from the first batch
    of *data* so that the base side has zero mean and unit variance per feature.

    The initialisation runs on the first call in the density direction (data -> base) while in
    training mode. Features whose spread cannot be estimated (a batch of one vector, or a constant
    feature) keep scale 1 and are only centred, so a first batch of one gives finite values.

    Example:
        >>> t = ActNorm(2)
        >>> x = t.inv(torch.tensor([[1.0, 3.0], [3.0, 7.0]]))
        >>> x
        tensor([[-1., -1.],
                [ 1.,  1.]], grad_fn=<...>)
        >>> ActNorm(2).inv(torch.tensor([[5.0, 6.0]]))   # batch of one: centred, finite
        tensor([[0., 0.]], grad_fn=<...>)
    """

    def __init__(
        self, features: int, *, event_shape: Sequence[int] | None = None, eps: float = 1e-6
    ):
        super().__init__(features, shift=True, event_shape=event_shape)
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, y: Tensor) -> None:
        axis = y.dim() - len(self.event_shape)
        flat = y.movedim(axis, -1).reshape(-1, self.features)
        mean = flat.mean(0)
        if flat.shape[0] > 1:
            std = flat.std(0, unbiased=False)
            std = torch.where(std > self.eps, std, torch.ones_like(std))
        else:
            std = torch.ones_like(mean)
        self.shift.copy_(mean)
        self.log_scale.copy_(std.log())

    def _mark(self, y: Tensor, data: bool) -> None:
        if not bool(self.initialized):
            if data and self.training:
                if not y.numel():  # an empty batch says nothing: wait for data
                    return
                self._initialize(y)
            self.initialized.fill_(True)

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        self._mark(x, data=False)
        return super().forward_and_log_det(x, context)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        self._mark(y, data=True)
        return super().inverse_and_log_det(y, context)


class LULinear(_FeatureAxis):
    r"""Invertible linear map :math:`y = W x` with :math:`W = P L (U + \mathrm{diag}(\sigma e^{s}))`
    (Glow's LU parameterisation [1]); log-det :math:`\sum s`. On an image shape it is the
    invertible 1x1 convolution. Both directions cost :math:`O(D^2)` per point (the inverse applies
    :math:`W^{-1}` from two :math:`O(D^3)` triangular solves per call). Initialised to a random rotation.

    Example:
        >>> t = LULinear(3)
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True
    """

    def __init__(self, features: int, *, event_shape: Sequence[int] | None = None) -> None:
        super().__init__(features, event_shape)
        q = torch.linalg.qr(torch.randn(features, features, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        dtype = torch.get_default_dtype()  # factors are drawn in float64, stored like any layer
        self.register_buffer("permutation", p.to(dtype))
        self.register_buffer("diag_sign", torch.sign(diag).to(dtype))
        self.register_buffer("l_mask", torch.tril(torch.ones(features, features), -1))
        self.lower = nn.Parameter(lower.to(dtype))
        self.upper = nn.Parameter(torch.triu(upper, 1).to(dtype))
        self.log_diag = nn.Parameter(diag.abs().log().to(dtype))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.features, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.l_mask + eye
        upper = self.upper * self.l_mask.T + torch.diag(self.diag_sign * self.log_diag.exp())
        return lower, upper

    def weight(self) -> Tensor:
        """The matrix :math:`W`."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def _rows(self, v: Tensor) -> Tensor:
        return v if len(self.event_shape) == 1 else v.movedim(-3, -1)

    def _unrows(self, v: Tensor) -> Tensor:
        return v if len(self.event_shape) == 1 else v.movedim(-1, -3)

    def _log_det(self, v: Tensor) -> Tensor:
        return (self.log_diag.sum() * self._pixels).expand(
            v.shape[: v.dim() - len(self.event_shape)]
        )

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y = self._rows(x) @ self.weight().T
        return self._unrows(y), self._log_det(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        # W^-1 = U^-1 L^-1 P^T from two small (C x C) triangular solves, then one product over
        # the batch (solving over every row/pixel instead is ~2.7x slower on images)
        l_inv_pt = torch.linalg.solve_triangular(
            lower, self.permutation.T, upper=False, unitriangular=True
        )
        w_inv = torch.linalg.solve_triangular(upper, l_inv_pt, upper=True)
        return self._unrows(self._rows(y) @ w_inv.T), self._log_det(y)


def actnorm(input_dim: int) -> ActNorm:
    """ActNorm layer, Pyro-helper style: the first data batch it sees in training mode sets its
    shift and scale so that the base side has zero mean and unit variance per feature.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = actnorm(2)
        >>> data = torch.randn(100, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([10.0, -2.0])
        >>> z = t.inv(data)
        >>> z.mean(0).abs().max().item() < 1e-5   # zero mean per feature
        True
        >>> z.std(0, unbiased=False).sub(1).abs().max().item() < 1e-5   # unit variance
        True
    """
    return ActNorm(input_dim)


def lu_linear(input_dim: int) -> LULinear:
    """LU-parameterised invertible linear layer, Pyro-helper style: its log-det is the sum of
    the log-diagonal of ``U``, ``log|det W|`` without a determinant.

    Example:
        >>> t = lu_linear(3)
        >>> x = torch.randn(4, 3)
        >>> with torch.no_grad():
        ...     ld = t.log_abs_det_jacobian(x, t(x))
        ...     ref = torch.linalg.slogdet(t.weight()).logabsdet
        >>> ld.shape, torch.allclose(ld, ref.expand(4), atol=1e-5)
        (torch.Size([4]), True)
    """
    return LULinear(input_dim)
