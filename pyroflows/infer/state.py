"""Copies of training state: the rollback snapshot, RNG states, fingerprints and checkpoint files.

The internal API of the training loop (:mod:`pyroflows.infer.loop` and
:mod:`pyroflows.infer.engine`): :class:`Snapshot`, :func:`copy_into`, :func:`all_finite`,
:func:`rng_state` / :func:`set_rng_state`, :func:`fingerprint`, :func:`tensor_mismatches`,
:func:`check_resumable`, :func:`write_atomically` and :func:`load_checkpoint`. A checkpoint is
a ``torch.save`` dictionary (format :data:`CHECKPOINT_FORMAT`) that loads with
``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

# What a user may call on a checkpoint file; the loop's helpers (Snapshot, copy_into,
# all_finite, rng_state, set_rng_state, check_resumable, write_atomically) are imported by name.
__all__ = [
    "CHECKPOINT_FORMAT",
    "fingerprint",
    "load_checkpoint",
    "tensor_mismatches",
]

#: Format tag of checkpoints; version 2 records the model's configuration, a SHA-256 of the
#: data and the optimiser settings, so that a resumed run can be checked before it starts.
CHECKPOINT_FORMAT = "pyroflows-checkpoint-2"


# ---- copies of state ---------------------------------------------------------------------------


def copy_into(dsts: list[Tensor], srcs: list[Tensor]) -> None:
    """Copy ``srcs`` into ``dsts`` in place, pairwise (one ``_foreach_copy_`` when possible)."""
    with torch.no_grad():
        try:
            torch._foreach_copy_(dsts, srcs)
        except (RuntimeError, AttributeError):
            for d, s in zip(dsts, srcs, strict=True):
                d.copy_(s)


def _opt_states(opt: torch.optim.Optimizer) -> list[dict | None]:
    return [opt.state.get(p) or None for g in opt.param_groups for p in g["params"]]


class Snapshot:
    """A copy of the task's state (and optionally the optimiser state) in reusable buffers:
    :meth:`save` copies the live tensors in, :meth:`restore` copies them back, and
    :meth:`to_dict` / :meth:`load_dict` carry it through a checkpoint."""

    def __init__(self) -> None:
        self.state: dict[str, Tensor] | None = None
        self.opt: list[dict | None] | None = None
        self._srcs: list[Tensor] | None = None  # the live tensors of the last save ...
        self._dsts: list[Tensor] = []  # ... and their copies, in the same order

    @staticmethod
    def _sources(state: dict[str, Tensor], opt: torch.optim.Optimizer | None) -> list | None:
        srcs = list(state.values())
        for st in _opt_states(opt) if opt is not None else ():
            for v in (st or {}).values():
                if not isinstance(v, Tensor):
                    return None  # e.g. an int counter: take the general path
                srcs.append(v)
        return srcs

    def save(self, state: dict[str, Tensor], opt: torch.optim.Optimizer | None = None) -> None:
        srcs, prev = self._sources(state, opt), self._srcs
        same = srcs is not None and prev is not None and len(srcs) == len(prev)
        if same and all(a is b for a, b in zip(srcs, prev, strict=True)):  # type: ignore[arg-type]
            copy_into(self._dsts, srcs)  # the same tensors as last time: one foreach copy
            return
        self._save(state, opt)
        self._srcs = srcs
        self._dsts = list((self.state or {}).values())
        if opt is not None:
            for saved in self.opt or []:
                self._dsts += [v for v in (saved or {}).values() if isinstance(v, Tensor)]

    def _save(self, state: dict[str, Tensor], opt: torch.optim.Optimizer | None = None) -> None:
        old = self.state
        if old and next(iter(old.values())).device != next(iter(state.values())).device:
            old = None  # loaded from a checkpoint onto another device: reallocate here
        if old is not None and old.keys() == state.keys():
            try:
                copy_into(list(old.values()), [v.detach() for v in state.values()])
            except RuntimeError:  # shapes changed: reallocate
                old = None
        if old is None or old.keys() != state.keys():
            self.state = {k: v.detach().clone() for k, v in state.items()}
        if opt is not None:
            self.opt = self._save_opt(_opt_states(opt), self.opt)

    @staticmethod
    def _save_opt(states: list[dict | None], old: list[dict | None] | None) -> list[dict | None]:
        dsts, srcs, out = [], [], []
        for i, st in enumerate(states):
            prev = old[i] if old is not None and i < len(old) else None
            if st is None:
                out.append(None)
                continue
            copy = {}
            for k, v in st.items():
                if isinstance(v, Tensor):
                    p = prev.get(k) if prev is not None else None
                    if (
                        isinstance(p, Tensor)
                        and p.shape == v.shape
                        and p.dtype == v.dtype
                        and p.device == v.device
                    ):
                        dsts.append(p)
                        srcs.append(v)
                        copy[k] = p
                    else:
                        copy[k] = v.detach().clone()
                else:
                    copy[k] = v
            out.append(copy)
        if dsts:
            copy_into(dsts, srcs)
        return out

    def restore(self, state: dict[str, Tensor], opt: torch.optim.Optimizer | None = None) -> None:
        if self.state is None:
            return
        keys = list(self.state)
        copy_into([state[k] for k in keys], [self.state[k] for k in keys])
        if opt is not None and self.opt is not None:
            params = [p for g in opt.param_groups for p in g["params"]]
            for p, saved in zip(params, self.opt, strict=False):
                if saved is None:
                    opt.state.pop(p, None)
                    continue
                cur = opt.state[p]
                for k, v in saved.items():
                    if isinstance(v, Tensor):
                        c = cur.get(k)
                        if isinstance(c, Tensor) and c.shape == v.shape:
                            with torch.no_grad():
                                c.copy_(v)
                        else:
                            cur[k] = v.clone()
                    else:
                        cur[k] = v

    def to_dict(self) -> dict[str, Any] | None:
        return None if self.state is None else {"state": self.state, "opt": self.opt}

    def load_dict(self, d: dict[str, Any] | None) -> None:
        self.state = None if d is None else d["state"]
        self.opt = None if d is None else d["opt"]
        self._srcs = None


def all_finite(state: dict[str, Tensor]) -> bool:
    """Whether every floating-point tensor of ``state`` is finite (one synchronisation)."""
    floats = [v for v in state.values() if v.is_floating_point()]
    return not floats or bool(torch.stack([torch.isfinite(v).all() for v in floats]).all())


# ---- checkpoints -------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The states of the torch (and CUDA), numpy and Python generators, checkpointable."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`rng_state`'s dictionary."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Read a checkpoint written by :func:`~pyroflows.infer.engine.train` (``None`` if there is
    no file at ``path``).

    Example:
        >>> import os, tempfile, torch, pyroflows as pf
        >>> path = os.path.join(tempfile.mkdtemp(), "run.pt")
        >>> load_checkpoint(path) is None
        True
        >>> flow = pf.MAF(2, num_layers=1, hidden_dims=(8,))
        >>> _ = pf.fit(flow, torch.randn(50, 2), steps=3, checkpoint=path, progress=False)
        >>> ckpt = load_checkpoint(path)
        >>> ckpt["step"], ckpt["kind"], len(ckpt["history"]["train_loss"])
        (3, 'fit', 3)
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a pyroflows checkpoint ({exc})") from exc
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt == "pyroflows-checkpoint-1":
        raise ValueError(
            f"{path} was written by an older pyroflows that did not record the model, data and "
            "optimiser it belongs to, so resuming from it cannot be checked; pass resume=False "
            "(or another checkpoint path) to start over"
        )
    if fmt != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a pyroflows checkpoint (format {CHECKPOINT_FORMAT} expected)"
        )
    return ckpt


def write_atomically(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file beside it and a rename, so that a
    failed write (disk full, Ctrl-C) leaves the previous file intact and no temporary behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


# ---- what a resumed run must share with its checkpoint ------------------------------------------


def fingerprint(tensors: Iterable[Tensor | None]) -> str:
    """SHA-256 (hex) of the exact bytes, dtypes and shapes of ``tensors`` (``None`` counts too):
    equal only for the same values in the same order.

    Example:
        >>> x = torch.arange(6.0).reshape(3, 2)
        >>> fingerprint([x]) == fingerprint([x.clone()]), fingerprint([x]) == fingerprint([x.flip(0)])
        (True, False)
    """
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none;")
            continue
        t = t.detach().contiguous().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 24:
        return value[:12] + "..."
    return value


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``"key: checkpoint a, now b"`` for every entry that differs (one level into dicts, whose
    ``"class"`` entry is named first).

    Example:
        >>> differences({"lr": 0.1, "flow": {"class": "MAF", "hidden_dims": [8]}},
        ...             {"lr": 0.1, "flow": {"class": "MAF", "hidden_dims": [16]}})
        ['flow hidden_dims: checkpoint [8], now [16]']
    """
    out = []
    for key in dict.fromkeys([*saved, *now]):
        a, b = saved.get(key), now.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            if a.get("class") != b.get("class"):
                out.append(f"{key} class: checkpoint {a.get('class')}, now {b.get('class')}")
            else:
                out += [f"{key} {d}" for d in differences(a, b)]
        else:
            out.append(f"{key}: checkpoint {_short(a)}, now {_short(b)}")
    return out


def tensor_mismatches(saved: dict[str, Tensor], live: dict[str, Tensor]) -> list[str]:
    """How the tensors of a checkpoint fail to fit the live ones (missing, extra, other shape
    or dtype); empty when every saved tensor can be copied into its live counterpart.

    Example:
        >>> tensor_mismatches({"w": torch.zeros(2, 3)}, {"w": torch.zeros(2, 4), "b": torch.zeros(1)})
        ['w: checkpoint (2, 3), now (2, 4)', 'b: not in the checkpoint']
    """
    out = []
    for k, v in live.items():
        s = saved.get(k)
        if s is None:
            out.append(f"{k}: not in the checkpoint")
        elif s.shape != v.shape:
            out.append(f"{k}: checkpoint {tuple(s.shape)}, now {tuple(v.shape)}")
        elif s.dtype != v.dtype:
            out.append(f"{k}: checkpoint {s.dtype}, now {v.dtype}")
    out += [f"{k}: only in the checkpoint" for k in saved if k not in live]
    return out


def check_resumable(
    ckpt: dict[str, Any],
    *,
    path: Any,
    kind: str,
    meta: dict[str, Any],
    settings: dict[str, Any],
    state: dict[str, Tensor],
) -> None:
    """Raise a ``ValueError`` saying what differs unless a run of ``kind`` with ``meta`` (what
    the task must share: for ``fit`` the flow, the data's SHA-256, the sizes), optimiser
    ``settings`` and live tensors ``state`` can continue from ``ckpt``. Touches nothing."""

    def refuse(detail: str, advice: str) -> ValueError:
        return ValueError(f"cannot resume from {path}: {detail}; {advice}")

    start_over = "or pass resume=False (or another checkpoint path) to start over"
    if ckpt.get("kind") != kind:
        raise refuse(f"it was written by a {ckpt.get('kind')} run, not a {kind} run", start_over)
    diff = differences(ckpt["meta"], meta)
    if diff:
        raise refuse(
            f"this run differs from the checkpoint ({'; '.join(diff)})",
            f"pass the same model, data (the same rows in the same order) and settings, "
            f"{start_over}",
        )
    saved = ckpt["settings"]
    diff = differences(saved, settings)
    if saved["optimizer"] != settings["optimizer"]:  # their options differ too: name the class
        diff = [f"optimizer: checkpoint {saved['optimizer']}, now {settings['optimizer']}"]
    if diff:
        how = (
            "flow.load_state_dict(pyroflows.infer.engine.load_checkpoint(path)['state'])"
            if kind == "fit"
            else "pyroflows.infer.engine.load_checkpoint(path)['state']"
        )
        raise refuse(
            f"the optimiser settings differ from the checkpoint's ({'; '.join(diff)})",
            "a resumed run continues the checkpoint's optimiser and learning-rate schedule "
            "exactly, so pass the same optimizer, lr, weight_decay, lr_schedule and warmup; to "
            f"go on with other settings, start a new run (another checkpoint path) from its "
            f"weights: {how}",
        )
    bad = tensor_mismatches(ckpt["state"], state)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise refuse(
            f"its tensors do not fit this model ({'; '.join(bad[:5])}{more})",
            f"build the model with the checkpoint's configuration, {start_over}",
        )
