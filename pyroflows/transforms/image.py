r"""Image-shaped transforms (event shape ``(C, H, W)``): squeeze, reshape, and coupling with
channel and checkerboard masks (the multi-scale wrapper is in :mod:`.multiscale`).

Names follow the papers, which describe the *density* direction (data -> base): ``Squeeze``
turns a data-side ``(C, H, W)`` image into a base-side ``(4C, H/2, W/2)`` one in ``_inverse``
and back in ``_call`` (base -> data), as Pyro's direction convention requires. ActNorm and the
invertible 1x1 convolution are :class:`~pyroflows.transforms.ActNorm` and
:class:`~pyroflows.transforms.LULinear` with ``event_shape=(C, H, W)``.

Image couplings are :class:`~pyroflows.transforms.Coupling` subclasses that override only the
split, the merge and the parameter layout, so the coupling math lives in one place:

* channel mask [1, 2]: the identity part is one half of the channels, the conditioner
  (:class:`~pyroflows.nn.ConvNet`) sees it and parameterises the other half;
* checkerboard mask [1]: with :math:`b_{ij} = (i + j) \bmod 2`, the conditioner sees
  :math:`b \odot x` and its outputs are multiplied by :math:`1 - b`, so the transformer
  (additive, affine or spline) has zero parameters (the identity) on the pixels it sees; those
  pixels are passed through exactly and the log-det sums over the others only.

References:
    [1] L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP. ICLR 2017.
    [2] D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions.
        NeurIPS 2018.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn.conv import ConvNet
from .base import ConditionalFlowTransform, FlowTransform
from .coupling import Coupling
from .elementwise import get_transformer, sum_event

__all__ = [
    "ConditionalImageCoupling",
    "ImageCoupling",
    "Reshape",
    "Squeeze",
    "conditional_image_coupling",
    "depth_to_space",
    "image_coupling",
    "image_shape",
    "space_to_depth",
]


def image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate and return an image event shape ``(C, H, W)``.

    Example:
        >>> image_shape([1, 8, 8])
        (1, 8, 8)
    """
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence (C, H, W); got {shape!r}") from None
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"shape must be (C, H, W) with positive sizes; got {tuple(shape)}")
    return out  # type: ignore[return-value]


def space_to_depth(v: Tensor, factor: int = 2) -> Tensor:
    r"""``(..., C, H, W) -> (..., C f^2, H/f, W/f)``: pixel :math:`(f i + a, f j + b)` of channel
    :math:`c` goes to channel :math:`c f^2 + a f + b` at :math:`(i, j)`, so each input channel
    becomes a contiguous block of output channels.

    Example:
        >>> space_to_depth(torch.arange(4.0).reshape(1, 2, 2)).flatten()
        tensor([0., 1., 2., 3.])
    """
    *batch, c, h, w = v.shape
    v = v.reshape(*batch, c, h // factor, factor, w // factor, factor)
    n = len(batch)
    v = v.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return v.reshape(*batch, c * factor * factor, h // factor, w // factor)


def depth_to_space(v: Tensor, factor: int = 2) -> Tensor:
    """Inverse of :func:`space_to_depth`: ``(..., C f^2, H, W) -> (..., C, H f, W f)``.

    Example:
        >>> x = torch.randn(3, 2, 4, 6)
        >>> torch.equal(depth_to_space(space_to_depth(x)), x)
        True
    """
    *batch, cf, h, w = v.shape
    c = cf // (factor * factor)
    v = v.reshape(*batch, c, factor, factor, h, w)
    n = len(batch)
    v = v.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return v.reshape(*batch, c, h * factor, w * factor)


class _Reshuffle(FlowTransform):
    """A fixed rearrangement of an event's entries between ``base_shape`` and ``data_shape``;
    volume preserving (log-det 0), no parameters."""

    def __init__(self, base_shape: Sequence[int], *, data_shape: Sequence[int]) -> None:
        super().__init__(tuple(base_shape))
        self.output_shape = torch.Size(data_shape)
        if self.output_shape.numel() != self.event_shape.numel():
            raise ValueError(
                f"base shape {tuple(self.event_shape)} and data shape "
                f"{tuple(self.output_shape)} must hold the same number of entries"
            )

    def _swap_event(self, shape: Sequence[int], old: torch.Size, new: torch.Size) -> torch.Size:
        shape = torch.Size(shape)
        n = len(old)
        if len(shape) < n or shape[len(shape) - n :] != old:
            raise ValueError(
                f"{self._layer_name()}: expected a shape ending in {tuple(old)}; got {tuple(shape)}"
            )
        return shape[: len(shape) - n] + new

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        """Base-side shape -> data-side shape."""
        return self._swap_event(shape, self.event_shape, self.output_shape)

    def inverse_shape(self, shape: Sequence[int]) -> torch.Size:
        """Data-side shape -> base-side shape."""
        return self._swap_event(shape, self.output_shape, self.event_shape)

    def _zeros(self, v: Tensor) -> Tensor:
        return v.new_zeros(v.shape[: v.dim() - 3])


class Squeeze(_Reshuffle):
    r"""Squeeze [1]: space to depth on the data side, ``(C, H, W) -> (C f^2, H/f, W/f)``.

    ``_inverse`` (data -> base) is :func:`space_to_depth`, ``_call`` (base -> data) is
    :func:`depth_to_space`; both are free (a reshape and a permute) and the log-det is 0.
    ``event_shape`` is the base-side (squeezed) shape and ``output_shape`` the data-side one.

    Args:
        shape: data-side image shape ``(C, H, W)``; ``H`` and ``W`` divisible by ``factor``.
        factor: side of the squeezed pixel blocks.

    Example:
        >>> t = Squeeze((1, 4, 4))
        >>> x = torch.randn(5, 1, 4, 4)
        >>> t.inv(x).shape, t.forward_shape((5, 4, 2, 2))
        (torch.Size([5, 4, 2, 2]), torch.Size([5, 1, 4, 4]))
        >>> torch.equal(t(t.inv(x)), x)
        True
    """

    def __init__(self, shape: Sequence[int], *, factor: int = 2) -> None:
        c, h, w = image_shape(shape)
        if int(factor) < 1 or h % factor or w % factor:
            raise ValueError(
                f"Squeeze: height and width ({h}, {w}) must be divisible by factor={factor}; "
                "crop or pad the images, or use fewer levels."
            )
        self.factor = int(factor)
        super().__init__((c * factor * factor, h // factor, w // factor), data_shape=(c, h, w))

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return depth_to_space(x, self.factor), self._zeros(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return space_to_depth(y, self.factor), self._zeros(y)


class Reshape(_Reshuffle):
    """Reshape an event from ``base_shape`` (base side) to ``data_shape`` (data side); free in both
    directions, log-det 0. Multi-scale flows end with one so that their base has the data's shape.

    Example:
        >>> t = Reshape((1, 4, 4), data_shape=(16, 1, 1))
        >>> t(torch.zeros(3, 1, 4, 4)).shape, t.inv(torch.zeros(16, 1, 1)).shape
        (torch.Size([3, 16, 1, 1]), torch.Size([1, 4, 4]))
    """

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        batch = x.shape[: x.dim() - len(self.event_shape)]
        return x.reshape(*batch, *self.output_shape), x.new_zeros(batch)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        batch = y.shape[: y.dim() - len(self.output_shape)]
        return y.reshape(*batch, *self.event_shape), y.new_zeros(batch)


class ImageCoupling(Coupling):
    r"""Coupling layer on images with a channel or checkerboard mask and a convolutional
    conditioner [1, 2]; fast in both directions (one conditioner pass each way).

    The conditioner's last layer is zero-initialised, so the layer starts as the identity.

    Args:
        shape: image shape ``(C, H, W)``.
        hidden_channels: hidden channels of the :class:`~pyroflows.nn.ConvNet` conditioner.
        mask: ``"channel"`` (needs ``C >= 2``) or ``"checkerboard"``.
        transformer: ``"affine"`` (RealNVP, Glow), ``"additive"`` (NICE) or ``"spline"`` (NSF's
            rational-quadratic spline; ``bins``, ``bound``).
        swap: channel mask: transform the first channels and keep the rest (instead of keeping
            the first); checkerboard mask: use the other parity. Alternate it between layers.
        split_channels: channel mask: size of the first channel block (default ``C // 2``).
        context_dim: context size (conditional variant), appended as constant channels.
        log_scale_bound: soft bound on affine log-scales.
        bins: spline bins :math:`K` (``transformer="spline"`` only).
        bound: spline interval :math:`[-B, B]`, the identity outside (``"spline"`` only).
        invert_spline: the spline on the data side or the base side, as
            :class:`~pyroflows.transforms.Coupling`'s (``"spline"`` only).
        invert_affine: the affine map on the base side (``False``) or the data side, as
            :class:`~pyroflows.transforms.Coupling`'s (``"affine"`` only).
        activation: activation class of the conditioner.

    Example:
        >>> t = ImageCoupling((2, 4, 4), hidden_channels=(8,))
        >>> x = torch.randn(3, 2, 4, 4)
        >>> torch.equal(t(x), x)   # identity at initialisation
        True
        >>> ImageCoupling((1, 4, 4), hidden_channels=(8,), mask="checkerboard").inv(x[:, :1]).shape
        torch.Size([3, 1, 4, 4])
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        hidden_channels: Sequence[int] = (64, 64),
        mask: str = "channel",
        transformer: str = "affine",
        swap: bool = False,
        split_channels: int | None = None,
        context_dim: int = 0,
        log_scale_bound: float | None = 3.0,
        bins: int = 8,
        bound: float = 5.0,
        invert_spline: bool = True,
        invert_affine: bool = False,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        c, h, w = image_shape(shape)
        options = dict(
            log_scale_bound=log_scale_bound,
            bins=bins,
            bound=bound,
            invert_spline=invert_spline,
            invert_affine=invert_affine,
        )
        k = get_transformer(transformer, **options)[0]
        conv = dict(context_dim=context_dim, activation=activation)
        if mask == "channel":
            if c < 2:
                raise ValueError(
                    f"a channel-mask coupling needs at least 2 channels; got shape {(c, h, w)}. "
                    "Use mask='checkerboard', or squeeze the image first."
                )
            d = c // 2 if split_channels is None else int(split_channels)
            if not 0 < d < c:
                raise ValueError(f"split_channels must be in [1, {c - 1}]; got {split_channels}")
            sizes = [d, c - d]
            c_id, c_tr = (sizes[1], sizes[0]) if swap else sizes
            conditioner = ConvNet(c_id, k * c_tr, hidden_channels, **conv)
        elif mask == "checkerboard":
            sizes = [c]
            conditioner = ConvNet(c, k * c, hidden_channels, **conv)
        else:
            raise ValueError(f"mask must be 'channel' or 'checkerboard'; got {mask!r}")
        super().__init__(
            c * h * w,
            transformer=transformer,
            swap=swap,
            context_dim=context_dim,
            conditioner=conditioner,
            **options,
            event_shape=(c, h, w),
        )
        self.mask, self.sizes = mask, sizes
        board = None
        if mask == "checkerboard":  # 1 on the pixels the conditioner sees
            board = (torch.arange(h)[:, None] + torch.arange(w)[None, :] + int(swap)) % 2
            board = board.to(torch.get_default_dtype())
        self.register_buffer("board", board)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.mask == "checkerboard":
            return x * self.board, x
        a, b = x.split(self.sizes, dim=-3)
        return (b, a) if self.swap else (a, b)

    def _merge(self, ident: Tensor, trans: Tensor) -> Tensor:
        if self.mask == "checkerboard":  # ident = board * x: seen pixels pass exactly
            return ident + trans * (1 - self.board)
        ident = ident.expand(*trans.shape[:-3], *ident.shape[-3:])
        return torch.cat((trans, ident) if self.swap else (ident, trans), dim=-3)

    def _params(self, ident: Tensor, context: Tensor | None) -> Tensor:
        params = self.conditioner(ident, context).unflatten(-3, (self.num_params, -1))
        if self.mask == "checkerboard":
            params = params * (1 - self.board)
        return params

    def _log_det(self, s: Tensor, event_dims: int) -> Tensor:
        if self.mask == "checkerboard":
            s = s * (1 - self.board)
        return sum_event(s, event_dims)

    def _layer_name(self) -> str:
        return f"ImageCoupling({self.mask})"


class ConditionalImageCoupling(ConditionalFlowTransform, ImageCoupling):
    """Conditional :class:`ImageCoupling`: the context enters the conditioner as constant channels.

    Example:
        >>> t = ConditionalImageCoupling((2, 4, 4), context_dim=3, hidden_channels=(8,))
        >>> t.condition(torch.randn(3)).inv(torch.randn(5, 2, 4, 4)).shape
        torch.Size([5, 2, 4, 4])
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        context_dim: int,
        hidden_channels: Sequence[int] = (64, 64),
        **kwargs,
    ) -> None:
        super().__init__(shape, hidden_channels=hidden_channels, context_dim=context_dim, **kwargs)


def image_coupling(
    shape: Sequence[int], *, hidden_channels: Sequence[int] | None = None, **kwargs
) -> ImageCoupling:
    """Image coupling layer, Pyro-helper style (default 64 hidden channels, two layers).

    Example:
        >>> image_coupling((2, 4, 4), mask="checkerboard").mask
        'checkerboard'
    """
    hidden = (64, 64) if hidden_channels is None else hidden_channels
    return ImageCoupling(shape, hidden_channels=hidden, **kwargs)


def conditional_image_coupling(
    shape: Sequence[int],
    context_dim: int,
    *,
    hidden_channels: Sequence[int] | None = None,
    **kwargs,
) -> ConditionalImageCoupling:
    """Conditional image coupling layer, Pyro-helper style.

    Example:
        >>> t = conditional_image_coupling((2, 4, 4), 3, mask="checkerboard")
        >>> t.condition(torch.randn(3))(torch.randn(2, 4, 4)).shape
        torch.Size([2, 4, 4])
    """
    hidden = (64, 64) if hidden_channels is None else hidden_channels
    return ConditionalImageCoupling(
        shape, context_dim=context_dim, hidden_channels=hidden, **kwargs
    )
