r"""Multi-scale architectures of RealNVP [1] and Glow [2] as flat lists of Pyro transforms.

Design
------
Pyro's ``TransformedDistribution`` needs every transform to map the whole tensor, so the
multi-scale flow never drops the factored-out channels; it keeps one tensor and lets later levels
act only on the channels still in play. In the density direction (data -> base), with the
``(C, H, W)`` data image:

1. each level starts with a :class:`~pyroflows.transforms.Squeeze` of the *whole* tensor. The
   squeeze sends input channel :math:`c` to the output block :math:`[4c, 4c + 4)`, so channels
   that are still in play (always a trailing block ``[start:]``) stay a trailing block
   (``start`` becomes ``4 start``), and channels factored out earlier are only rearranged
   (log-det 0);
2. the level's steps act on the trailing slice through a
   :class:`~pyroflows.transforms.ChannelSlice` (no wrapper for the first level, where the slice
   is the whole tensor);
3. at the end of every level but the last, the first half of the slice is factored out: it is
   not transformed again and is scored directly by the standard normal base. With
   ``learned_prior=True`` (Glow) it is first passed through a conditional affine map given the
   kept half, :math:`\epsilon = (z - \mu(h)) e^{-s(h)}` with :math:`(\mu, s)` from a
   zero-initialised 3x3 convolution of the kept channels :math:`h` (and the context, if any).
   Scoring :math:`\epsilon` under :math:`N(0, I)` with that Jacobian is exactly scoring
   :math:`z` under the learned prior :math:`N(\mu(h), e^{2 s(h)})` of Glow [2]; it is an affine
   :class:`~pyroflows.transforms.ImageCoupling` whose conditioner has no hidden layer;
4. a final :class:`~pyroflows.transforms.Reshape` returns the squeezed tensor to the data shape,
   so the flow's base has the data's shape (the base is i.i.d., so this is a free relabelling)
   and ``Flow.sample(temperature=T)`` scales every factored-out part's noise, as in Glow.

Optionally a :class:`~pyroflows.transforms.Logit` pre-transform sits at the data end.

The builders return the transforms listed base -> data, ready for :class:`~pyroflows.Flow`.

References:
    [1] L. Dinh, J. Sohl-Dickstein, S. Bengio. Density estimation using Real NVP. ICLR 2017.
    [2] D. P. Kingma, P. Dhariwal. Glow: Generative Flow with Invertible 1x1 Convolutions.
        NeurIPS 2018.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import ConditionalFlowTransform, FlowTransform
from .dequantize import Logit
from .image import ConditionalImageCoupling, ImageCoupling, Reshape, Squeeze, image_shape
from .linear import ActNorm, LULinear

__all__ = [
    "ChannelSlice",
    "ConditionalChannelSlice",
    "glow_transforms",
    "hidden_tuple",
    "is_image_form",
    "realnvp_image_transforms",
]


class ChannelSlice(FlowTransform):
    r"""Apply transforms to the trailing channels ``[start:]`` of an image and pass the leading
    ones through: :math:`y = (x_{:s},\ g_K \circ \dots \circ g_1(x_{s:}))`.

    This is how a multi-scale flow keeps the whole tensor while later levels act only on the
    channels that were not factored out. The log-det is the sum of the inner ones; speed in each
    direction is that of the inner transforms.

    Args:
        shape: full image shape ``(C, H, W)``.
        start: first channel of the slice, ``0 <= start < C``.
        transforms: pyroflows transforms on ``(C - start, H, W)``, listed base -> data.

    Example:
        >>> from pyroflows.transforms import ActNorm
        >>> t = ChannelSlice((4, 2, 2), start=2, transforms=[ActNorm(2, event_shape=(2, 2, 2))])
        >>> x = torch.randn(3, 4, 2, 2)
        >>> torch.equal(t.inv(x)[:, :2], x[:, :2])
        True
    """

    def __init__(
        self, shape: Sequence[int], *, start: int, transforms: Sequence[FlowTransform]
    ) -> None:
        c, h, w = image_shape(shape)
        if not 0 <= int(start) < c:
            raise ValueError(f"start must be in [0, {c - 1}]; got {start}")
        inner = (c - int(start), h, w)
        parts = list(transforms)
        if not parts:
            raise ValueError("ChannelSlice needs at least one transform")
        for t in parts:
            if not isinstance(t, FlowTransform):
                raise TypeError(f"ChannelSlice wraps pyroflows transforms; got {type(t).__name__}")
            if t.event_shape != inner or t.output_shape != inner:
                raise ValueError(
                    f"every transform in the slice must act on shape {inner}; "
                    f"{t._layer_name()} acts on {tuple(t.event_shape)}"
                )
        dims = {t.context_dim for t in parts} - {0}
        if len(dims) > 1:
            raise ValueError(f"transforms in one slice take different context sizes {dims}")
        super().__init__((c, h, w), context_dim=dims.pop() if dims else 0)
        self.start = int(start)
        self.parts = nn.ModuleList(parts)

    def _run(self, v: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        head, tail = v[..., : self.start, :, :], v[..., self.start :, :, :].contiguous()
        ld = v.new_zeros(v.shape[:-3])
        direction = "inverse" if inverse else "forward"
        for t in reversed(self.parts) if inverse else self.parts:
            ctx = context if t.context_dim else None
            step = t.inverse_and_log_det if inverse else t.forward_and_log_det
            out, d = step(tail, ctx)
            t._check_output(tail, out, d, direction, ctx)  # names the inner layer on NaN/Inf
            tail, ld = out, ld + d
        head = head.expand(*tail.shape[:-3], *head.shape[-3:])
        return torch.cat((head, tail), dim=-3), ld

    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self._run(x, context, inverse=False)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self._run(y, context, inverse=True)

    def _layer_name(self) -> str:
        return f"ChannelSlice[{self.start}:]"


class ConditionalChannelSlice(ConditionalFlowTransform, ChannelSlice):
    """:class:`ChannelSlice` whose inner transforms take a context.

    Example:
        >>> inner = ConditionalImageCoupling((2, 2, 2), context_dim=3, hidden_channels=(8,))
        >>> t = ConditionalChannelSlice((4, 2, 2), start=2, transforms=[inner])
        >>> t.condition(torch.randn(3))(torch.randn(4, 2, 2)).shape
        torch.Size([4, 2, 2])
    """


def is_image_form(name: str, input_dim: int | None, shape: Sequence[int] | None) -> bool:
    """Whether a preset was asked for its image form (``shape=(C, H, W)``) or its vector form
    (``input_dim``); exactly one of them must be given.

    Example:
        >>> is_image_form("Glow", None, (1, 8, 8)), is_image_form("Glow", 5, None)
        (True, False)
    """
    if (input_dim is None) == (shape is None):
        raise ValueError(
            f"{name}: pass either input_dim (vector data, e.g. {name}(8)) or shape=(C, H, W) "
            f"(images, e.g. {name}(shape=(1, 8, 8))), not both or neither."
        )
    return shape is not None


def hidden_tuple(hidden_channels: int | Sequence[int]) -> tuple[int, ...]:
    """``64 -> (64, 64)`` (Glow's conv 3x3 -> conv 1x1 network); sequences pass through.

    Example:
        >>> hidden_tuple(32), hidden_tuple([16])
        ((32, 32), (16,))
    """
    if isinstance(hidden_channels, int):
        return (hidden_channels, hidden_channels)
    return tuple(int(h) for h in hidden_channels)


class _MultiScale:
    """Collects transforms in the density order and wraps each level's slice."""

    def __init__(self, shape: tuple[int, int, int], context_dim: int, logit: float | None):
        self.shape = self.full = shape
        self.start, self.context_dim = 0, int(context_dim)
        self.done: list[FlowTransform] = [Logit(shape, alpha=logit)] if logit is not None else []
        self.pending: list[FlowTransform] = []

    @property
    def part(self) -> tuple[int, int, int]:
        """Shape of the slice still in play."""
        c, h, w = self.full
        return (c - self.start, h, w)

    def coupling(self, **kw) -> FlowTransform:
        if self.context_dim:
            return ConditionalImageCoupling(self.part, context_dim=self.context_dim, **kw)
        return ImageCoupling(self.part, **kw)

    def add(self, *ts: FlowTransform) -> None:
        self.pending.extend(ts)

    def flush(self) -> None:
        if not self.pending:
            return
        if self.start == 0:
            self.done.extend(self.pending)
        else:
            cls = ConditionalChannelSlice if self.context_dim else ChannelSlice
            self.done.append(cls(self.full, start=self.start, transforms=self.pending[::-1]))
        self.pending = []

    def squeeze(self) -> None:
        self.flush()
        sq = Squeeze(self.full)
        self.done.append(sq)
        self.full, self.start = tuple(sq.event_shape), 4 * self.start  # type: ignore[assignment]

    def factor_out(self, learned_prior: bool) -> None:
        c = self.part[0]
        if c < 2:
            raise ValueError(
                f"cannot factor out half of {c} channel(s) at shape {self.part}; use fewer levels"
            )
        if learned_prior:
            self.add(self.coupling(hidden_channels=(), mask="channel", swap=True))
        self.flush()
        self.start += c // 2

    def finish(self) -> list[FlowTransform]:
        self.flush()
        if self.full != self.shape:
            self.done.append(Reshape(self.shape, data_shape=self.full))
        return self.done[::-1]


def _check_levels(
    shape: tuple[int, int, int], levels: int, squeezes: int, steps_per_level: int
) -> None:
    if int(levels) < 1 or int(steps_per_level) < 1:
        raise ValueError(
            f"levels and steps_per_level must be at least 1; got {levels}, {steps_per_level}"
        )
    _, h, w = shape
    f = 2**squeezes
    if h % f or w % f:
        raise ValueError(
            f"{levels} levels squeeze the image {squeezes} times, so height and width must be "
            f"divisible by {f}; got shape {shape}. Use fewer levels or pad the images."
        )


def _multiscale(
    shape: Sequence[int],
    level: Callable[[_MultiScale, dict[str, Any], bool], None],
    *,
    levels: int,
    squeezes: int,
    steps_per_level: int,
    hidden_channels: int | Sequence[int],
    coupling: str,
    learned_prior: bool,
    context_dim: int,
    activation: type[nn.Module],
    log_scale_bound: float | None,
    logit: float | None,
) -> list[FlowTransform]:
    """The skeleton RealNVP and Glow share: check the shape, then for each level run
    ``level(m, coupling_options, last)`` (which adds that level's steps, squeezing as it
    needs) and factor out half of the channels after every level but the last."""
    shape = image_shape(shape)
    _check_levels(shape, levels, squeezes, steps_per_level)
    m = _MultiScale(shape, context_dim, logit)
    kw: dict[str, Any] = dict(
        hidden_channels=hidden_tuple(hidden_channels),
        transformer=coupling,
        activation=activation,
        log_scale_bound=log_scale_bound,
    )
    for i in range(int(levels)):
        last = i == int(levels) - 1
        level(m, kw, last)
        if not last:
            m.factor_out(learned_prior)
    return m.finish()


def glow_transforms(
    shape: Sequence[int],
    *,
    levels: int = 2,
    steps_per_level: int = 4,
    hidden_channels: int | Sequence[int] = 64,
    coupling: str = "affine",
    learned_prior: bool = True,
    context_dim: int = 0,
    activation: type[nn.Module] = nn.ReLU,
    log_scale_bound: float | None = 3.0,
    logit: float | None = 0.05,
) -> list[FlowTransform]:
    """Glow's multi-scale architecture [2], transforms listed base -> data.

    Each of the ``levels`` levels is (data -> base): squeeze, ``steps_per_level`` x (ActNorm, invertible
    1x1 convolution, channel coupling), then, except at the last level, factor out half of the
    channels under a learned prior (see the module docstring).

    Args:
        shape: image shape ``(C, H, W)``; ``H`` and ``W`` divisible by ``2 ** levels``.
        levels: number of scales ``L``.
        steps_per_level: flow steps per level ``K``.
        hidden_channels: hidden channels of each coupling's conv net (an int ``h`` means
            ``(h, h)``).
        coupling: ``"affine"`` or ``"additive"``.
        learned_prior: conditional Gaussian prior for each factored-out part.
        context_dim: context size for a conditional flow (enters every conv net).
        activation: activation class of the conv nets.
        log_scale_bound: soft bound on the affine log-scales.
        logit: ``alpha`` of a :class:`~pyroflows.transforms.Logit` pre-transform at the data
            end (``None``: no logit; the data is then modelled as it is, e.g. in ``[0, 1]``).
            Glow [2] has none; on the digits it lowers the test bits/dim (see
            ``docs/benchmarks.md``).

    Example:
        >>> ts = glow_transforms(
        ...     (1, 4, 4), levels=2, steps_per_level=1, hidden_channels=8, logit=None
        ... )
        >>> [type(t).__name__ for t in ts]   # base -> data
        ['Reshape', 'ChannelSlice', 'Squeeze', 'ImageCoupling', 'ImageCoupling', 'LULinear', 'ActNorm', 'Squeeze']
    """

    def level(m: _MultiScale, kw: dict[str, Any], last: bool) -> None:
        m.squeeze()
        for k in range(int(steps_per_level)):
            c = m.part[0]
            m.add(ActNorm(c, event_shape=m.part), LULinear(c, event_shape=m.part))
            m.add(m.coupling(mask="channel", swap=k % 2 == 1, **kw))

    return _multiscale(
        shape,
        level,
        levels=levels,
        squeezes=levels,
        steps_per_level=steps_per_level,
        hidden_channels=hidden_channels,
        coupling=coupling,
        learned_prior=learned_prior,
        context_dim=context_dim,
        activation=activation,
        log_scale_bound=log_scale_bound,
        logit=logit,
    )


def realnvp_image_transforms(
    shape: Sequence[int],
    *,
    levels: int = 2,
    steps_per_level: int = 3,
    hidden_channels: int | Sequence[int] = 64,
    coupling: str = "affine",
    actnorm: bool = True,
    learned_prior: bool = False,
    context_dim: int = 0,
    activation: type[nn.Module] = nn.ReLU,
    log_scale_bound: float | None = 3.0,
    logit: float | None = 0.05,
) -> list[FlowTransform]:
    """RealNVP's multi-scale architecture [1], transforms listed base -> data.

    Each level but the last is (data -> base): ``steps_per_level`` checkerboard couplings,
    squeeze, ``steps_per_level`` channel couplings, factor out half of the channels; the last
    level is ``steps_per_level + 1`` checkerboard couplings (3, 3 and 4 in the paper). Masks alternate. With
    ``actnorm=True`` an ActNorm follows every coupling (in place of the paper's batch norm).

    Args:
        shape: image shape ``(C, H, W)``; ``H`` and ``W`` divisible by ``2 ** (levels - 1)``.
        levels: number of scales.
        steps_per_level: couplings per mask type per level.
        hidden_channels: hidden channels of each coupling's conv net (an int ``h`` means
            ``(h, h)``).
        coupling: ``"affine"`` or ``"additive"``.
        actnorm: ActNorm after every coupling.
        learned_prior: conditional Gaussian prior for each factored-out part (Glow's; off in
            the paper).
        context_dim: context size for a conditional flow.
        activation: activation class of the conv nets.
        log_scale_bound: soft bound on the affine log-scales.
        logit: ``alpha`` of the logit pre-transform at the data end (``None``: none).

    Example:
        >>> ts = realnvp_image_transforms((1, 4, 4), levels=1, steps_per_level=1, hidden_channels=8)
        >>> [t.mask for t in ts if hasattr(t, "mask")], type(ts[-1]).__name__
        (['checkerboard', 'checkerboard'], 'Logit')
    """

    def couplings(m: _MultiScale, kw: dict[str, Any], mask: str, n: int) -> None:
        for k in range(n):
            m.add(m.coupling(mask=mask, swap=k % 2 == 1, **kw))
            if actnorm:
                m.add(ActNorm(m.part[0], event_shape=m.part))

    def level(m: _MultiScale, kw: dict[str, Any], last: bool) -> None:
        if last:
            couplings(m, kw, "checkerboard", int(steps_per_level) + 1)
            return
        couplings(m, kw, "checkerboard", int(steps_per_level))
        m.squeeze()
        couplings(m, kw, "channel", int(steps_per_level))

    return _multiscale(
        shape,
        level,
        levels=levels,
        squeezes=levels - 1,
        steps_per_level=steps_per_level,
        hidden_channels=hidden_channels,
        coupling=coupling,
        learned_prior=learned_prior,
        context_dim=context_dim,
        activation=activation,
        log_scale_bound=log_scale_bound,
        logit=logit,
    )
