"""Model files: :func:`save` writes a flow's configuration, weights and a checksum;
:func:`load` rebuilds the flow without calling anything but a known ``Flow`` preset.

A configuration is JSON; the only classes it may name are activations from ``torch.nn`` or
``pyroflows``. Options renamed since a file was written are upgraded by :func:`upgrade_config`
before the preset is built, so old files keep loading.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Transform

from .base import FLOWS, Flow

__all__ = ["load", "save"]

_FORMAT = "pyroflows-model-2"
_LEGACY_FORMAT = "pyroflows-model-1"  # no checksum; read for files written before it


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
    from ..infer.autoguide import AutoFlow
    from ..transforms.standardize import Standardize

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


#: class name -> {option name in older model files: its current name}.
_RENAMED_OPTIONS: dict[str, dict[str, str]] = {
    "Glow": {"steps": "steps_per_level"},  # renamed: ``steps`` means optimiser steps in fit
    "RealNVP": {"steps": "steps_per_level"},
}

#: flow class -> {option: the value files written before the option existed were built with}
_ADDED_OPTIONS: dict[str, dict[str, Any]] = {
    "NSF": {"invert_spline": False},  # the splines were on the base side before
    "MAF": {"invert_affine": False},  # and so were MAF's affine maps
}


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the options renamed since it was written under their current names, and
    the options added since set to what the file's flow was built with.

    Example:
        >>> upgrade_config({"class": "Glow", "shape": [1, 8, 8], "steps": 2})
        {'class': 'Glow', 'shape': [1, 8, 8], 'steps_per_level': 2}
        >>> upgrade_config({"class": "NSF", "input_dim": 2})    # written before invert_spline
        {'invert_spline': False, 'class': 'NSF', 'input_dim': 2}
    """
    cls = config.get("class")
    renamed = _RENAMED_OPTIONS.get(cls, {}) if isinstance(cls, str) else {}
    out = {}
    for key, value in config.items():
        new = renamed.get(key)
        out[new if new is not None and new not in config else key] = value
    if isinstance(cls, str):
        out = {**_ADDED_OPTIONS.get(cls, {}), **out}
    return out


def _rebuild(config: dict[str, Any], path: Path) -> Flow:
    """Build the flow a configuration describes: the class must be a known ``Flow`` subclass and
    the arguments must fit its signature; both are checked before anything is called."""
    config = upgrade_config(config)
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

    Example:
        >>> import tempfile, os, pyroflows as pf
        >>> path = os.path.join(tempfile.mkdtemp(), "nice.pt")
        >>> pf.NICE(2, num_layers=2, hidden_dims=(8,)).save(path, data="two moons")
        >>> flow = pf.load(path)
        >>> type(flow).__name__, flow.config["num_layers"], flow.metadata
        ('NICE', 2, {'data': 'two moons'})
        >>> pf.load(path + ".missing")
        Traceback (most recent call last):
            ...
        FileNotFoundError: no model file at .../nice.pt.missing
    """
    from ..infer.autoguide import AutoFlow

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
