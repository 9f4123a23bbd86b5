r"""``Flow``: a base distribution and a list of transforms that returns a Pyro distribution.

A flow with transforms :math:`f_1, \dots, f_K` (listed base -> data, as in Pyro's
``TransformedDistribution``) has density

.. math:: \log p(y) = \log p_{\text{base}}(x) - \sum_{k=1}^K \log|\det J_{f_k}(x_{k-1})|,
          \qquad x = f_1^{-1} \circ \dots \circ f_K^{-1}(y).

Every ``Flow`` subclass is registered in :data:`FLOWS` by its class name and remembers the
arguments it was built with (``flow.config``), so :func:`~pyroflows.load` rebuilds it without user
code. The presets live beside this module, a file per family.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.conditional import ConditionalTransform
from torch import Tensor, nn
from torch.distributions import Transform

from ..nn.defaults import default_hidden_dims
from ..transforms.base import (
    FlowTransform,
    NonFiniteError,
    _broadcastable,
    _event_text,
    is_validation_enabled,
    nonfinite_rows,
)

__all__ = ["FLOWS", "Flow", "FlowDistribution"]


def _layer(
    plain: type,
    conditional: type,
    input_dim: int,
    *,
    hidden_dims: Sequence[int] | None,
    context_dim: int,
    **kw: Any,
) -> Any:
    """One layer of class ``plain``, or of its conditional form ``conditional`` when
    ``context_dim`` > 0 (the presets' shared "conditional or not" choice)."""
    if context_dim:
        return conditional(input_dim, context_dim=context_dim, hidden_dims=hidden_dims, **kw)
    return plain(input_dim, hidden_dims=hidden_dims, **kw)


#: class name -> Flow subclass, filled automatically; used by ``load``.
FLOWS: dict[str, type[Flow]] = {}


class FlowDistribution(dist.TransformedDistribution):
    """Pyro ``TransformedDistribution`` with a one-pass :meth:`rsample_and_log_prob`.

    Input checks are pyroflows' own (shape, finiteness with the bad rows named, switchable with
    :func:`pyroflows.validation`), so Pyro's argument validation is off for this distribution.

    Calling a :class:`Flow` returns one; ``temperature`` scales the base draws of
    ``rsample``/``rsample_and_log_prob`` (``< 1`` samples nearer the modes).

    Example:
        >>> import pyroflows as pf
        >>> d = pf.RealNVP(2, num_layers=2, hidden_dims=(8,))()
        >>> type(d).__name__, d.event_shape
        ('FlowDistribution', torch.Size([2]))
        >>> x, lp = d.rsample_and_log_prob((4,))
        >>> x.shape, torch.allclose(lp, d.log_prob(x), atol=1e-5)
        (torch.Size([4, 2]), True)
        >>> d.log_prob(torch.ones(3))
        Traceback (most recent call last):
            ...
        ValueError: Expected data shape (..., 2); got (3,).
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
        if not value.is_floating_point():
            dtype = self.base_dist.mean.dtype
            raise TypeError(
                f"Expected floating-point data; got {value.dtype}. Convert the data first, "
                f"e.g. x.to({dtype})."
            )
        batch = value.shape[: value.dim() - n]
        if not _broadcastable(batch, self.batch_shape):
            raise ValueError(
                f"Expected data whose batch shape broadcasts with the distribution's batch shape "
                f"{tuple(self.batch_shape)} (the context's rows); got data of shape "
                f"{tuple(value.shape)}, batch shape {tuple(batch)}. Pass one context row per data "
                "row, or a single context vector for all rows."
            )
        if math.isfinite(float(value.detach().sum())):  # one reduction; NaN/Inf poison the sum
            return
        rows = nonfinite_rows(value, n)[:5].tolist()
        if rows:
            raise NonFiniteError(
                f"data contains NaN or Inf (first bad rows {rows}); remove or impute those rows, "
                "or wrap the call in pyroflows.validation(False) to get NaN log-densities instead."
            )

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density of ``value``; an empty batch (e.g. shape ``(0, D)``) gives an empty result."""
        self._check(value)
        if not value.numel():  # nothing to score (torch's Independent cannot reshape it)
            batch = value.shape[: value.dim() - len(self.event_shape)]
            return value.new_zeros(torch.broadcast_shapes(batch, self.batch_shape))
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
        if not _log_prob:
            lp = None
        elif x.numel():
            lp = self.base_dist.log_prob(x)
        else:  # an empty sample (torch's Independent cannot reshape it)
            lp = x.new_zeros(x.shape[: x.dim() - len(self.base_dist.event_shape)])
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
                if "hidden_dims" in config and config["hidden_dims"] is None:
                    # record the sizes built, so the file loads the same if the rule changes
                    config["hidden_dims"] = default_hidden_dims()
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
            if is_validation_enabled() and not math.isfinite(float(context.detach().sum())):
                rows = nonfinite_rows(context, 1)[:5].tolist()
                if rows:  # (a finite sum that merely overflowed has no bad rows)
                    raise NonFiniteError(
                        f"context contains NaN or Inf (first bad rows {rows}); remove or impute "
                        "those rows, or wrap the call in pyroflows.validation(False) to get NaN "
                        "log-densities instead."
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

    def clear_cache(self) -> None:
        """Empty every transform's cache slot; needed only after an in-place edit through
        ``.data`` (e.g. ``p.data.mul_(2)``), which torch's version counters do not record."""
        for m in self.modules():
            if isinstance(m, FlowTransform):
                m.clear_cache()

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
        """Save configuration, weights and JSON-able ``metadata``; see :func:`save`."""
        from .io import save

        save(self, path, **metadata)

    def standardize_(
        self,
        data: Tensor | None = None,
        *,
        mean: Tensor | Sequence[float] | None = None,
        std: Tensor | Sequence[float] | None = None,
    ) -> Flow:
        r"""Put a fixed standardisation :math:`x = \mu + \sigma \odot z` at the data end (in place).

        Appends (or replaces) a :class:`~pyroflows.transforms.Standardize` layer, so the flow's
        learnable layers see :math:`z = (x - \mu) / \sigma` while ``log_prob`` takes data in
        original units (with the log-Jacobian :math:`-\sum_j \log \sigma_j`) and ``sample``
        returns original units. :math:`\mu, \sigma` are buffers: saved by :func:`save`, never
        trained.

        Either fit on raw data after ``flow.standardize_(x_train)`` (maximum likelihood), or
        standardise the data yourself, fit, and attach the same :math:`\mu, \sigma` afterwards
        (what the ``pyroflows`` command does; flow matching trains a bare CNF, so use this order
        for it).

        Args:
            data: rows ``(N, *event_shape)`` whose per-element mean and standard deviation
                become :math:`\mu, \sigma`.
            mean: :math:`\mu` (instead of ``data``), broadcastable to ``event_shape``.
            std: :math:`\sigma` (> 0, with ``mean``).

        Returns:
            the flow itself.

        Example:
            >>> from pyroflows import MAF
            >>> flow = MAF(2, num_layers=1, hidden_dims=(8,))
            >>> x = torch.tensor([[100.0, -5.0], [120.0, -3.0]])
            >>> z = (x - x.mean(0)) / x.std(0, unbiased=False)
            >>> before = flow.log_prob(z)
            >>> _ = flow.standardize_(x)
            >>> torch.allclose(flow.log_prob(x), before - torch.log(torch.tensor(10.0)))
            True
        """
        from ..transforms.standardize import Standardize

        if getattr(self, "augment_dim", 0):
            raise ValueError(
                "standardize_ does not support augmented CNFs (augment_dim > 0): standardise the "
                "data yourself and keep the mean and std beside the model."
            )
        if (data is None) == (mean is None and std is None) or (mean is None) != (std is None):
            raise TypeError(
                "standardize_ takes either data rows (flow.standardize_(x)) or both mean= and "
                "std= (flow.standardize_(mean=m, std=s))."
            )
        if data is not None:
            if not isinstance(data, Tensor):
                data = torch.as_tensor(data)
            shape, n = tuple(self.event_shape), len(self.event_shape)
            if data.dim() < n + 1 or tuple(data.shape[data.dim() - n :]) != shape:
                raise ValueError(
                    f"Expected rows of shape (N, {', '.join(map(str, shape))}); "
                    f"got {tuple(data.shape)}."
                )
            rows = data.detach().reshape(-1, *shape).double()
            if len(rows) < 2 or not bool(torch.isfinite(rows).all()):
                raise ValueError("standardize_ needs at least 2 rows, all finite.")
            mean, std = rows.mean(0), rows.std(0, unbiased=False)
            constant = torch.nonzero((std <= 1e-12 * mean.abs().clamp(min=1.0)).reshape(-1))
            if len(constant):
                raise ValueError(
                    f"element(s) {constant.reshape(-1)[:10].tolist()} of the data are constant; "
                    "a density over a constant column does not exist, so drop those columns."
                )
        ref = self.base_loc
        mean = torch.as_tensor(mean, dtype=ref.dtype, device=ref.device)
        std = torch.as_tensor(std, dtype=ref.dtype, device=ref.device)
        layer = Standardize(mean, std, event_shape=self.event_shape)
        last = self.transforms[-1] if len(self.transforms) else None
        if isinstance(last, Standardize):
            self.transforms[-1] = layer
        else:
            self.transforms.append(layer)
        return self

    def extra_repr(self) -> str:
        return f"event_shape={tuple(self.event_shape)}, context_dim={self.context_dim}, base={self.base!r}"
