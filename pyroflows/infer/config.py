"""The training loop's options, declared once: :class:`LoopConfig`.

:func:`~pyroflows.infer.fit` and :func:`~pyroflows.infer.fit_svi` take these options as keywords
and pass them through :func:`loop_config`, which refuses an unknown keyword with a ``TypeError``
that names the closest option; :class:`LoopConfig` checks each value (a whole number where one is
meant: ``1e4`` is accepted, ``2.5`` and ``True`` refused).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_STEPS",
    "LOOP_OPTIONS",
    "LoopConfig",
    "loop_config",
    "real_number",
    "unexpected_keyword",
    "whole_number",
]

#: Optimiser steps of a run that gives neither ``steps`` nor (``fit``) ``epochs``.
DEFAULT_STEPS = 1000


def whole_number(name: str, value: Any, low: int) -> int:
    """``value`` as an ``int`` if it is a whole number >= ``low`` (an int, a numpy integer or a
    float such as ``1e4``; not a bool), else a ``TypeError``/``ValueError`` naming ``name``.

    Example:
        >>> whole_number("steps", 1e4, 1)
        10000
        >>> whole_number("steps", 2.5, 1)
        Traceback (most recent call last):
        ...
        ValueError: steps must be a whole number >= 1; got 2.5
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer)):
        raise TypeError(f"{name} must be a whole number >= {low}; got {value!r}")
    if not (math.isfinite(value) and int(value) == value and value >= low):
        raise ValueError(f"{name} must be a whole number >= {low}; got {value!r}")
    return int(value)


def real_number(name: str, value: Any, low: float) -> float:
    """``value`` as a ``float`` if it is a finite real number >= ``low`` (not a bool), else a
    ``TypeError``/``ValueError`` naming ``name``.

    Example:
        >>> real_number("lr", 1e-3, 0.0)
        0.001
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{name} must be a finite number >= {low:g}; got {value!r}")
    if not (math.isfinite(value) and value >= low):
        raise ValueError(f"{name} must be a finite number >= {low:g}; got {value!r}")
    return float(value)


@dataclass
class LoopConfig:
    """The options of the training loop shared by :func:`~pyroflows.infer.fit` and
    :func:`~pyroflows.infer.fit_svi` (keywords of both); each is checked here, once.

    Attributes:
        steps: optimiser steps (a whole number >= 1; ``1e4`` is accepted, ``2.5`` refused).
            ``None``: 1000, or ``fit``'s ``epochs``.
        lr: learning rate (>= 0); 1e-3 in ``fit``, 1e-2 in ``fit_svi``.
        optimizer: ``"adam"`` (AdamW when ``weight_decay`` > 0), ``"adamw"``, ``"sgd"``,
            ``"rmsprop"``, a ``torch.optim`` class / factory ``(params, lr=...)``, or a Pyro
            optimiser such as ``pyro.optim.Adam({"lr": 0.01})`` (its own arguments win).
        lr_schedule: ``None``, ``"cosine"`` (to 0 over the run), ``"tail"`` (constant, then
            a cosine decay to 0 over the last quarter of the run), or a factory
            ``optimizer -> scheduler`` (``ReduceLROnPlateau`` is stepped with the validation
            loss).
        warmup: raise the learning rate linearly over the first ``warmup`` steps (with
            ``lr_schedule`` ``None``, ``"cosine"`` or ``"tail"``); lets flow matching use larger
            rates.
        weight_decay: decoupled weight decay (>= 0).
        clip_grad: maximum global gradient norm (``None``: no clipping).
        eval_every: steps between validation checks (``fit``); the last step is always
            checked. ``None``: once per epoch, within 10 to 100 checks per run
            (``min(max(epoch, ceil(steps / 100)), ceil(steps / 10))`` steps apart).
        patience: stop after this many validation checks without improvement (``fit``).
        progress: show a tqdm bar with the loss (only when stderr is a terminal).
        seed: seeds Pyro/torch/numpy/random (and ``fit``'s validation split and batch order)
            for a reproducible run; ``None`` leaves the global RNGs as they are.
        checkpoint: path of a file that holds everything needed to resume, written every
            ``checkpoint_every`` steps, at the end, and when the run is interrupted between two
            steps (Ctrl-C, or an exception raised by a callback).
        checkpoint_every: steps between checkpoints.
        resume: continue from ``checkpoint`` if the file exists (exactly: the weights end
            bit-identical to an uninterrupted run); start afresh if it does not. The checkpoint
            records what the run must share with a resumed one (``fit``: the flow's class and
            configuration, a SHA-256 of the training and validation rows, the batch size; the
            optimiser's class and options, ``lr`` and ``weight_decay`` included,
            ``lr_schedule``, ``warmup`` and the seed); a resume where any of them differs is
            refused with a ``ValueError`` before any weight is overwritten. ``steps``,
            ``patience``, ``eval_every``, ``clip_grad`` and ``callbacks`` may change and take
            effect.
        callbacks: a callable or a sequence of them, ``cb(step, history, target) -> bool |
            None``, called after every step with the flow (``fit``) or the guide
            (``fit_svi``); returning ``True`` stops the run.

    Example:
        >>> LoopConfig(steps=100, lr=1e-3).checkpoint_every
        100
        >>> LoopConfig(steps=100, lr=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: lr must be a finite number >= 0; got -1.0
    """

    steps: int | None = None
    lr: float = 1e-3
    optimizer: Any = "adam"
    lr_schedule: Any = None
    warmup: int = 0
    weight_decay: float = 0.0
    clip_grad: float | None = None
    eval_every: int | None = None
    patience: int | None = None
    progress: bool = True
    seed: int | None = None
    checkpoint: str | Path | None = None
    checkpoint_every: int = 100
    resume: bool = False
    callbacks: Sequence[Callable] | Callable = ()

    def __post_init__(self) -> None:
        if self.steps is not None:
            self.steps = whole_number("steps", self.steps, 1)
        if self.eval_every is not None:
            self.eval_every = whole_number("eval_every", self.eval_every, 1)
        self.checkpoint_every = whole_number("checkpoint_every", self.checkpoint_every, 1)
        self.warmup = whole_number("warmup", self.warmup, 0)
        if self.patience is not None:
            self.patience = whole_number("patience", self.patience, 1)
        if self.seed is not None:
            self.seed = whole_number("seed", self.seed, 0)
        self.lr = real_number("lr", self.lr, 0.0)
        self.weight_decay = real_number("weight_decay", self.weight_decay, 0.0)
        clip = self.clip_grad
        ok = isinstance(clip, (int, float, np.number)) and not isinstance(clip, (bool, np.bool_))
        if clip is not None and not (ok and math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip_grad must be None or a positive number; got {clip!r}")
        if self.resume and self.checkpoint is None:
            raise ValueError("resume=True needs checkpoint=path")
        cbs = self.callbacks
        cbs = (cbs,) if callable(cbs) else cbs
        if isinstance(cbs, (str, bytes)) or not isinstance(cbs, Iterable):
            raise TypeError(f"callbacks must be a callable or a sequence of them; got {cbs!r}")
        self.callbacks = tuple(cbs)
        bad = [cb for cb in self.callbacks if not callable(cb)]
        if bad:
            raise TypeError(f"callbacks must be callables; got {bad[0]!r}")


#: The names of the loop's options, in declaration order.
LOOP_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(LoopConfig))


def unexpected_keyword(caller: str, name: str, valid: Iterable[str]) -> TypeError:
    """The ``TypeError`` for a keyword ``caller`` does not take: the closest valid name, and all.

    Example:
        >>> print(unexpected_keyword("fit", "stpes", ["steps", "seed"]))
        fit() got an unexpected keyword argument 'stpes' (did you mean 'steps'?); valid: seed, steps
    """
    valid = sorted(set(valid))
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return TypeError(
        f"{caller}() got an unexpected keyword argument {name!r}{hint}; valid: {', '.join(valid)}"
    )


def loop_config(
    caller: str,
    options: Mapping[str, Any],
    *,
    own: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> LoopConfig:
    """The :class:`LoopConfig` of ``caller``'s keyword ``options`` (``defaults``: the caller's
    own defaults of some loop options, e.g. ``fit_svi``'s ``lr``). An unknown keyword raises a
    ``TypeError`` that suggests the closest of the loop's options and ``own`` (the caller's
    other keywords).

    Example:
        >>> loop_config("fit_svi", {"steps": 5}, defaults={"lr": 1e-2}).lr
        0.01
        >>> loop_config("fit", {"patiense": 5})
        Traceback (most recent call last):
        ...
        TypeError: fit() got an unexpected keyword argument 'patiense' (did you mean 'patience'?); ...
    """
    for name in options:
        if name not in LOOP_OPTIONS:
            raise unexpected_keyword(caller, name, [*LOOP_OPTIONS, *own])
    return LoopConfig(**{**(defaults or {}), **options})
