r"""The training loop shared by :func:`~pyroflows.infer.fit` and :func:`~pyroflows.infer.fit_svi`.

A *task* says what is trained (its parameters and state tensors, the loss of step :math:`k`, an
optional validation loss); :func:`train` does everything else, identically for both objectives:
the optimiser and learning-rate schedule, gradient clipping, divergence rollback, validation
with early stopping and best-weight restoring, checkpoints with exact resume, the progress bar,
callbacks and the :class:`History`.

Rollback. Before every optimiser step whose loss and gradients are finite, the state (weights,
buffers) and the optimiser state are copied into preallocated buffers (one ``_foreach_copy_``).
A step whose loss or gradient norm is NaN/Inf, or that raises
:class:`~pyroflows.NonFiniteError` (or a distribution's "invalid values" error), restores that
copy, halves the learning rate (the scheduler's base rates too) and warns; after
``MAX_FAILURES`` failures in a row training stops with ``History.diverged = True``. Weights are
never left non-finite.

Exact resume. Batch order is a pure function of ``(seed, epoch)``; a checkpoint holds the state,
the optimiser and scheduler, the RNG states of torch (and CUDA), numpy and Python, the history,
the rollback copy and the best state, so a resumed run replays the remaining steps bit for bit.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..transforms.base import NonFiniteError
from .history import _NAN, History
from .optim import make_optimizer, make_scheduler
from .state import (
    _FORMAT,
    _copy_into,
    _finite,
    _rng_state,
    _set_rng_state,
    _Snapshot,
    _write_atomically,
    load_checkpoint,
)

__all__ = ["MAX_FAILURES", "History", "LoopConfig", "Task", "load_checkpoint", "train"]

#: Failed (rolled-back) steps in a row after which training stops as diverged.
MAX_FAILURES = 5


class Task(Protocol):
    """What :func:`train` trains. ``fit`` and ``fit_svi`` each implement one."""

    kind: str  # "fit" or "svi"; checked on resume
    target: Any  # handed to callbacks (the flow, or the guide)
    has_validation: bool

    def named_parameters(self) -> list[tuple[str, Tensor]]:
        """What the optimiser updates (``fit_svi`` may discover more while training)."""

    def state(self) -> dict[str, Tensor]:
        """Every tensor a rollback, the best state or a checkpoint restores (live tensors)."""

    def loss(self, step: int) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """``(loss to minimise, value to record, extras)`` for step ``step``."""

    def validate(self) -> float:
        """Validation loss of the current weights."""

    def meta(self) -> dict[str, Any]:
        """Facts a resumed run must share with the checkpoint (data sizes, batch size...)."""

    def set_training(self, mode: bool) -> None: ...


@dataclass
class LoopConfig:
    """Options of :func:`train`; see :func:`~pyroflows.infer.fit` for their meaning. They are
    checked here, once for ``fit`` and ``fit_svi``.

    Example:
        >>> LoopConfig(steps=100, lr=1e-3).checkpoint_every
        100
        >>> LoopConfig(steps=100, lr=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: lr must be a finite number >= 0; got -1.0
    """

    steps: int
    lr: float
    optimizer: Any = "adam"
    lr_schedule: Any = None
    warmup: int = 0
    weight_decay: float = 0.0
    clip_grad: float | None = None
    eval_every: int = 1
    patience: int | None = None
    progress: bool = True
    checkpoint: str | Path | None = None
    checkpoint_every: int = 100
    callbacks: Sequence[Callable] = ()
    seed: int = 0  # the run's base seed (batch order), stored in checkpoints
    desc: str = "fit"

    def __post_init__(self) -> None:
        for name, value, low in (
            ("steps", self.steps, 1),
            ("eval_every", self.eval_every, 1),
            ("checkpoint_every", self.checkpoint_every, 1),
            ("patience", self.patience, 1),
            ("warmup", self.warmup, 0),
        ):
            if value is None and name == "patience":
                continue
            number = isinstance(value, (int, float, np.integer)) and not isinstance(value, bool)
            if not (number and value >= low and int(value) == value):
                raise ValueError(f"{name} must be a whole number >= {low}; got {value!r}")
        for name, value, low in (("lr", self.lr, 0.0), ("weight_decay", self.weight_decay, 0.0)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        clip = self.clip_grad
        if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
            raise ValueError(f"clip_grad must be None or a positive number; got {clip!r}")
        self.steps, self.warmup = int(self.steps), int(self.warmup)


# ---- the loop ----------------------------------------------------------------------------------


def _grad_norm(params: list[Tensor], clip: float | None) -> Tensor:
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _is_true(result: Any) -> bool:
    """A callback asks to stop by returning ``True`` (not any truthy value)."""
    return isinstance(result, (bool, np.bool_)) and bool(result)


def _is_divergence(exc: Exception) -> bool:
    """A NonFiniteError, or torch.distributions' "found invalid values" argument check."""
    return isinstance(exc, NonFiniteError) or (
        isinstance(exc, ValueError) and "invalid values" in str(exc)
    )


class _Loop:
    def __init__(self, task: Task, cfg: LoopConfig, ckpt: dict[str, Any] | None) -> None:
        self.task, self.cfg = task, cfg
        self.named = list(task.named_parameters())
        if not self.named:
            raise ValueError("nothing to train: no parameter requires a gradient")
        self.params = [p for _, p in self.named]
        self.opt = make_optimizer(cfg.optimizer, self.params, cfg.lr, cfg.weight_decay)
        self.sched = make_scheduler(cfg.lr_schedule, self.opt, cfg.steps, cfg.warmup)
        self.plateau = isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
        self.history = History()
        self.last_good, self.best = _Snapshot(), _Snapshot()
        self.fails, self.start = 0, 0
        if ckpt is not None:
            self._resume(ckpt)

    # -- checkpoints
    def _resume(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("kind") != self.task.kind:
            raise ValueError(f"the checkpoint was written by a {ckpt.get('kind')} run")
        meta = self.task.meta()
        diff = {k: (ckpt["meta"].get(k), v) for k, v in meta.items() if ckpt["meta"].get(k) != v}
        if diff:
            detail = "; ".join(f"{k}: checkpoint {a}, now {b}" for k, (a, b) in diff.items())
            raise ValueError(
                f"cannot resume: this run differs from the checkpoint ({detail}); pass the same "
                "data and settings, or resume=False to start over"
            )
        state = self.task.state()
        missing = set(state) ^ set(ckpt["state"])
        if missing:
            raise ValueError(f"cannot resume: the checkpoint's tensors differ ({sorted(missing)})")
        _copy_into([state[k] for k in state], [ckpt["state"][k] for k in state])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.sched is not None and ckpt["scheduler"] is not None:
            self.sched.load_state_dict(ckpt["scheduler"])
        self.history = History.from_state_dict(ckpt["history"])
        self.last_good.load_dict(ckpt["last_good"])
        self.best.load_dict(ckpt["best"])
        self.fails, self.start = ckpt["fails"], ckpt["step"]
        _set_rng_state(ckpt["rng"])

    def _checkpoint(self, next_step: int) -> None:
        payload = {
            "format": _FORMAT,
            "kind": self.task.kind,
            "meta": self.task.meta(),
            "seed": self.cfg.seed,
            "step": next_step,
            "state": {k: v.detach() for k, v in self.task.state().items()},
            "optimizer": self.opt.state_dict(),
            "scheduler": None if self.sched is None else self.sched.state_dict(),
            "rng": _rng_state(),
            "history": self.history.state_dict(),
            "last_good": self.last_good.to_dict(),
            "best": self.best.to_dict(),
            "fails": self.fails,
        }
        _write_atomically(payload, Path(self.cfg.checkpoint))  # type: ignore[arg-type]

    # -- one step
    def _lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def _add_new_parameters(self) -> None:
        new = [(n, p) for n, p in self.task.named_parameters()[len(self.named) :]]
        if new:
            self.named += new
            self.params += [p for _, p in new]
            self.opt.add_param_group({"params": [p for _, p in new]})

    def _step(self, step: int) -> bool:
        """One optimiser step; False when it failed and was rolled back."""
        self.opt.zero_grad(set_to_none=True)
        lr = self._lr()
        try:
            total, value, extras = self.task.loss(step)
        except (NonFiniteError, ValueError) as exc:
            if not _is_divergence(exc):
                raise
            return self._fail(step, lr, f"{type(exc).__name__}: {exc}")
        if total.dim() != 0:
            raise ValueError(
                f"the objective must return a scalar loss; got shape {tuple(total.shape)} "
                "(average it over the batch, e.g. loss.mean())"
            )
        self._add_new_parameters()
        total.backward()
        norm = _grad_norm(self.params, self.cfg.clip_grad)
        tensors = {k: v for k, v in extras.items() if isinstance(v, Tensor)}
        row = [
            total.detach(),
            value.detach(),
            norm.detach(),
            *(v.detach() for v in tensors.values()),
        ]
        vals = torch.stack([t.to(device=total.device, dtype=total.dtype) for t in row]).tolist()
        if not math.isfinite(vals[0]):
            return self._fail(step, lr, f"the loss is {vals[0]}")
        if not math.isfinite(vals[2]):
            bad = [n for n, p in self.named if p.grad is not None and not p.grad.isfinite().all()]
            return self._fail(step, lr, f"the gradients of {', '.join(bad[:5])} are NaN/Inf")
        self.last_good.save(self.task.state(), self.opt)
        self.opt.step()
        if self.sched is not None and not self.plateau:
            self.sched.step()
        self.fails = 0
        record = {k: v for k, v in extras.items() if not isinstance(v, Tensor)}
        record.update(zip(tensors, vals[3:], strict=True))
        self.history._log_step(vals[1], lr, record)
        return True

    def _fail(self, step: int, lr: float, reason: str) -> bool:
        h = self.history
        self.opt.zero_grad(set_to_none=True)
        self.last_good.restore(self.task.state(), self.opt)
        for g in self.opt.param_groups:
            g["lr"] *= 0.5
        if hasattr(self.sched, "base_lrs"):
            self.sched.base_lrs = [b * 0.5 for b in self.sched.base_lrs]  # type: ignore[union-attr]
        h._log_step(_NAN, lr, {})
        h.rollbacks += 1
        h.rollback_steps.append(step)
        self.fails += 1
        if self.fails >= MAX_FAILURES:
            h.diverged = True
            h.message = (
                f"training diverged: {self.fails} failed steps in a row (last at step {step}: "
                f"{reason}) although the learning rate was lowered to {self._lr():.3g}; the "
                "weights are the last finite ones. Lower lr, set clip_grad, or standardise the data."
            )
            warnings.warn(h.message, RuntimeWarning, stacklevel=6)
        else:
            warnings.warn(
                f"step {step}: {reason}; rolled back to the last good weights and halved the "
                f"learning rate to {self._lr():.3g}",
                RuntimeWarning,
                stacklevel=6,
            )
        return False

    def _validate(self, step: int) -> None:
        h, cfg = self.history, self.cfg
        self.task.set_training(False)
        try:
            v = float(self.task.validate())
        except (NonFiniteError, ValueError) as exc:  # diverged weights: no improvement
            if not _is_divergence(exc):
                raise
            v = math.inf
        finally:
            self.task.set_training(True)
        h.val_loss.append(v)
        h.val_steps.append(step)
        if math.isfinite(v) and (h.best_val_loss is None or v < h.best_val_loss):
            h.best_val_loss, h.best_step = v, step
            self.best.save(self.task.state())
        elif cfg.patience is not None:
            since = sum(s > (h.best_step if h.best_step is not None else -1) for s in h.val_steps)
            if since >= cfg.patience:
                h.stopped_early = True
                h.message = f"early stopping: no validation improvement in {since} checks"
        if self.plateau:
            self.sched.step(v)  # type: ignore[union-attr]

    # -- the run
    def run(self) -> History:
        cfg, h, task = self.cfg, self.history, self.task
        enabled = bool(cfg.progress) and sys.stderr.isatty()
        bar = tqdm(
            total=cfg.steps,
            initial=min(self.start, cfg.steps),
            desc=cfg.desc,
            disable=not enabled,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        ema = None
        t0 = time.perf_counter()
        task.set_training(True)
        safe: int | None = None  # the next step, while the state is consistent (checkpointable)
        try:
            step = self.start
            while step < cfg.steps and not (h.stopped_early or h.diverged):
                safe = None
                ok = self._step(step)
                if ok:
                    loss = h.train_loss[-1]
                    ema = loss if ema is None else 0.9 * ema + 0.1 * loss
                due = (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps
                if task.has_validation and due and not h.diverged:
                    self._validate(step)
                safe = step + 1
                for cb in cfg.callbacks:
                    if _is_true(cb(step, h, task.target)):
                        h.stopped_early = True
                        h.message = (
                            h.message or f"stopped by callback {getattr(cb, '__name__', cb)}"
                        )
                step += 1
                if cfg.checkpoint is not None and step % cfg.checkpoint_every == 0:
                    h.wall_time += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._checkpoint(step)
                if enabled:
                    post = {"loss": f"{ema:.4g}" if ema is not None else "nan"}
                    if h.best_val_loss is not None:
                        post["best_val"] = f"{h.best_val_loss:.4g}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
            h.wall_time += time.perf_counter() - t0
            h._pad()
            h.final_lr = self._lr()
            if cfg.checkpoint is not None and step % cfg.checkpoint_every != 0:
                self._checkpoint(step)
        except BaseException:
            # interrupted (Ctrl-C, or a callback raised) between two steps: save, so that
            # resume=True continues from here instead of from the last periodic checkpoint
            if cfg.checkpoint is not None and safe is not None:
                h.wall_time += time.perf_counter() - t0
                self._checkpoint(safe)
            raise
        finally:
            bar.close()
        state = task.state()
        if self.best.state is not None:
            self.best.restore(state)
        elif not _finite(state):
            self.last_good.restore(state)
            h.diverged = True
            h.message = (
                h.message or "the final weights were not finite; restored the last good ones"
            )
        return h


def train(task: Task, cfg: LoopConfig, ckpt: dict[str, Any] | None = None) -> History:
    """Run ``cfg.steps`` steps of ``task`` (continuing from ``ckpt`` if given); see the module
    docstring for the behaviour. Restores the best-validation state at the end.

    Example:
        >>> class Quadratic:  # minimise (w - 3)^2; fit and fit_svi write tasks like this one
        ...     kind, has_validation = "demo", False
        ...     def __init__(self):
        ...         self.w = self.target = torch.zeros((), requires_grad=True)
        ...     def named_parameters(self):
        ...         return [("w", self.w)]
        ...     def state(self):
        ...         return {"w": self.w}
        ...     def loss(self, step):
        ...         loss = (self.w - 3) ** 2
        ...         return loss, loss, {}
        ...     def meta(self):
        ...         return {}
        ...     def set_training(self, mode):
        ...         pass
        >>> task = Quadratic()
        >>> h = train(task, LoopConfig(steps=100, lr=0.1, optimizer="sgd", progress=False))
        >>> round(task.w.item(), 6), h.steps, h.train_loss[0]
        (3.0, 100, 9.0)
    """
    return _Loop(task, cfg, ckpt).run()
