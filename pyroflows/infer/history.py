"""What a training run did: :class:`History`, returned by :func:`~pyroflows.infer.fit` and
:func:`~pyroflows.infer.fit_svi` (and stored in their checkpoints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NAN", "History"]

#: The value recorded for a rolled-back step.
NAN = float("nan")


@dataclass(repr=False)
class History:
    """What a training run did. Per-step lists have one entry per step (NaN for a rolled-back
    step); ``val_loss[i]`` was measured after step ``val_steps[i]``.

    Attributes:
        train_loss: training loss per step (``fit``: the objective without regularisation;
            ``fit_svi``: the negative ELBO estimate).
        lr: learning rate used at each step.
        val_loss, val_steps: validation losses and the steps after which they were measured.
        best_step, best_val_loss: the best validation check (``None`` without validation).
        wall_time: seconds spent training (summed over resumed runs).
        stopped_early: early stopping (``patience``) or a callback ended the run.
        rollbacks, rollback_steps: how many steps were rolled back, and which.
        diverged: training stopped after ``MAX_FAILURES`` failed steps without a recovery in
            between, or the weights at the end were unusable (NaN/Inf, or a NaN/Inf loss on a
            training batch) and were replaced by the last good ones; ``message`` says what
            failed and which weights were returned.
        final_lr: learning rate at the end.
        regularization: name -> value per step, as reported by modules' ``regularization()``.
        nfe: function evaluations per step of modules with an ``nfe`` attribute (summed).
        beta: inverse temperature per step (``fit_svi(anneal=...)``).

    Example:
        >>> import torch, pyroflows as pf
        >>> flow = pf.MAF(2, num_layers=1, hidden_dims=(8,))
        >>> h = pf.fit(flow, torch.randn(200, 2), steps=30, seed=0, progress=False)
        >>> h.steps, h.val_steps[-1], h.best_step in h.val_steps, h.diverged
        (30, 29, True, False)
    """

    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    best_step: int | None = None
    best_val_loss: float | None = None
    wall_time: float = 0.0
    stopped_early: bool = False
    rollbacks: int = 0
    rollback_steps: list[int] = field(default_factory=list)
    diverged: bool = False
    final_lr: float | None = None
    message: str = ""
    regularization: dict[str, list[float]] = field(default_factory=dict)
    nfe: list[float] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)

    @property
    def steps(self) -> int:
        """Number of steps run (including rolled-back ones)."""
        return len(self.train_loss)

    @property
    def elbo(self) -> list[float]:
        """ELBO estimate per step (``fit_svi``): the negated training loss."""
        return [-v for v in self.train_loss]

    def _series(self, key: str) -> list[float]:
        if key.startswith("reg:"):
            return self.regularization.setdefault(key[4:], [])
        return getattr(self, key)

    def log_step(self, loss: float, lr: float, extras: dict[str, float]) -> None:
        """Append one step: its loss, learning rate and extras (``"nfe"``, ``"beta"``,
        ``"reg:<name>"``); series that skipped steps are padded with NaN first."""
        n = len(self.train_loss)
        self.train_loss.append(loss)
        self.lr.append(lr)
        for key, value in extras.items():
            seq = self._series(key)
            seq.extend([NAN] * (n - len(seq)))
            seq.append(value)

    def pad(self) -> None:
        """Pad the optional per-step series with NaN to one entry per step."""
        for seq in [self.nfe, self.beta, *self.regularization.values()]:
            if seq:
                seq.extend([NAN] * (len(self.train_loss) - len(seq)))

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint; :meth:`from_state_dict` rebuilds the History."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> History:
        """The History that :meth:`state_dict` wrote (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in names})

    def __repr__(self) -> str:
        last = f"{self.train_loss[-1]:.4g}" if self.train_loss else "-"
        parts = [f"steps={self.steps}", f"train_loss={last}"]
        if self.best_val_loss is not None:
            parts.append(f"best_val_loss={self.best_val_loss:.4g} at step {self.best_step}")
        parts += [f"wall_time={self.wall_time:.1f}s", f"rollbacks={self.rollbacks}"]
        if self.stopped_early:
            parts.append("stopped_early")
        if self.diverged:
            parts.append("diverged")
        return f"History({', '.join(parts)})"
