r"""``Flow``: a base distribution and a list of transforms that returns a Pyro distribution.

A flow with transforms :math:`f_1, \dots, f_K` (listed base -> data, as in Pyro's
``TransformedDistribution``) has density

.. math:: \log p(y) = \log p_{\text{base}}(x) - \sum_{k=1}^K \log|\det J_{f_k}(x_{k-1})|,
          \qquad x = f_1^{-1} \circ \dots \circ f_K^{-1}(y).

The seed presets (``MAF``, ``IAF``, ``RealNVP``, ``NICE``, ``Glow``, ``Planar``) only choose the
transforms. Every ``Flow`` remembers the arguments it was built with, so ``save``/``load`` rebuild
it without user code.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransform
from torch import Tensor, nn
from torch.distributions import Transform

from .augmented import AugmentedFlowDistribution, GaussianAuxiliary
from .transforms.autoregressive import ConditionalMaskedAutoregressive, MaskedAutoregressive
from .transforms.base import (
    FlowTransform,
    NonFiniteError,
    _event_text,
    is_validation_enabled,
    nonfinite_rows,
)
from .transforms.continuous import ConditionalContinuousFlow, ContinuousFlow
from .transforms.coupling import ConditionalCoupling, Coupling
from .transforms.linear import ActNorm, ElementwiseAffine, LULinear
from .transforms.multiscale import glow_transforms, is_image_form, realnvp_image_transforms
from .transforms.planar import ConditionalPlanar
from .transforms.planar import Planar as PlanarTransform

__all__ = [
    "CNF",
    "FLOWS",
    "IAF",
    "MAF",
    "NICE",
    "Flow",
    "FlowDistribution",
    "Glow",
    "Planar",
    "RealNVP",
    "load",
    "save",
]

#: class name -> Flow subclass, filled automatically; used by ``load``.
FLOWS: dict[str, type[Flow]] = {}
_FORMAT = "pyroflows-model-1"


class FlowDistribution(dist.TransformedDistribution):
    """Pyro ``TransformedDistribution`` with a one-pass :meth:`rsample_and_log_prob`.

    Input checks are pyroflows' own (shape, finiteness with the bad rows named, switchable with
    :func:`pyroflows.validation`), so Pyro's argument validation is off for this distribution.
    """

    def __init__(self, base_distribution, transforms, *, temperature: float = 1.0):
        super().__init__(base_distribution, transforms, validate_args=False)
        self.temperature = temperature

    def _check(self, value: Tensor) -> None:
        if not is_validation_enabled():
            return
        n = len(self.event_shape)
        if not isinstance(value, Tensor):
            raise TypeError(f"Expected a torch.Tensor; got {type(value).__name__}.")
        if value.dim() < n or value.shape[value.dim() - n :] != self.event_shape:
            want = _event_text(self.event_shape)
            raise ValueError(f"Expected data shape {want}; got {tuple(value.shape)}.")
        if math.isfinite(float(value.detach().sum())):  # one reduction; NaN/Inf poison the sum
            return
        rows = nonfinite_rows(value, n)[:5].tolist()
        if rows:
            raise NonFiniteError(
                f"data contains NaN or Inf (first bad rows {rows}); remove or impute those rows, "
                "or wrap the call in pyroflows.validation(False) to get NaN log-densities instead."
            )

    def log_prob(self, value: Tensor) -> Tensor:
        self._check(value)
        return super().log_prob(value)

    def expand(self, batch_shape, _instance=None) -> FlowDistribution:
        """Expanded copy (``pyro.plate`` broadcasting); it shares the transforms and their slots."""
        new = self._get_checked_instance(FlowDistribution, _instance)
        new.temperature = self.temperature
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        return self.rsample_and_log_prob(sample_shape, _log_prob=False)[0]

    def rsample_and_log_prob(self, sample_shape: Sequence[int] = (), _log_prob: bool = True):
        """Draw reparameterised samples and their log-density in one pass through the flow."""
        x = self.base_dist.rsample(torch.Size(sample_shape))
        if self.temperature != 1.0:
            x = x * self.temperature
        lp = self.base_dist.log_prob(x) if _log_prob else None
        for t in self.transforms:
            if isinstance(t, FlowTransform):
                y, ld = t.apply_forward(x, None)
            elif hasattr(t, "parent") and isinstance(t.parent, FlowTransform):
                y, ld = t.parent.apply_forward(x, t.context)
            else:
                y = t(x)
                ld = t.log_abs_det_jacobian(x, y) if _log_prob else None
            if _log_prob:
                lp = lp - ld
            x = y
        return x, lp


def _encode(value: Any) -> Any:
    if isinstance(value, type):
        return {"__class__": f"{value.__module__}.{value.__qualname__}"}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, torch.Size):
        return list(value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__class__" in value:
        module, _, name = value["__class__"].rpartition(".")
        if not (module.startswith("torch.nn") or module.startswith("pyroflows")):
            raise ValueError(f"refusing to import {value['__class__']} from a model file")
        return getattr(importlib.import_module(module), name)
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


class Flow(nn.Module):
    """A normalizing flow: calling it (with a context if conditional) returns a Pyro distribution.

    Args:
        transforms: transforms listed from the base to the data side.
        event_shape: shape of one data point, e.g. ``(D,)`` or ``(C, H, W)``.
        context_dim: size of the context vector (0: unconditional).
        base: ``"normal"`` (fixed standard normal) or ``"diag"`` (learnable diagonal normal).

    Example:
        >>> from pyroflows.transforms import Coupling
        >>> flow = Flow([Coupling(2, swap=False), Coupling(2, swap=True)], event_shape=(2,))
        >>> d = flow()
        >>> d.event_shape, d.log_prob(torch.zeros(3, 2)).shape
        (torch.Size([2]), torch.Size([3]))
        >>> flow.log_prob(torch.zeros(2)).item()   # identity at initialisation: N(0, I)
        -1.8378...
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        FLOWS[cls.__name__] = cls
        init = cls.__init__

        @functools.wraps(init)
        def wrapped(self, *args: Any, **kw: Any) -> None:
            outer = not hasattr(self, "_config_owner")
            if outer:
                object.__setattr__(self, "_config_owner", cls)
            init(self, *args, **kw)
            if outer:
                bound = inspect.signature(init).bind(self, *args, **kw)
                bound.apply_defaults()
                config = dict(bound.arguments)
                config.pop("self")
                extra = (
                    config.pop("kwargs", {})
                    if "kwargs" in inspect.signature(init).parameters
                    else {}
                )
                self.config = {"class": cls.__name__, **config, **extra}

        cls.__init__ = wrapped  # type: ignore[method-assign]

    def __init__(
        self,
        transforms: Sequence[Transform],
        *,
        event_shape: Sequence[int],
        context_dim: int = 0,
        base: str = "normal",
    ) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)
        self.event_shape = torch.Size(event_shape)
        self.context_dim = int(context_dim)
        if base == "normal":
            self.register_buffer("base_loc", torch.zeros(self.event_shape))
            self.register_buffer("base_log_scale", torch.zeros(self.event_shape))
        elif base == "diag":
            self.base_loc = nn.Parameter(torch.zeros(self.event_shape))
            self.base_log_scale = nn.Parameter(torch.zeros(self.event_shape))
        else:
            raise ValueError(f"base must be 'normal' or 'diag'; got {base!r}")
        self.base = base
        if not hasattr(self, "config"):
            self.config = None

    @property
    def input_dim(self) -> int:
        """Number of scalars in one data point."""
        return int(torch.Size(self.event_shape).numel())

    def base_dist(self, context: Tensor | None = None) -> dist.TorchDistribution:
        """The base distribution (batched over the context's batch shape)."""
        loc, scale = self.base_loc, self.base_log_scale.exp()
        if context is not None:
            batch = context.shape[:-1]
            loc, scale = loc.expand(*batch, *loc.shape), scale.expand(*batch, *scale.shape)
        return dist.Normal(loc, scale, validate_args=False).to_event(len(self.event_shape))

    def forward(
        self, context: Tensor | None = None, *, temperature: float = 1.0
    ) -> FlowDistribution:
        """The flow's distribution over data (conditioned on ``context`` for conditional flows)."""
        if self.context_dim:
            if context is None:
                raise ValueError(
                    f"{type(self).__name__} is conditional (context_dim={self.context_dim}); "
                    "call flow(context) with a context tensor of shape (..., context_dim)."
                )
            if not isinstance(context, Tensor):
                raise TypeError(f"context must be a torch.Tensor; got {type(context).__name__}.")
            if context.shape[-1:] != (self.context_dim,):
                raise ValueError(
                    f"Expected context shape (..., {self.context_dim}); got {tuple(context.shape)}."
                )
            ts = [
                t.condition(context) if isinstance(t, ConditionalTransform) else t
                for t in self.transforms
            ]
        else:
            if context is not None:
                raise ValueError(f"{type(self).__name__} is unconditional; do not pass a context.")
            ts = list(self.transforms)
        return FlowDistribution(self.base_dist(context), ts, temperature=temperature)

    # shortcuts ----------------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of data ``x`` (shape ``(..., *event_shape)``)."""
        return self(context).log_prob(x)

    def sample(
        self,
        sample_shape: Sequence[int] = (),
        context: Tensor | None = None,
        *,
        temperature: float = 1.0,
    ) -> Tensor:
        """Samples without gradients; ``temperature`` scales the base noise (Glow's trick)."""
        with torch.no_grad():
            return self(context, temperature=temperature).rsample(torch.Size(sample_shape))

    def rsample(self, sample_shape: Sequence[int] = (), context: Tensor | None = None) -> Tensor:
        """Reparameterised samples."""
        return self(context).rsample(torch.Size(sample_shape))

    def rsample_and_log_prob(
        self, sample_shape: Sequence[int] = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples and their log-density in one pass (the variational-guide hot path)."""
        return self(context).rsample_and_log_prob(torch.Size(sample_shape))

    def save(self, path: str | Path, /, **metadata: Any) -> None:
        """Save configuration, weights and JSON-able ``metadata``; see :func:`load`."""
        save(self, path, **metadata)

    def extra_repr(self) -> str:
        return f"event_shape={tuple(self.event_shape)}, context_dim={self.context_dim}, base={self.base!r}"


def save(flow: Flow, path: str | Path, /, **metadata: Any) -> None:
    """Write a model file holding ``flow``'s configuration, weights and ``metadata``.

    Example:
        >>> import tempfile, os, pyroflows as pf
        >>> flow = pf.MAF(3, num_layers=2, hidden_dims=(8,))
        >>> path = os.path.join(tempfile.mkdtemp(), "maf.pt")
        >>> pf.save(flow, path, note="demo")
        >>> again = pf.load(path)
        >>> torch.equal(again.log_prob(torch.ones(3)), flow.log_prob(torch.ones(3)))
        True
        >>> again.metadata
        {'note': 'demo'}
    """
    if getattr(flow, "config", None) is None:
        raise ValueError(
            "this Flow was built from a list of transforms, so its configuration is unknown; "
            "save its weights with torch.save(flow.state_dict(), path) instead, or use a preset."
        )
    payload = {
        "format": _FORMAT,
        "config": json.dumps(_encode(flow.config)),
        "metadata": json.dumps(metadata),
        "state_dict": {k: v.detach().cpu() for k, v in flow.state_dict().items()},
    }
    torch.save(payload, str(path))


def load(path: str | Path, *, map_location: str | torch.device | None = "cpu") -> Flow:
    """Rebuild a flow saved by :func:`save` (no user code needed); ``.metadata`` holds the extras."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        payload = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path} is not a pyroflows model file ({exc.__class__.__name__})."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a pyroflows model file (format {_FORMAT} expected).")
    config = _decode(json.loads(payload["config"]))
    cls_name = config.pop("class")
    if cls_name not in FLOWS:
        importlib.import_module("pyroflows")
    if cls_name not in FLOWS:
        raise ValueError(f"unknown flow class {cls_name!r} in {path}")
    flow = FLOWS[cls_name](**config)
    state = payload["state_dict"]
    floats = [v.dtype for v in state.values() if v.dtype.is_floating_point]
    if floats:
        flow = flow.to(floats[0])
    flow.load_state_dict(state)
    flow.metadata = json.loads(payload["metadata"])
    return flow


# ---- seed presets ------------------------------------------------------------------------------


def _coupling(input_dim: int, hidden_dims, context_dim: int, **kw) -> Coupling:
    if context_dim:
        return ConditionalCoupling(input_dim, context_dim, hidden_dims, **kw)
    return Coupling(input_dim, hidden_dims, **kw)


class MAF(Flow):
    """Masked autoregressive flow [Papamakarios et al. 2017]: density in one pass per layer,
    sampling sequential. Layers alternate natural and reversed autoregressive orders.

    Example:
        >>> flow = MAF(3, num_layers=2, hidden_dims=(16,))
        >>> flow.log_prob(torch.randn(5, 3)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        input_dim: int,
        num_layers: int = 5,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        context_dim: int = 0,
        transformer: str = "affine",
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
        fast: str = "density",
    ) -> None:
        layers = []
        for k in range(num_layers):
            order = list(range(input_dim)) if k % 2 == 0 else list(range(input_dim - 1, -1, -1))
            kw = dict(fast=fast, transformer=transformer, order=order, activation=activation)
            if context_dim:
                layers.append(
                    ConditionalMaskedAutoregressive(input_dim, context_dim, hidden_dims, **kw)
                )
            else:
                layers.append(MaskedAutoregressive(input_dim, hidden_dims, **kw))
        super().__init__(layers, event_shape=(input_dim,), context_dim=context_dim, base=base)


class IAF(MAF):
    """Inverse autoregressive flow [Kingma et al. 2016]: sampling (and sampling with log-density)
    in one pass per layer; scoring external data is sequential. The flow of choice for guides.

    Example:
        >>> flow = IAF(3, num_layers=2, hidden_dims=(16,))
        >>> x, lp = flow.rsample_and_log_prob((4,))
        >>> x.shape, lp.shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    def __init__(
        self,
        input_dim: int,
        num_layers: int = 5,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        context_dim: int = 0,
        transformer: str = "affine",
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
    ) -> None:
        super().__init__(
            input_dim,
            num_layers,
            hidden_dims,
            context_dim=context_dim,
            transformer=transformer,
            activation=activation,
            base=base,
            fast="sample",
        )


class RealNVP(Flow):
    """RealNVP [Dinh et al. 2017]: affine coupling layers with alternating halves; both
    directions in one pass per layer.

    Image form (``shape=(C, H, W)``, no ``input_dim``): the multi-scale architecture with
    checkerboard and channel masks and conv conditioners, ``levels`` scales of ``steps``
    couplings per mask type, ActNorm after each coupling and a ``logit`` pre-transform; see
    :func:`pyroflows.transforms.realnvp_image_transforms`.

    Example:
        >>> flow = RealNVP(4, num_layers=2, hidden_dims=(16,))
        >>> flow.sample((3,)).shape
        torch.Size([3, 4])
        >>> images = RealNVP(shape=(1, 8, 8), levels=2, steps=1, hidden_channels=8)
        >>> images.sample((3,), temperature=0.7).shape
        torch.Size([3, 1, 8, 8])
    """

    def __init__(
        self,
        input_dim: int | None = None,
        num_layers: int = 5,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        context_dim: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
        shape: Sequence[int] | None = None,
        levels: int = 2,
        steps: int = 3,
        hidden_channels: int | Sequence[int] = 64,
        coupling: str = "affine",
        logit: float | None = 0.05,
    ) -> None:
        if is_image_form("RealNVP", input_dim, shape):
            layers = realnvp_image_transforms(
                shape,  # type: ignore[arg-type]
                levels=levels,
                steps=steps,
                hidden_channels=hidden_channels,
                coupling=coupling,
                context_dim=context_dim,
                activation=activation,
                logit=logit,
            )
            event_shape = tuple(shape)  # type: ignore[arg-type]
        else:
            layers = [
                _coupling(
                    input_dim, hidden_dims, context_dim, swap=k % 2 == 1, activation=activation
                )
                for k in range(num_layers)
            ]
            event_shape = (input_dim,)
        super().__init__(layers, event_shape=event_shape, context_dim=context_dim, base=base)


class NICE(Flow):
    """NICE [Dinh et al. 2014]: additive (volume-preserving) couplings and a diagonal scaling
    layer at the base end, which carries all of the change of volume.

    Example:
        >>> flow = NICE(4, num_layers=2, hidden_dims=(16,))
        >>> [type(t).__name__ for t in flow.transforms]
        ['ElementwiseAffine', 'Coupling', 'Coupling']
    """

    def __init__(
        self,
        input_dim: int,
        num_layers: int = 4,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        context_dim: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
    ) -> None:
        layers: list[Transform] = [ElementwiseAffine(input_dim, shift=False)]
        layers += [
            _coupling(
                input_dim,
                hidden_dims,
                context_dim,
                transformer="additive",
                swap=k % 2 == 1,
                activation=activation,
            )
            for k in range(num_layers)
        ]
        super().__init__(layers, event_shape=(input_dim,), context_dim=context_dim, base=base)


class Glow(Flow):
    """Glow [Kingma & Dhariwal 2018] on vectors: steps of ActNorm -> invertible linear (LU) ->
    affine coupling, applied in that order to the data.

    Image form (``shape=(C, H, W)``, no ``input_dim``): the multi-scale architecture, ``levels``
    scales of squeeze and ``steps`` x (ActNorm, invertible 1x1 convolution, coupling with a conv
    conditioner), half of the channels factored out after each level under a learned prior;
    see :func:`pyroflows.transforms.glow_transforms`. Both directions are fast.

    Example:
        >>> flow = Glow(4, num_layers=2, hidden_dims=(16,))
        >>> [type(t).__name__ for t in flow.transforms][:3]
        ['Coupling', 'LULinear', 'ActNorm']
        >>> images = Glow(shape=(1, 8, 8), levels=2, steps=2, hidden_channels=8)
        >>> images.log_prob(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5])
    """

    def __init__(
        self,
        input_dim: int | None = None,
        num_layers: int = 5,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        context_dim: int = 0,
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
        shape: Sequence[int] | None = None,
        levels: int = 2,
        steps: int = 4,
        hidden_channels: int | Sequence[int] = 64,
        coupling: str = "affine",
        learned_prior: bool = True,
        logit: float | None = 0.05,
    ) -> None:
        if is_image_form("Glow", input_dim, shape):
            layers: list[Transform] = list(
                glow_transforms(
                    shape,  # type: ignore[arg-type]
                    levels=levels,
                    steps=steps,
                    hidden_channels=hidden_channels,
                    coupling=coupling,
                    learned_prior=learned_prior,
                    context_dim=context_dim,
                    activation=activation,
                    logit=logit,
                )
            )
            event_shape = tuple(shape)  # type: ignore[arg-type]
        else:
            layers = []
            for k in range(num_layers):
                layers += [
                    _coupling(
                        input_dim, hidden_dims, context_dim, swap=k % 2 == 1, activation=activation
                    ),
                    LULinear(input_dim),
                    ActNorm(input_dim),
                ]
            event_shape = (input_dim,)
        super().__init__(layers, event_shape=event_shape, context_dim=context_dim, base=base)


class Planar(Flow):
    """Planar flow [Rezende & Mohamed 2015]: fast sampling; scoring data uses the exact
    scalar-root inverse (Pyro's planar flow cannot score data at all).

    Example:
        >>> flow = Planar(2, num_layers=4)
        >>> flow.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])
    """

    def __init__(
        self,
        input_dim: int,
        num_layers: int = 16,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        context_dim: int = 0,
        base: str = "normal",
    ) -> None:
        if context_dim:
            layers = [
                ConditionalPlanar(input_dim, context_dim, hidden_dims) for _ in range(num_layers)
            ]
        else:
            layers = [PlanarTransform(input_dim) for _ in range(num_layers)]
        super().__init__(layers, event_shape=(input_dim,), context_dim=context_dim, base=base)


class CNF(Flow):
    r"""Continuous normalizing flow (FFJORD [Grathwohl et al. 2019]): one
    :class:`~pyroflows.transforms.ContinuousFlow`, :math:`dz/dt = f(t, z[, c])`, trained by
    maximum likelihood (``pf.fit``, optionally with RNODE ``regularization``) or by flow
    matching (``pf.fit(..., objective="flow_matching")``); either way ``log_prob`` is the ODE
    likelihood. Sampling and density cost one ODE solve each; ``flow.transform.nfe`` counts the
    vector-field evaluations of the latest solve.

    With ``augment_dim=k`` [Dupont et al. 2019] the ODE runs on :math:`(x, a) \in
    \mathbb{R}^{d+k}` and calling the flow returns an
    :class:`~pyroflows.augmented.AugmentedFlowDistribution` over :math:`x`: its ``log_prob`` is a
    lower BOUND on :math:`\log p(x)` (importance-weighted, ``num_bound_samples`` samples of a
    learnable Gaussian :math:`q(a \mid x)`), and ``sample`` drops :math:`a`.

    Args:
        input_dim: data dimension :math:`d`.
        hidden_dims: hidden sizes of the vector field.
        context_dim: context size (0: unconditional).
        augment_dim: extra dimensions :math:`k` (0: none).
        augment_hidden_dims: hidden sizes of :math:`q(a \mid x)`'s network.
        num_bound_samples: importance samples of the augmented ``log_prob`` bound.
        base: ``"normal"`` or ``"diag"`` (flow matching does not train the base).
        **kwargs: options of :class:`~pyroflows.transforms.ContinuousFlow` (``divergence``,
            ``regularize``, ``adjoint``, ``method``, ``rtol``, ``atol``, ``step_size``,
            ``eval_*``, ``activation``, ``t0``, ``t1``, ``probe``).

    Example:
        >>> flow = CNF(2, hidden_dims=(16,), rtol=1e-4, atol=1e-4)
        >>> x, lp = flow.rsample_and_log_prob((3,))
        >>> x.shape, lp.shape, flow.transform.nfe > 0
        (torch.Size([3, 2]), torch.Size([3]), True)
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        *,
        context_dim: int = 0,
        augment_dim: int = 0,
        augment_hidden_dims: Sequence[int] = (32, 32),
        num_bound_samples: int = 1,
        base: str = "normal",
        **kwargs: Any,
    ) -> None:
        if int(augment_dim) < 0:
            raise ValueError(f"augment_dim must be >= 0; got {augment_dim}.")
        dim = input_dim + int(augment_dim)
        if context_dim:
            t = ConditionalContinuousFlow(dim, context_dim, hidden_dims, **kwargs)
        else:
            t = ContinuousFlow(dim, hidden_dims, **kwargs)
        super().__init__([t], event_shape=(dim,), context_dim=context_dim, base=base)
        self.augment_dim, self.num_bound_samples = int(augment_dim), int(num_bound_samples)
        if self.augment_dim:
            self.auxiliary = GaussianAuxiliary(
                input_dim, self.augment_dim, augment_hidden_dims, context_dim=context_dim
            )
            self.event_shape = torch.Size((input_dim,))  # the data side; the base is (d + k,)

    @property
    def transform(self) -> ContinuousFlow:
        """The flow's one :class:`~pyroflows.transforms.ContinuousFlow`."""
        return self.transforms[0]

    def forward(  # type: ignore[override]
        self, context: Tensor | None = None, *, temperature: float = 1.0
    ) -> FlowDistribution | AugmentedFlowDistribution:
        """The distribution over data (an augmented one, with a bound, if ``augment_dim > 0``)."""
        d = super().forward(context, temperature=temperature)
        if not self.augment_dim:
            return d
        return AugmentedFlowDistribution(
            d,
            self.auxiliary,
            context,
            data_dim=self.event_shape[0],
            num_samples=self.num_bound_samples,
        )


class NSF(Flow):
    r"""Neural spline flow [Durkan et al. 2019]: monotonic rational-quadratic splines with
    ``bins`` bins on :math:`[-B, B]` (``bound``), identity tails, conditioned by dense networks.

    * ``fast=None`` (default): coupling form, both directions in one pass per layer. At
      ``input_dim=2`` layers alternate halves; above, a fixed seeded permutation precedes every
      layer after the first, drawn so that the half a layer keeps was transformed by the layer
      before (every coordinate is transformed in any two consecutive layers). With ``input_dim=1`` and a context, each layer's spline parameters
      come from the context alone (without a context a 1-D coupling has nothing to condition
      on: use ``fast="density"``).
    * ``fast="density"`` / ``fast="sample"``: autoregressive form (MADE conditioners, orders
      alternating between layers), one pass in that direction and :math:`D` passes in the other.

    Args:
        input_dim: data dimension :math:`D`.
        num_layers: number of spline layers.
        hidden_dims: hidden sizes of each conditioner.
        context_dim: context size (0: unconditional).
        bins: spline bins :math:`K` per coordinate.
        bound: half-width :math:`B` of the spline interval; the identity outside, so a spline
            maps :math:`[-B, B]` onto itself: standardise data (or guide targets) wider than that.
            Defaults ``bins=8, bound=5``: on two moons (1000 steps, 2 seeds) they tied with
            ``bins=16`` (0.330 vs 0.329 nats) at half the parameters, and beat ``bound=3``.
        fast: ``None`` (coupling), ``"density"`` or ``"sample"`` (autoregressive).
        activation: activation class of the conditioners.
        base: ``"normal"`` or ``"diag"``.

    Example:
        >>> flow = NSF(3, num_layers=2, hidden_dims=(16,))
        >>> [type(t).__name__ for t in flow.transforms]
        ['Coupling', 'Permute', 'Coupling']
        >>> flow.log_prob(torch.randn(5, 3)).shape
        torch.Size([5])
        >>> NSF(2, num_layers=2, fast="sample").rsample_and_log_prob((4,))[1].shape
        torch.Size([4])
    """

    def __init__(
        self,
        input_dim: int,
        num_layers: int = 5,
        hidden_dims: Sequence[int] = (128, 128),
        *,
        context_dim: int = 0,
        bins: int = 8,
        bound: float = 5.0,
        fast: str | None = None,
        activation: type[nn.Module] = nn.ReLU,
        base: str = "normal",
    ) -> None:
        from .transforms.linear import Permute

        if fast not in (None, "density", "sample"):
            raise ValueError(
                f"fast must be None (coupling), 'density' or 'sample' (autoregressive); got {fast!r}"
            )
        if fast is None and input_dim == 1 and not context_dim:
            raise ValueError(
                "NSF's coupling form needs input_dim >= 2 or a context (a 1-D coupling has "
                "nothing to condition on); use NSF(1, fast='density') for a 1-D density."
            )
        spline = dict(transformer="spline", bins=bins, bound=bound, activation=activation)
        layers: list[Transform] = []
        if fast is None:
            keep = input_dim // 2
            for k in range(num_layers):
                if k and input_dim > 2:  # the kept half comes from the last transformed half
                    g = torch.Generator().manual_seed(k)
                    done = keep + torch.randperm(input_dim - keep, generator=g)
                    rest = torch.cat((done[keep:], torch.arange(keep)))
                    rest = rest[torch.randperm(len(rest), generator=g)]
                    layers.append(Permute(torch.cat((done[:keep], rest))))
                swap = input_dim == 2 and k % 2 == 1
                layers.append(_coupling(input_dim, hidden_dims, context_dim, swap=swap, **spline))
        else:
            for k in range(num_layers):
                order = list(range(input_dim))[:: 1 if k % 2 == 0 else -1]
                kw = dict(fast=fast or "density", order=order, **spline)
                if context_dim:
                    layers.append(
                        ConditionalMaskedAutoregressive(input_dim, context_dim, hidden_dims, **kw)
                    )
                else:
                    layers.append(MaskedAutoregressive(input_dim, hidden_dims, **kw))
        super().__init__(layers, event_shape=(input_dim,), context_dim=context_dim, base=base)
