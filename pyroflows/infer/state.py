"""Copies of training state: the rollback snapshot, RNG states and checkpoint files.

Used by :mod:`pyroflows.infer.engine`; a checkpoint is a ``torch.save`` dictionary (format
``pyroflows-checkpoint-1``) that loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["load_checkpoint"]

_FORMAT = "pyroflows-checkpoint-1"


# ---- copies of state ---------------------------------------------------------------------------


def _copy_into(dsts: list[Tensor], srcs: list[Tensor]) -> None:
    with torch.no_grad():
        try:
            torch._foreach_copy_(dsts, srcs)
        except (RuntimeError, AttributeError):
            for d, s in zip(dsts, srcs, strict=True):
                d.copy_(s)


def _opt_states(opt: torch.optim.Optimizer) -> list[dict | None]:
    return [opt.state.get(p) or None for g in opt.param_groups for p in g["params"]]


class _Snapshot:
    """A copy of the task's state (and optionally the optimiser state) in reusable buffers."""

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
            _copy_into(self._dsts, srcs)  # the same tensors as last time: one foreach copy
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
                _copy_into(list(old.values()), [v.detach() for v in state.values()])
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
            _copy_into(dsts, srcs)
        return out

    def restore(self, state: dict[str, Tensor], opt: torch.optim.Optimizer | None = None) -> None:
        if self.state is None:
            return
        keys = list(self.state)
        _copy_into([state[k] for k in keys], [self.state[k] for k in keys])
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


def _finite(state: dict[str, Tensor]) -> bool:
    floats = [v for v in state.values() if v.is_floating_point()]
    return not floats or bool(torch.stack([torch.isfinite(v).all() for v in floats]).all())


# ---- checkpoints -------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
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
        >>> _ = pf.fit(pf.MAF(2, 1, (8,)), torch.randn(50, 2), steps=3, checkpoint=path, progress=False)
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
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a pyroflows checkpoint (format {_FORMAT} expected)")
    return ckpt


def _write_atomically(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, str(tmp))
    os.replace(tmp, path)
