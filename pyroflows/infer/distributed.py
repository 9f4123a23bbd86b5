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

__all__ = ["Group", "explain", "setup"]

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
        distributed: ``None``: use the process group if one is initialised, else one process.
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
        if not distributed:
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
