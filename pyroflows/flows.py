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
    _broadcastable,
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
    "NSF",
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
_FORMAT = "pyroflows-model-2"


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


def _class_name(value: type) -> str:
    return f"{value.__module__}.{value.__qualname__}"


def _allowed_class(name: str) -> type[nn.Module] | None:
    """The activation class a config may name, or None: an ``nn.Module`` subclass defined in
    ``torch.nn`` or ``pyroflows``, already imported (nothing is imported or called to find it),
    that is not a flow or a transform and can be built without arguments."""
    import sys

    module_name, _, attr = name.rpartition(".")
    if not (
        module_name.startswith("torch.nn.")
        or module_name == "pyroflows"
        or module_name.startswith("pyroflows.")
    ):
        return None
    module = sys.modules.get(module_name)
    obj = vars(module).get(attr) if module is not None else None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        return None
    if issubclass(obj, (Flow, Transform)):
        return None
    try:
        params = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return None
    empty = inspect.Parameter.empty
    var = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if any(p.default is empty and p.kind not in var for p in params):
        return None
    return obj


def _encode(value: Any) -> Any:
    """A JSON-able form of a flow configuration; classes become ``{"__class__": "mod.Name"}``.

    Only classes that :func:`load` accepts may appear (activations from ``torch.nn`` or
    ``pyroflows``), so a model that could not be loaded back is refused before it is written.
    """
    if isinstance(value, type):
        name = _class_name(value)
        if _allowed_class(name) is not value:
            raise ValueError(
                f"cannot save a configuration naming {name}: model files may only name activation "
                "classes from torch.nn or pyroflows (e.g. torch.nn.ReLU); save the weights with "
                "torch.save(flow.state_dict(), path) instead."
            )
        return {"__class__": name}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, torch.Size):
        return list(value)
    return value


def _decode(value: Any) -> Any:
    """Inverse of :func:`_encode` for the JSON kinds a configuration holds; anything else (a
    class outside the activation allow-list, a function) raises ValueError before any call."""
    if isinstance(value, dict):
        if "__class__" in value:
            name = value["__class__"]
            cls = _allowed_class(name) if isinstance(name, str) and len(value) == 1 else None
            if cls is None:
                raise ValueError(
                    f"refusing {value!r}: a model file may only name activation classes "
                    "(nn.Module subclasses from torch.nn or pyroflows such as torch.nn.ReLU)"
                )
            return cls
        return {str(k): _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"unexpected value of type {type(value).__name__} in a configuration")


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
            >>> flow = MAF(2, num_layers=1, hidden_dims=(8,))
            >>> x = torch.tensor([[100.0, -5.0], [120.0, -3.0]])
            >>> z = (x - x.mean(0)) / x.std(0, unbiased=False)
            >>> before = flow.log_prob(z)
            >>> _ = flow.standardize_(x)
            >>> torch.allclose(flow.log_prob(x), before - torch.log(torch.tensor(10.0)))
            True
        """
        from .transforms.standardize import Standardize

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


_LEGACY_FORMAT = "pyroflows-model-1"  # no checksum; read for files written before it


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _bad_file(path: Path, what: object) -> ValueError:
    return ValueError(f"{path} is not a valid pyroflows model file: {_one_line(what)}")


def _tensor_bytes(t: Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _checksum(payload: dict[str, Any]) -> str:
    """SHA-256 over every field of a model file: the text fields by name, then each tensor of
    the state dict in key order (name, dtype, shape and raw bytes)."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(k for k in payload if k not in ("state_dict", "checksum")):
        h.update(f"{key}={payload[key]!s}\n".encode())
    for name in sorted(payload["state_dict"]):
        t = payload["state_dict"][name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _write_atomic(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``: a write
    that fails part-way leaves any previous file untouched and no temporary behind."""
    import os
    import secrets

    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory; give a file name, e.g. {path / 'model.pt'}"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"no directory {path.parent} to save {path.name} in; create it first "
            f"(mkdir -p {path.parent})"
        )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _payload(kind: str, config: dict, layout: dict, state: dict, metadata: dict) -> dict:
    payload: dict[str, Any] = {
        "format": _FORMAT,
        "kind": kind,
        "config": json.dumps(_encode(config)),
        "layout": json.dumps(layout),
        "metadata": json.dumps(metadata),
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
    }
    payload["checksum"] = _checksum(payload)
    return payload


def save(flow: Any, path: str | Path, /, **metadata: Any) -> None:
    """Write a model file holding ``flow``'s configuration, weights and ``metadata``.

    ``flow`` is a :class:`Flow` built by a preset (with any :meth:`Flow.standardize_` layer) or
    an :class:`~pyroflows.AutoFlow` guide that has seen its model (see :func:`load`). The file
    holds JSON text and tensors only, plus a SHA-256 checksum of both. It is written to a
    temporary file beside ``path`` and renamed over it, so a failed save never leaves a truncated
    file where a good one was.

    Example:
        >>> import tempfile, os, pyroflows as pf
        >>> flow = pf.MAF(3, num_layers=2, hidden_dims=(8,))
        >>> path = os.path.join(tempfile.mkdtemp(), "maf.pt")
        >>> pf.save(flow, path, note="demo")
        >>> again = pf.load(path)
        >>> torch.equal(again.log_prob(torch.ones(3)), flow.log_prob(torch.ones(3)))
        True
        >>> again.metadata, again.training
        ({'note': 'demo'}, False)
    """
    from .infer.autoguide import AutoFlow
    from .transforms.standardize import Standardize

    json.dumps(metadata)  # refuse what JSON cannot hold before anything is written
    if isinstance(flow, AutoFlow):
        config, layout, state = flow._saved_parts()
        kind, inner = "AutoFlow", flow.flow
    elif isinstance(flow, Flow):
        config, layout, state = flow.config, {}, flow.state_dict()
        kind, inner = "Flow", flow
    else:
        raise TypeError(
            f"pf.save takes a pf.Flow or a pf.AutoFlow guide; got {type(flow).__name__}."
        )
    last = inner.transforms[-1] if len(inner.transforms) else None
    layout["standardize"] = isinstance(last, Standardize)
    if config is None:
        raise ValueError(
            "this Flow was built from a list of transforms, so its configuration is unknown; "
            "save its weights with torch.save(flow.state_dict(), path) instead, or use a preset."
        )
    _write_atomic(_payload(kind, config, layout, state, metadata), Path(path))


def _read_payload(path: Path, map_location: Any) -> dict[str, Any]:
    """The checked contents of a model file (format, field types, checksum)."""
    try:
        payload = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path} is not a pyroflows model file ({exc.__class__.__name__})."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") not in (_FORMAT, _LEGACY_FORMAT):
        raise ValueError(f"{path} is not a pyroflows model file (format {_FORMAT} expected).")
    legacy = payload["format"] == _LEGACY_FORMAT
    text = ("config", "metadata") if legacy else ("kind", "config", "layout", "metadata")
    for key in (*text, "state_dict", *(() if legacy else ("checksum",))):
        if key not in payload:
            raise _bad_file(path, f"the {key!r} entry is missing")
    for key in text:
        if not isinstance(payload[key], str):
            raise _bad_file(path, f"the {key!r} entry is not text")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise _bad_file(path, "the state dict is not a mapping of names to tensors")
    if not legacy and payload["checksum"] != _checksum(payload):
        raise ValueError(
            f"{path} was altered or damaged after it was saved (its checksum does not match its "
            "contents); refit or restore the file from a copy."
        )
    out = dict(payload)
    for key in ("config", "layout", "metadata") if not legacy else text:
        try:
            out[key] = json.loads(payload[key])
        except ValueError as exc:
            raise _bad_file(path, f"the {key!r} entry is not valid JSON ({exc})") from exc
    out.setdefault("kind", "Flow")
    out.setdefault("layout", {})
    if not isinstance(out["config"], dict) or not isinstance(out["metadata"], dict):
        raise _bad_file(path, "the configuration and metadata must be JSON objects")
    if not isinstance(out["layout"], dict):
        raise _bad_file(path, "the layout entry must be a JSON object")
    return out


def _rebuild(config: dict[str, Any], path: Path) -> Flow:
    """Build the flow a configuration describes: the class must be a known ``Flow`` subclass and
    the arguments must fit its signature; both are checked before anything is called."""
    config = dict(config)
    cls_name = config.pop("class", None)
    if not isinstance(cls_name, str):
        raise _bad_file(path, "the configuration names no flow class")
    if cls_name not in FLOWS:
        importlib.import_module("pyroflows")
    cls = FLOWS.get(cls_name)
    if cls is None:
        raise ValueError(f"unknown flow class {cls_name!r} in {path}")
    try:
        kwargs = _decode(config)
    except ValueError as exc:
        raise _bad_file(path, exc) from exc
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise _bad_file(path, f"arguments do not fit {cls_name}: {exc}") from exc
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise _bad_file(path, f"cannot build {cls_name} from its configuration: {exc}") from exc


def _load_state(module: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """``load_state_dict`` after checking names and shapes, with a one-line error."""
    want = module.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [
        f"{k} is {tuple(state[k].shape)} in the file but {tuple(v.shape)} in the model"
        for k, v in want.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or extra or shapes:
        parts = [
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {extra[:3]}" if extra else "",
        ]
        parts += shapes[:3]
        raise _bad_file(
            path,
            f"its weights do not fit its configuration ({'; '.join(p for p in parts if p)})",
        )
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise _bad_file(path, f"its weights do not fit its configuration ({exc})") from exc


def load(
    path: str | Path,
    *,
    model: Any = None,
    map_location: str | torch.device | None = "cpu",
) -> Any:
    """Rebuild a flow (or an ``AutoFlow`` guide) saved by :func:`save`; no user code needed.

    The returned module is in evaluation mode (``.eval()``: CNFs use their evaluation solver and
    no regulariser); ``pf.fit``/``pf.fit_svi`` switch to training mode by themselves, and
    ``.train()`` does it by hand. ``.metadata`` holds the JSON extras given to :func:`save`.

    A guide file needs its model: ``guide = pf.load(path, model=model)`` returns an
    :class:`~pyroflows.AutoFlow` whose saved flow, location and scale are put in place the first
    time it sees the model (``guide(*args)``, an SVI step, ``guide.median(*args)``), after checking
    that the model has the same latent sites (names, unconstrained shapes, supports) in the same
    order. As for any Pyro module, clear Pyro's parameter store (``pyro.clear_param_store()``)
    first if another guide of the same name ran in this process.

    Nothing named in the file is called except a known :class:`Flow` subclass (with arguments
    that fit its signature) and activation classes from ``torch.nn``/``pyroflows``; a file whose
    contents do not match its checksum, or whose weights do not fit its configuration, raises a
    one-line ``ValueError``.

    Args:
        path: the model file.
        model: the Pyro model of a saved guide (required for guides, refused for flows).
        map_location: where to put the tensors (``torch.load``'s argument).
    """
    from .infer.autoguide import AutoFlow

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    payload = _read_payload(path, map_location)
    kind, layout, state = payload["kind"], payload["layout"], payload["state_dict"]
    if kind not in ("Flow", "AutoFlow"):
        raise _bad_file(path, f"unknown kind {kind!r}")
    if kind == "AutoFlow" and model is None:
        raise ValueError(
            f"{path} holds an AutoFlow guide, which needs its model: pf.load(path, model=model)."
        )
    if kind == "Flow" and model is not None:
        raise ValueError(f"{path} holds a flow, not a guide; call pf.load(path) without model=.")
    flow = _rebuild(payload["config"], path)
    prefix = "flow." if kind == "AutoFlow" else ""
    flow_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    floats = [v.dtype for v in flow_state.values() if v.dtype.is_floating_point]
    if floats:
        flow = flow.to(floats[0])
    if layout.get("standardize") is True:  # a placeholder layer; its values come with the state
        try:
            flow.standardize_(mean=torch.zeros(flow.event_shape), std=torch.ones(flow.event_shape))
        except ValueError as exc:
            raise _bad_file(path, exc) from exc
    _load_state(flow, flow_state, path)
    if kind == "AutoFlow":
        rest = {k: v for k, v in state.items() if not k.startswith(prefix)}
        try:
            out = AutoFlow._from_saved(model, flow, layout, rest)
        except ValueError as exc:
            raise _bad_file(path, exc) from exc
    else:
        out = flow
    out.metadata = payload["metadata"]
    return out.eval()


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
        **kwargs: options of :class:`~pyroflows.transforms.ContinuousFlow` (``solver`` and
            ``eval_solver``: an :class:`~pyroflows.transforms.ODESolver` or a dict of its
            settings; ``divergence``, ``regularize``, ``adjoint``, ``activation``, ``t0``,
            ``t1``, ``probe``). A saved model keeps its solvers.

    Example:
        >>> flow = CNF(2, hidden_dims=(16,), solver={"rtol": 1e-4, "atol": 1e-4})
        >>> x, lp = flow.rsample_and_log_prob((3,))
        >>> x.shape, lp.shape, flow.transform.nfe > 0
        (torch.Size([3, 2]), torch.Size([3]), True)
        >>> flow.transform.eval_solver
        ODESolver(method='dopri5', rtol=0.0001, atol=0.0001, step_size=None)
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
        from .transforms.ode import upgrade_solver_options

        if int(augment_dim) < 0:
            raise ValueError(f"augment_dim must be >= 0; got {augment_dim}.")
        kwargs = upgrade_solver_options(kwargs)  # model files written with method=, rtol=, ...
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
