r"""The training loop shared by :func:`~pyroflows.infer.fit` and :func:`~pyroflows.infer.fit_svi`.

A *task* says what is trained (its parameters and state tensors, the loss of step :math:`k`, an
optional validation loss); :func:`train` does everything else, identically for both objectives:
the optimiser and learning-rate schedule, gradient clipping, divergence rollback, validation
with early stopping and best-weight restoring, checkpoints with exact resume, the progress bar,
callbacks and the :class:`History`.

The loop's options are declared once, in :class:`~pyroflows.infer.LoopConfig`
(:mod:`pyroflows.infer.config`); :class:`Run` starts a run (checkpoint and seed) for both;
:mod:`pyroflows.infer.loop` holds the steps (rollback, validation, checkpoints, the weights
returned) and :mod:`pyroflows.infer.state` the copies of state and the checkpoint files.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import pyro
import torch
from torch import Tensor

from .config import LoopConfig, real_number, whole_number
from .history import History
from .loop import MAX_FAILURES, RECOVERY_STEPS, Loop
from .state import load_checkpoint

__all__ = [
    "MAX_FAILURES",
    "RECOVERY_STEPS",
    "History",
    "LoopConfig",
    "Run",
    "load_checkpoint",
    "real_number",
    "train",
    "whole_number",
]


class Task(Protocol):
    """What :func:`train` trains. ``fit`` and ``fit_svi`` each implement one."""

    kind: str  # "fit" or "svi"; checked on resume
    desc: str  # the progress bar's label
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

    # Optional: ``check() -> float``, a loss of the current weights on training data, run on the
    # weights about to be returned; a NaN/Inf value or a NonFiniteError means they are unusable.


class Run:
    """The start of a training run, before its task is built: the checkpoint to resume from and
    the seed, handled here for ``fit`` and ``fit_svi`` alike.

    ``Run(cfg)`` loads ``cfg.checkpoint`` when ``cfg.resume`` (``None`` while there is no file),
    refuses a ``cfg.seed`` other than the checkpoint's, and seeds Pyro, torch, numpy and
    ``random`` with ``cfg.seed``; then the caller builds its task (with :attr:`seed` if it draws
    from it) and calls :meth:`train`.

    Args:
        cfg: the run's options.
        seed_fixes: what the seed fixes, for the message that refuses another seed on resume.

    Example:
        >>> run = Run(LoopConfig(steps=5, seed=3), seed_fixes="nothing")
        >>> run.seed, run.checkpoint is None
        (3, True)
    """

    def __init__(self, cfg: LoopConfig, *, seed_fixes: str) -> None:
        self.cfg = cfg
        self.checkpoint = load_checkpoint(cfg.checkpoint) if cfg.resume else None  # type: ignore[arg-type]
        saved = None if self.checkpoint is None else self.checkpoint.get("seed")
        if self.checkpoint is not None and cfg.seed is not None and cfg.seed != saved:
            raise ValueError(
                f"cannot resume from {cfg.checkpoint}: its run used seed={saved}, this one "
                f"seed={cfg.seed} (the seed fixes {seed_fixes}); pass the same seed or "
                "seed=None, or resume=False to start over"
            )
        if cfg.seed is not None:
            pyro.set_rng_seed(cfg.seed)
        self._seed: int | None = cfg.seed if self.checkpoint is None else saved

    @property
    def seed(self) -> int:
        """The run's base seed: ``cfg.seed``, the checkpoint's, or (when neither gives one) a
        number drawn from torch's global generator when first asked for."""
        if self._seed is None:
            self._seed = int(torch.randint(2**31 - 1, ()))
        return self._seed

    def train(self, task: Task, **resolved: Any) -> History:
        """Train ``task``; ``resolved`` replaces options the caller has settled (``steps`` from
        ``epochs``, the default ``eval_every``). The checkpoint records the base seed (``None``
        when the run had none and did not ask for :attr:`seed`)."""
        cfg = dataclasses.replace(self.cfg, seed=self._seed, **resolved)
        # not through train(): the loop's warnings count the frames up to the user's call
        return Loop(task, cfg, self.checkpoint).run()


def train(task: Task, cfg: LoopConfig, ckpt: dict[str, Any] | None = None) -> History:
    """Run ``cfg.steps`` steps of ``task`` (continuing from ``ckpt`` if given); see
    :mod:`pyroflows.infer.loop` for the behaviour. Restores the best-validation state at the
    end. ``fit`` and ``fit_svi`` start through :class:`Run`, which also loads the checkpoint
    and seeds the run.

    Example:
        >>> class Quadratic:  # minimise (w - 3)^2; fit and fit_svi write tasks like this one
        ...     kind = desc = "demo"
        ...     has_validation = False
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
    return Loop(task, cfg, ckpt).run()
