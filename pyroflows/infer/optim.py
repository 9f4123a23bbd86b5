"""The optimiser and the learning-rate schedule of a training run, from their names.

Shared by :func:`~pyroflows.infer.fit` and :func:`~pyroflows.infer.fit_svi` (``optimizer=`` and
``lr_schedule=``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pyro.optim import PyroOptim
from pyro.optim.lr_scheduler import PyroLRScheduler
from torch import Tensor

__all__ = ["TAIL_FRACTION", "make_optimizer", "make_scheduler"]

#: the last fraction of the steps over which ``lr_schedule="tail"`` decays the rate to 0
TAIL_FRACTION = 0.25

_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def make_optimizer(
    spec: Any, params: list[Tensor], lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """The optimiser named by ``spec``: ``"adam"`` (AdamW, i.e. decoupled decay, when
    ``weight_decay`` > 0), ``"adamw"``, ``"sgd"``, ``"rmsprop"``, a ``torch.optim`` class or
    factory called as ``spec(params, lr=lr[, weight_decay=...])``, or a Pyro optimiser such as
    ``pyro.optim.Adam({"lr": 0.01})`` (its own arguments win over ``lr``).

    Example:
        >>> p = [torch.zeros(2, requires_grad=True)]
        >>> [type(make_optimizer("adam", p, 0.1, wd)).__name__ for wd in (0.0, 0.01)]
        ['Adam', 'AdamW']
        >>> import pyro.optim
        >>> make_optimizer(pyro.optim.SGD({"lr": 0.5, "momentum": 0.9}), p, 0.1).defaults["lr"]
        0.5
    """
    if isinstance(spec, PyroOptim):
        args = spec.pt_optim_args
        if isinstance(spec, PyroLRScheduler) or callable(args):
            raise TypeError(
                "pass a pyro.optim optimiser with a dict of arguments (e.g. pyro.optim.Adam("
                "{'lr': 0.01})); for a learning-rate schedule use lr_schedule= instead"
            )
        ctor, args = spec.pt_optim_constructor, dict(args)
        spec = lambda ps, **kw: ctor(ps, **{**kw, **args})  # noqa: E731
    if isinstance(spec, str):
        key = spec.lower()
        if key not in _OPTIMIZERS:
            raise ValueError(f"unknown optimizer {spec!r}; use one of {sorted(_OPTIMIZERS)}")
        if key == "adam" and weight_decay:
            key = "adamw"
        spec = _OPTIMIZERS[key]
    if not callable(spec):
        raise TypeError(
            f"optimizer must be a name or a torch.optim class/factory; got {type(spec).__name__}"
        )
    kw = {"weight_decay": weight_decay} if weight_decay else {}
    opt = spec(params, lr=lr, **kw)
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer factory returned {type(opt).__name__}, not an Optimizer")
    return opt


def _tail(k: int, steps: int, fraction: float = TAIL_FRACTION) -> float:
    """Rate factor of step ``k`` under ``"tail"``: 1, then a cosine from 1 to 0 over the last
    ``fraction`` of the ``steps`` (at least one step)."""
    tail = max(1, round(fraction * steps))
    flat = steps - tail
    if k < flat:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(k - flat, tail) / tail))


def make_scheduler(spec: Any, opt: torch.optim.Optimizer, steps: int, warmup: int = 0) -> Any:
    """The learning-rate schedule named by ``spec``: ``None``, ``"cosine"`` (cosine decay to 0
    over ``steps``), ``"tail"`` (constant, then a cosine decay to 0 over the last
    :data:`TAIL_FRACTION` of the ``steps``: the last iterate, which is what a fit returns, is
    then less noisy), or a factory ``optimizer -> scheduler`` (e.g.
    ``functools.partial(StepLR, step_size=100)``; for a function of the step use
    ``lambda opt: LambdaLR(opt, f)``).

    ``warmup`` > 0 multiplies the rate of step :math:`k` (from 0) by
    :math:`\\min(1, (k + 1) / \\text{warmup})`, a linear warm-up, on top of ``None``,
    ``"cosine"`` or ``"tail"`` (a factory brings its own).

    Example:
        >>> opt = make_optimizer("sgd", [torch.zeros(1, requires_grad=True)], 1.0)
        >>> sched = make_scheduler("cosine", opt, steps=4)
        >>> for _ in range(4):
        ...     opt.step(); sched.step()
        ...     print(round(opt.param_groups[0]["lr"], 4))
        0.8536
        0.5
        0.1464
        0.0
        >>> opt = make_optimizer("sgd", [torch.zeros(1, requires_grad=True)], 1.0)
        >>> sched = make_scheduler("tail", opt, steps=8)     # flat for 6 steps, then decays
        >>> rates = []
        >>> for _ in range(8):
        ...     rates.append(round(opt.param_groups[0]["lr"], 4)); opt.step(); sched.step()
        >>> rates, round(opt.param_groups[0]["lr"], 4)
        ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5], 0.0)
        >>> opt = make_optimizer("sgd", [torch.zeros(1, requires_grad=True)], 1.0)
        >>> sched = make_scheduler(None, opt, steps=100, warmup=4)
        >>> rates = []
        >>> for _ in range(5):
        ...     rates.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
        >>> rates
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    warm = int(warmup)  # checked by LoopConfig

    def ramp(k: int) -> float:
        return min(1.0, (k + 1) / warm) if warm else 1.0

    if spec is None:
        return torch.optim.lr_scheduler.LambdaLR(opt, ramp) if warm else None
    if spec == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda k: ramp(k) * 0.5 * (1.0 + math.cos(math.pi * min(k, steps) / max(steps, 1))),
        )
    if spec == "tail":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: ramp(k) * _tail(k, steps))
    if isinstance(spec, str) or not callable(spec):
        raise ValueError(
            f"lr_schedule must be None, 'cosine', 'tail' or a scheduler factory; got {spec!r}"
        )
    if warm:
        raise ValueError(
            "warmup applies to lr_schedule=None, 'cosine' or 'tail'; a scheduler factory brings "
            "its own warm-up (e.g. torch.optim.lr_scheduler.SequentialLR with a LinearLR first)"
        )
    sched = spec(opt)
    if not (hasattr(sched, "step") and hasattr(sched, "state_dict")):
        raise TypeError(
            "lr_schedule must be a factory optimizer -> torch scheduler; for a function f of the "
            "step use lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, f)"
        )
    return sched
