r"""The steps of a training run (:class:`Loop`, run by :func:`~pyroflows.infer.engine.train`):
the optimiser and schedule, gradient clipping, rollback, validation and early stopping,
checkpoints and resume, callbacks, the progress bar, and the weights returned.

Rollback. Before every optimiser step whose loss and gradients are finite, the state (weights,
buffers) and the optimiser state are copied into preallocated buffers (one ``_foreach_copy_``).
A step whose loss or gradient norm is NaN/Inf, or that raises
:class:`~pyroflows.NonFiniteError` (or a distribution's "invalid values" error), restores that
copy, halves the learning rate (the scheduler's base rates too) and warns naming the cause (the
loss, the parameters whose gradients are NaN/Inf, or an overflowing norm of finite gradients).
A rollback has *recovered* once ``RECOVERY_STEPS`` steps in a row succeed after it; after
``MAX_FAILURES`` failures without a recovery in between (e.g. every other step failing while
the weights drift to huge values) training stops with ``History.diverged = True``.

The returned weights. At the end the best-validation state is restored (when there was
validation); weights that are not finite, or that fail the task's ``check`` (``fit``: the
objective on a training batch), are replaced by the last good copy, and ``History.diverged``
and ``History.message`` say so. Weights are never left non-finite, and never unusable without
a message.

Exact resume. Batch order is a pure function of ``(seed, epoch)``; a checkpoint holds the state,
the optimiser and scheduler, the RNG states of torch (and CUDA), numpy and Python, the history,
the rollback copy and the best state, so a resumed run replays the remaining steps bit for bit.
It also records what the run must share with a resumed one (the task's ``meta``: for ``fit`` the
flow's class and configuration and a SHA-256 of the data; the optimiser's class and options,
``lr`` included, the schedule and warm-up; the seed, checked by
:class:`~pyroflows.infer.engine.Run`); a resume that differs, or whose tensors do not fit,
is refused with a ``ValueError`` before any weight is overwritten.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..transforms.base import NonFiniteError
from .config import DEFAULT_STEPS, LoopConfig
from .history import NAN, History
from .optim import make_optimizer, make_scheduler
from .state import (
    CHECKPOINT_FORMAT,
    Snapshot,
    all_finite,
    check_resumable,
    copy_into,
    rng_state,
    set_rng_state,
    write_atomically,
)

if TYPE_CHECKING:
    from .engine import Task

# Loop is internal (engine.train runs it, importing it by name).
__all__ = ["MAX_FAILURES", "RECOVERY_STEPS"]

#: Failed (rolled-back) steps, without a recovery in between, after which training stops as
#: diverged.
MAX_FAILURES = 5
#: Successful steps in a row after a rollback that count as a recovery from it.
RECOVERY_STEPS = 10


def _plain_option(value: Any) -> Any:
    """An optimiser option as data a ``weights_only`` checkpoint can hold."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return tuple(_plain_option(v) for v in value)
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    return type(value).__qualname__


def _describe_schedule(spec: Any) -> str | None:
    if spec is None or isinstance(spec, str):
        return spec
    return f"factory {getattr(spec, '__qualname__', type(spec).__qualname__)}"


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


class Loop:
    """One run of :func:`~pyroflows.infer.engine.train`: ``Loop(task, cfg, ckpt).run()``."""

    def __init__(self, task: Task, cfg: LoopConfig, ckpt: dict[str, Any] | None) -> None:
        if cfg.steps is None:
            cfg = dataclasses.replace(cfg, steps=DEFAULT_STEPS)
        self.task, self.cfg = task, cfg
        if cfg.patience is not None and not task.has_validation:
            raise ValueError("patience needs a validation loss, and this run has none")
        self.named = list(task.named_parameters())
        if not self.named:
            raise ValueError("nothing to train: no parameter requires a gradient")
        self.params = [p for _, p in self.named]
        self.opt = make_optimizer(cfg.optimizer, self.params, cfg.lr, cfg.weight_decay)
        self.sched = make_scheduler(cfg.lr_schedule, self.opt, cfg.steps, cfg.warmup)
        self.plateau = isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
        self.history = History()
        self.last_good, self.best = Snapshot(), Snapshot()
        # failures since the last recovery, and successful steps since the last failure
        self.fails, self.streak, self.start = 0, 0, 0
        if ckpt is not None:
            self._resume(ckpt)

    def _settings(self) -> dict[str, Any]:
        """The optimiser and schedule a resumed run must share with its checkpoint: the
        optimiser's class and constructor options (``opt.defaults``, with ``lr``), the
        schedule and the warm-up."""
        options = {k: _plain_option(v) for k, v in self.opt.defaults.items()}
        return {
            "optimizer": type(self.opt).__name__,
            **options,
            "lr_schedule": _describe_schedule(self.cfg.lr_schedule),
            "warmup": self.cfg.warmup,
        }

    # -- checkpoints
    def _resume(self, ckpt: dict[str, Any]) -> None:
        """Check everything first, then load: a refused resume leaves the weights untouched."""
        state = self.task.state()
        check_resumable(
            ckpt,
            path=self.cfg.checkpoint,
            kind=self.task.kind,
            meta=self.task.meta(),
            settings=self._settings(),
            state=state,
        )
        try:  # the fresh optimiser and scheduler only: nothing of the user's is touched yet
            self.opt.load_state_dict(ckpt["optimizer"])
            if self.sched is not None and ckpt["scheduler"] is not None:
                self.sched.load_state_dict(ckpt["scheduler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(
                f"cannot resume from {self.cfg.checkpoint}: its optimiser state does not fit "
                f"({exc}); pass resume=False (or another checkpoint path) to start over"
            ) from exc
        copy_into([state[k] for k in state], [ckpt["state"][k] for k in state])
        self.history = History.from_state_dict(ckpt["history"])
        self.last_good.load_dict(ckpt["last_good"])
        self.best.load_dict(ckpt["best"])
        self.fails, self.streak, self.start = ckpt["fails"], ckpt["streak"], ckpt["step"]
        set_rng_state(ckpt["rng"])

    def _checkpoint(self, next_step: int) -> None:
        if not getattr(self.task, "writes_checkpoints", True):  # issue 15 hook: rank 0 writes
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "kind": self.task.kind,
            "meta": self.task.meta(),
            "settings": self._settings(),
            "seed": self.cfg.seed,
            "step": next_step,
            "state": {k: v.detach() for k, v in self.task.state().items()},
            "optimizer": self.opt.state_dict(),
            "scheduler": None if self.sched is None else self.sched.state_dict(),
            "rng": rng_state(),
            "history": self.history.state_dict(),
            "last_good": self.last_good.to_dict(),
            "best": self.best.to_dict(),
            "fails": self.fails,
            "streak": self.streak,
        }
        write_atomically(payload, Path(self.cfg.checkpoint))  # type: ignore[arg-type]

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
        if hasattr(self.task, "after_backward"):  # issue 15 hook: average gradients over ranks
            self.task.after_backward(self.params)
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
            return self._fail(step, lr, self._bad_gradients(vals[2]))
        self.last_good.save(self.task.state(), self.opt)
        self.opt.step()
        if self.sched is not None and not self.plateau:
            self.sched.step()
        self.streak += 1
        if self.streak >= RECOVERY_STEPS:
            self.fails = 0
        record = {k: v for k, v in extras.items() if not isinstance(v, Tensor)}
        record.update(zip(tensors, vals[3:], strict=True))
        self.history.log_step(vals[1], lr, record)
        return True

    def _bad_gradients(self, norm: float) -> str:
        """Why the gradient norm is NaN/Inf: the parameters with NaN/Inf gradients, or, when
        every gradient is finite, the largest ones (their squares overflowed the norm)."""
        grads = [(n, p.grad) for n, p in self.named if p.grad is not None]
        bad = [n for n, g in grads if not g.isfinite().all()]
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            return f"the gradients of {', '.join(bad[:5])}{more} are NaN/Inf"
        sizes = sorted(((float(g.abs().max()), n) for n, g in grads), reverse=True)[:3]
        largest = ", ".join(f"{n} (max |grad| {v:.3g})" for v, n in sizes)
        return (
            f"the gradient norm overflowed ({norm}) though every gradient is finite; the "
            f"largest: {largest}"
        )

    def _fail(self, step: int, lr: float, reason: str) -> bool:
        h = self.history
        self.opt.zero_grad(set_to_none=True)
        self.last_good.restore(self.task.state(), self.opt)
        for g in self.opt.param_groups:
            g["lr"] *= 0.5
        if hasattr(self.sched, "base_lrs"):
            self.sched.base_lrs = [b * 0.5 for b in self.sched.base_lrs]  # type: ignore[union-attr]
        h.log_step(NAN, lr, {})
        h.rollbacks += 1
        h.rollback_steps.append(step)
        self.fails += 1
        self.streak = 0
        if self.fails >= MAX_FAILURES:
            h.diverged = True
            h.message = (
                f"training diverged: {self.fails} steps failed without {RECOVERY_STEPS} good "
                f"steps in a row in between (the last at step {step}: {reason}) although the "
                f"learning rate was lowered to {self._lr():.3g}. Lower lr, set clip_grad, or "
                "standardise the data."
            )
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
            desc=getattr(task, "desc", task.kind),
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
                due = (step + 1) % (cfg.eval_every or 1) == 0 or step + 1 == cfg.steps
                if task.has_validation and due and not h.diverged:
                    self._validate(step)
                safe = step + 1
                for cb in cfg.callbacks:
                    if _is_true(cb(step, h, task.target)):
                        h.stopped_early = True
                        h.message = (
                            h.message or f"stopped by callback {getattr(cb, '__name__', cb)}"
                        )
                if hasattr(task, "any_rank") and task.any_rank(h.stopped_early):  # issue 15 hook
                    h.stopped_early = True  # a stop on one rank stops every rank, together
                    h.message = h.message or "stopped by a callback on another rank"
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
            h.pad()
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
        self._finish()
        return h

    # -- the returned weights
    def _check(self) -> str | None:
        """``None`` if the current weights pass the task's check, else why they fail."""
        check = getattr(self.task, "check", None)
        if not all_finite(self.task.state()):
            return "some weights are NaN/Inf"
        if check is None:
            return None
        self.task.set_training(False)
        try:
            value = float(check())
        except (NonFiniteError, ValueError) as exc:
            if not _is_divergence(exc):
                raise
            return f"the loss on a training batch raised {type(exc).__name__}: {exc}"
        finally:
            self.task.set_training(True)
        return None if math.isfinite(value) else f"the loss on a training batch is {value}"

    def _finish(self) -> None:
        """Restore the best-validation weights; replace unusable ones by the last good copy
        and say so in ``History.diverged`` / ``message``."""
        h, state = self.history, self.task.state()
        last_good = "the last good weights (those of the last step that passed its checks)"
        if self.best.state is not None:
            self.best.restore(state)
            returned = f"the best-validation weights (after step {h.best_step})"
        elif h.diverged:  # the last failure restored them
            returned = last_good
        else:
            returned = "the final weights"
        problem = self._check()
        if problem is not None:
            failed = returned
            if self.last_good.state is None:  # no step succeeded: the weights are the initial ones
                returned = "the weights the run started from"
                again: str | None = problem
            else:
                self.last_good.restore(state)
                returned, again = last_good, self._check()
            if again is not None:
                returned += f", which fail too ({again}); re-initialise the model"
            h.diverged = True
            first = h.message + " " if h.message.startswith("training diverged") else ""
            h.message = (
                f"{first}At the end {failed} were unusable ({problem}); returned {returned}."
            )
        elif h.diverged:
            h.message += f" Returned {returned}."
        if h.diverged:
            warnings.warn(h.message, RuntimeWarning, stacklevel=5)
