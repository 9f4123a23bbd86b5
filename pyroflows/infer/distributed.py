r"""Multi-process data-parallel training on :mod:`torch.distributed`.

:func:`setup` finds the process group a launcher made (``torchrun``, or a script that called
``torch.distributed.init_process_group``), or makes one from torchrun's environment variables
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) when asked with
``distributed=True``: backend ``nccl`` when the flow is on a GPU, ``gloo`` on the CPU.
:class:`Group` then does what :func:`~pyroflows.fit` needs: it wraps the objective in
:class:`~torch.nn.parallel.DistributedDataParallel` (torch's engine averages the gradients
during ``backward``), all-reduces losses, validation sums and "step failed" / "stop" flags, and
says which rank writes checkpoints (rank 0).

A collective operation that fails because another process died or timed out is re-raised as a
``RuntimeError`` that says so (:func:`explain`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as td
from torch import Tensor, nn

# Internal to pf.fit (users pass distributed=...; Group, explain and setup are imported by name).
__all__: list[str] = []

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Group:
    """The process group a run uses (``world == 1`` and ``active`` False in one process)."""

    rank: int = 0
    world: int = 1
    active: bool = False

    @property
    def writer(self) -> bool:
        """Whether this process writes checkpoints (rank 0)."""
        return self.rank == 0

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` in DistributedDataParallel (it broadcasts rank 0's weights now and
        averages gradients in ``backward``), or ``module`` itself in one process."""
        if not self.active:
            return module
        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def sum(self, values: Tensor) -> Tensor:
        """The element-wise sum of ``values`` over all ranks (``values`` itself in one process)."""
        if self.active:
            td.all_reduce(values, op=td.ReduceOp.SUM)
        return values

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any rank (the same answer on every rank)."""
        if not self.active:
            return flag
        t = torch.tensor([float(flag)], device=device)
        return bool(self.sum(t).item() > 0)


def setup(distributed: bool | None, device: torch.device, *, timeout_s: float = 1800.0) -> Group:
    """The :class:`Group` of this process.

    Args:
        distributed: ``None``: use the process group if one is initialised, or initialise it
            when torchrun started this process (its variables say ``WORLD_SIZE`` > 1), else one
            process.
            ``True``: use it, or initialise one from torchrun's environment variables.
            ``False``: one process even under a launcher.
        device: where the flow is (chooses ``nccl`` for CUDA, ``gloo`` otherwise).
        timeout_s: collective timeout of a group made here.

    Raises:
        ValueError: ``distributed=True`` without a group or torchrun's variables.
    """
    if distributed is False or not td.is_available():
        if distributed:
            raise ValueError("distributed=True needs torch.distributed, which this torch lacks")
        return Group()
    if not td.is_initialized():
        launched = all(k in os.environ for k in _ENV) and int(os.environ["WORLD_SIZE"]) > 1
        if not (distributed or launched):
            return Group()
        missing = [k for k in _ENV if k not in os.environ]
        if missing:
            raise ValueError(
                f"distributed=True but no process group is initialised and {missing} are not "
                "set; start the script with `torchrun --nproc-per-node N script.py`, or call "
                "torch.distributed.init_process_group first"
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        td.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Group(rank=td.get_rank(), world=td.get_world_size(), active=td.get_world_size() > 1)


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return td.get_rank() if td.is_available() and td.is_initialized() else 0


def explain(exc: BaseException, group: Group) -> BaseException | None:
    """A clear ``RuntimeError`` for a collective that failed because another rank stopped or
    timed out, or ``None`` when ``exc`` is something else."""
    if not group.active:
        return None
    dist_error = getattr(td, "DistError", ())
    text = str(exc)
    hints = ("gloo", "nccl", "Connection", "connection", "timed out", "Timed out", "peer")
    if not (
        isinstance(exc, dist_error)
        or (isinstance(exc, RuntimeError) and any(h in text for h in hints))
    ):
        return None
    return RuntimeError(
        f"rank {group.rank} of {group.world}: a collective operation failed ({text.strip()[:300]}). "
        "Another process most likely stopped with an error (see its traceback) or hung past the "
        "timeout; fix it and rerun with resume=True to continue from the last checkpoint"
    )


def all_mean(group: Group, values: list[float], device: Any) -> list[float]:
    """The mean over ranks of each of ``values`` (float64)."""
    if not group.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    return (group.sum(t) / group.world).tolist()


# ---- fit_svi: sharded subsamples and all-reduced gradients -------------------------------------


def _key(*parts: Any) -> int:
    import hashlib

    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class _ShardedSubsample:
    """A Pyro messenger that draws each subsampled ``pyro.plate``'s indices as a function of
    ``(seed, step, plate name, call)``: the global subsample is the first
    ``subsample_size * world`` entries of a seeded permutation of ``range(size)``, of which
    rank ``r`` takes every ``world``-th from the ``r``-th. So ``W`` processes with
    ``subsample_size = m / W`` see the rows of one process with ``m``."""

    def __init__(self, group: Group, seed: int) -> None:
        from pyro.poutine.messenger import Messenger

        outer = self

        class _M(Messenger):
            def _process_message(self, msg: Any) -> None:
                outer._draw(msg)

        self.messenger = _M()
        self.group, self.seed, self.step = group, seed, 0
        self._calls: dict[str, int] = {}

    def _draw(self, msg: Any) -> None:
        from pyro.poutine.subsample_messenger import _Subsample

        fn = msg.get("fn")
        if msg.get("type") != "sample" or not isinstance(fn, _Subsample):
            return
        if msg.get("value") is not None or fn.subsample_size is None:
            return
        size, local, world = fn.size, fn.subsample_size, self.group.world
        if local * world > size:
            raise ValueError(
                f"plate {msg['name']!r}: subsample_size {local} x {world} processes exceeds its "
                f"size {size}; give each process subsample_size <= {size // world}"
            )
        if local >= size:
            return
        call = self._calls.get(msg["name"], 0)
        self._calls[msg["name"]] = call + 1
        g = torch.Generator().manual_seed(_key(self.seed, self.step, msg["name"], call))
        idx = torch.randperm(size, generator=g)[: local * world][self.group.rank :: world]
        msg["value"] = idx.to(fn.device) if fn.device is not None else idx

    def at(self, step: int) -> Any:
        self.step, self._calls = step, {}
        return self.messenger


class SVIGroupTask:
    """``fit_svi``'s task on a process group: seeded, sharded plate subsamples; gradients
    averaged over ranks after ``backward`` (the engine's ``after_backward`` hook); losses and
    "step failed" flags all-reduced; checkpoints from rank 0."""

    def __init__(self, task: Any, group: Group, seed: int | None) -> None:
        self.inner, self.group = task, group
        self.kind, self.target = task.kind, task.target
        self.has_validation = task.has_validation
        self.writes_checkpoints = group.writer
        self.sub = None if seed is None else _ShardedSubsample(group, seed)
        if group.active:  # every rank starts from rank 0's initial values
            for t in task.state().values():
                td.broadcast(t.data, src=0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def named_parameters(self) -> list[tuple[str, Tensor]]:
        return self.inner.named_parameters()

    def state(self) -> dict[str, Tensor]:
        return self.inner.state()

    def meta(self) -> dict[str, Any]:
        return self.inner.meta()

    def set_training(self, mode: bool) -> None:
        self.inner.set_training(mode)

    def validate(self) -> float:
        return self.inner.validate()

    def any_rank(self, flag: bool) -> bool:
        return self.group.any(flag, torch.device("cpu"))

    def loss(self, step: int) -> tuple[Tensor, Tensor, dict[str, Any]]:
        from ..transforms.base import NonFiniteError

        if self.sub is None:
            return self.inner.loss(step)
        if not self.group.active:  # one process: seeded subsamples only
            with self.sub.at(step):
                return self.inner.loss(step)
        failed, out = "", None
        try:
            with self.sub.at(step):
                out = self.inner.loss(step)
            if not torch.isfinite(out[0].detach()).all():
                failed = f"the loss is {float(out[0].detach())}"
        except (NonFiniteError, ValueError) as exc:
            if not (isinstance(exc, NonFiniteError) or "invalid values" in str(exc)):
                raise
            failed = f"{type(exc).__name__}: {exc}"
        v = 0.0 if failed else float(out[1].detach())  # type: ignore[index]
        flags = self.group.sum(torch.tensor([float(bool(failed)), v], dtype=torch.float64))
        if flags[0] > 0:
            where = f"on this rank ({failed})" if failed else "on another rank"
            raise NonFiniteError(f"the step failed {where}")
        total, _, extras = out  # type: ignore[misc]
        return total, (flags[1] / self.group.world).to(total.dtype), extras

    def after_backward(self, params: list[Tensor]) -> None:
        """Average the gradients over ranks (a missing gradient counts as zeros)."""
        if not self.group.active:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1).double() for p in params])  # type: ignore[union-attr]
        self.group.sum(flat)
        flat /= self.group.world
        i = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[i : i + n].view_as(p))  # type: ignore[union-attr]
            i += n


def svi_task(task: Any, distributed: bool | None, seed: int | None) -> Any:
    """``fit_svi``'s hook: ``task`` on the process group (sharded, seeded subsamples; averaged
    gradients), or with seeded subsamples in one process."""
    group = setup(distributed, torch.device("cpu"))
    if seed is None and not group.active:
        return SVIGroupTask(task, group, None)  # Pyro's own subsampling, untouched
    if seed is None:
        t = torch.randint(2**31 - 1, (1,), dtype=torch.float64)
        if group.active:
            td.broadcast(t, src=0)
        seed = int(t.item())
    return SVIGroupTask(task, group, seed)
