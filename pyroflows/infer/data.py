r"""Data sources of :func:`~pyroflows.fit` beyond one in-memory tensor, and data-parallel fits.

:func:`fit_streamed` is what ``pf.fit`` runs when ``data`` is a memory-mapped array
(:func:`pyroflows.datasets.open_npy`), a map-style :class:`torch.utils.data.Dataset`, an
:class:`~torch.utils.data.IterableDataset` or a :class:`~torch.utils.data.DataLoader`, or when
several processes train together (:mod:`pyroflows.infer.distributed`).

Map-style sources (arrays, memory maps, datasets) are read by index, a minibatch at a time, so
memory does not grow with the number of rows:

- the pre-flight check of shapes and NaN/Inf runs over the rows in chunks and names bad rows by
  their row numbers (``check_data=False`` skips it, e.g. for a table checked before);
- the validation rows are a seeded index split (the same permutation of ``range(N)`` as the
  in-memory ``fit``), so nothing is loaded to choose them;
- step ``k`` of epoch ``e`` uses rows ``train[perm_e[k B W : (k + 1) B W]]`` of a per-epoch
  permutation (a function of the seed and ``e``, as in ``fit``), where ``B`` is the per-process
  ``batch_size`` and ``W`` the number of processes; process ``r`` takes every ``W``-th of them
  from the ``r``-th (DistributedSampler's rule). So one process over a memory map replays the
  in-memory fit exactly, and ``W`` processes with batch ``B / W`` see the batches of one
  process with batch ``B``.

Iterable sources are consumed in their own order (a ``DataLoader``'s batches as they come; an
``IterableDataset``'s rows grouped by ``batch_size``); their validation comes from ``val_data``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyro
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..datasets.streaming import scan_rows
from ..transforms.base import NonFiniteError
from .distributed import Group, explain, setup
from .state import fingerprint

# Internal to pf.fit (which imports fit_streamed and is_streamed by name): no public names.
__all__: list[str] = []

_CHUNK = 65536


def is_streamed(data: Any) -> bool:
    """Whether ``fit`` reads ``data`` by index or by iteration instead of as one tensor."""
    return isinstance(data, (np.memmap, Dataset, DataLoader)) or (
        isinstance(data, np.ndarray) and isinstance(getattr(data, "base", None), np.memmap)
    )


# ---- map-style row sources ---------------------------------------------------------------------


class _Rows:
    """Rows (and contexts) read by index from an array, memory map, tensor or Dataset."""

    def __init__(self, data: Any, context: Any, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self.data, self.context = data, context
        self.paired = False
        if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
            if context is not None:
                raise ValueError(
                    "a Dataset carries its own contexts: make its items (row, context) pairs "
                    "and do not pass context="
                )
            first = data[0]
            self.paired = isinstance(first, (tuple, list))
        self.n = len(data)

    def __len__(self) -> int:
        return self.n

    def _t(self, a: Any) -> Tensor:
        t = a if isinstance(a, Tensor) else torch.from_numpy(np.ascontiguousarray(a))
        return t.to(device=self.device, dtype=self.dtype)

    def get(self, idx: Tensor | np.ndarray) -> tuple[Tensor, Tensor | None]:
        idx = np.asarray(idx.cpu() if isinstance(idx, Tensor) else idx, dtype=np.int64)
        d = self.data
        if isinstance(d, Dataset):
            # __getitems__ may return a batch (a tensor, or a (rows, contexts) tuple, as
            # ArrayRows does) or, as torch's convention, a list of items; items are rows or pairs
            many = getattr(d, "__getitems__", None)
            items = many(idx.tolist()) if many is not None else [d[int(i)] for i in idx]
            c = None
            if isinstance(items, Tensor):
                x = items
            elif isinstance(items, tuple) and len(items) == 2 and self.paired:
                x, c = items
            elif self.paired:
                x = torch.stack([_as(i[0]) for i in items])
                c = torch.stack([_as(i[1]) for i in items])
            else:
                x = torch.stack([_as(i) for i in items])
            return self._t(x), None if c is None else self._t(c)
        x = d[torch.from_numpy(idx)] if isinstance(d, Tensor) else d[idx]
        c = self.context
        if c is not None:
            c = c[torch.from_numpy(idx)] if isinstance(c, Tensor) else c[idx]
        return self._t(x), None if c is None else self._t(c)

    def chunks(self, which: str) -> Iterator[tuple[int, Tensor]]:
        for s in range(0, self.n, _CHUNK):
            x, c = self.get(np.arange(s, min(s + _CHUNK, self.n)))
            yield s, (x if which == "data" else c)


def _as(a: Any) -> Tensor:
    return a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))


def _epoch_perm(seed: int, epoch: int, n: int) -> Tensor:
    from .fit import epoch_seed

    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g, dtype=_index_dtype(n))


def _index_dtype(n: int) -> torch.dtype:
    """int32 row indices (4 bytes a row) when they fit; the same permutation as int64."""
    return torch.int32 if n < 2**31 else torch.int64


class _IndexedFitTask:
    """fit's task over rows read by index, sharded over the processes of ``group``."""

    kind = "fit"

    def __init__(
        self,
        flow: nn.Module,
        rows: _Rows,
        train: Tensor,
        val: tuple[_Rows, Tensor] | None,
        *,
        batch_size: int,
        seed: int,
        objective: Callable,
        regularization: dict[str, float],
        group: Group,
        data_id: Callable[[], str],
    ) -> None:
        from .fit import Regularization, describe_model

        self.flow = self.target = flow
        self.rows, self.train, self.val = rows, train, val
        self.has_validation = val is not None
        self.group = group
        self.writes_checkpoints = group.writer  # engine hook: only rank 0 writes
        self.local = min(batch_size, max(1, len(train) // group.world))
        self.global_batch = self.local * group.world
        self.per_epoch = max(1, len(train) // self.global_batch)
        self.seed = seed
        self.objective = objective
        self.regularize = Regularization(flow, regularization)
        self._named = [(n, p) for n, p in flow.named_parameters() if p.requires_grad]
        self._state = flow.state_dict(keep_vars=True)
        self._model = describe_model(flow)
        self._data_id, self._id = data_id, None
        self._epoch, self._perm = -1, None
        self._module = group.wrap(_Objective(flow, objective), rows.device)
        self._check_data_init = True

    def named_parameters(self) -> list[tuple[str, Tensor]]:
        return self._named

    def state(self) -> dict[str, Tensor]:
        return self._state

    def meta(self) -> dict[str, Any]:
        if self._id is None:
            self._id = self._data_id()
        return {
            "flow": self._model,
            "n_train": len(self.train),
            "n_val": 0 if self.val is None else len(self.val[1]),
            "batch_size": self.global_batch,
            "data": self._id,
        }

    def set_training(self, mode: bool) -> None:
        self.flow.train(mode)

    def any_rank(self, flag: bool) -> bool:  # engine hook: stop together
        return self.group.any(flag, self.rows.device)

    def batch(self, step: int) -> tuple[Tensor, Tensor | None]:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._perm, self._epoch = _epoch_perm(self.seed, epoch, len(self.train)), epoch
        b = self.global_batch
        chosen = self._perm[i * b : (i + 1) * b][self.group.rank :: self.group.world]  # type: ignore[index]
        return self.rows.get(self.train[chosen.long()])

    def loss(self, step: int) -> tuple[Tensor, Tensor, dict[str, Any]]:
        x, c = self.batch(step)
        if self._check_data_init:  # once, at the first step this process runs
            self._check_data_init = False
            if self.group.active and _pending_data_init(self.flow):
                self._data_init(x, c)
        failed, value = "", None
        try:
            value = self._module(x, c)
            if not torch.isfinite(value.detach()).all():
                failed = f"the loss is {float(value)}"
        except (NonFiniteError, ValueError) as exc:
            if not (isinstance(exc, NonFiniteError) or "invalid values" in str(exc)):
                raise
            failed = f"{type(exc).__name__}: {exc}"
        if self.group.active:
            flags = torch.tensor(
                [float(bool(failed)), 0.0 if failed else float(value.detach())],  # type: ignore[arg-type]
                dtype=torch.float64,
                device=x.device,
            )
            self.group.sum(flags)
            if flags[0] > 0:
                where = f"on this rank ({failed})" if failed else "on another rank"
                raise NonFiniteError(f"the step failed {where}")
            mean = flags[1] / self.group.world
        elif failed:
            raise NonFiniteError(failed)
        else:
            mean = None
        total, extras = self.regularize(value)
        record = value if mean is None else mean.to(value.dtype).detach()  # type: ignore[union-attr]
        return total, record, extras  # type: ignore[return-value]

    def _data_init(self, x: Tensor, c: Tensor | None) -> None:
        """Data-dependent layers (ActNorm) initialise from the whole global batch on every rank.

        Each rank holds ``1 / W`` of the batch, so a layer initialised from its own share would
        start (and, with averaged gradients, stay) different on every rank while rank 0's
        weights are the ones saved. The shares are gathered and the objective is run once on
        all of them without gradients (in a forked RNG), as one process with the whole batch
        would at its first step.
        """
        import torch.distributed as td

        parts: list[Any] = [None] * self.group.world
        td.all_gather_object(parts, (x.cpu(), None if c is None else c.cpu()))

        def whole(i: int) -> Tensor:  # rank r holds rows r, r + W, ...: put them back in order
            shares = [p[i] for p in parts]
            if len({len(t) for t in shares}) > 1:  # an iterable source's uneven last shares
                return torch.cat(shares).to(x.device)
            return torch.stack(shares, 1).flatten(0, 1).to(x.device)

        xs, cs = whole(0), None if c is None else whole(1)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            self.objective(self.flow, xs, cs)

    def _evaluate(self, rows: _Rows, idx: Tensor) -> float:
        """The mean objective over rows ``idx`` (this rank's share, summed over ranks)."""
        mine = idx[self.group.rank :: self.group.world]
        chunk = 4 * self.local
        total = torch.zeros((), dtype=torch.float64, device=rows.device)
        devices = [rows.device] if rows.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for s in range(0, len(mine), chunk):
                x, c = rows.get(mine[s : s + chunk])
                total += self.objective(self.flow, x, c).double() * len(x)
        return float(self.group.sum(total.reshape(1))[0]) / len(idx)

    def validate(self) -> float:
        return self._evaluate(*self.val)  # type: ignore[misc]

    def check(self) -> float:
        """The objective on the first ``batch_size`` training rows (the same on every rank)."""
        x, c = self.rows.get(self.train[: self.local])
        with torch.no_grad():
            return float(self.objective(self.flow, x, c))


class _Objective(nn.Module):
    """``objective(flow, x, c)`` as a module, so DistributedDataParallel runs it in forward."""

    def __init__(self, flow: nn.Module, objective: Callable) -> None:
        super().__init__()
        self.flow, self.objective = flow, objective

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        return self.objective(self.flow, x, c)


# ---- iterable sources --------------------------------------------------------------------------


class _IterFitTask(_IndexedFitTask):
    """fit's task over a DataLoader's batches, or an IterableDataset's rows in batches."""

    def __init__(self, flow: nn.Module, loader: Any, val: Any, **kw: Any) -> None:
        self.loader = loader
        self._it: Iterator | None = None
        self._pos = (-1, -1)
        dtype, device = kw.pop("dtype"), kw.pop("device")
        self._dtype, self._device = dtype, device
        dummy = _Rows(np.zeros((1, 1)), None, dtype, device)
        super().__init__(flow, dummy, torch.zeros(0, dtype=torch.long), None, **kw)
        self.val_loader = val
        self.has_validation = val is not None
        self.local = getattr(loader, "batch_size", None) or 1
        self.global_batch = self.local * self.group.world
        try:
            self.per_epoch = len(loader)
        except TypeError:
            self.per_epoch = 0  # unknown: an epoch ends when the iterator does

    def meta(self) -> dict[str, Any]:
        return {"flow": self._model, "batch_size": self.global_batch, "data": "iterable"}

    def _split(self, item: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(item, (tuple, list)):
            x, c = item[0], item[1] if len(item) > 1 else None
        else:
            x, c = item, None
        x = _as(x).to(device=self._device, dtype=self._dtype)
        return x, None if c is None else _as(c).to(device=self._device, dtype=self._dtype)

    def batch(self, step: int) -> tuple[Tensor, Tensor | None]:
        epoch, pos = self._pos
        if self._it is None or step != pos + 1:  # start (or resume): replay up to step
            epoch, pos, self._it = 0, -1, self._iterate(0)
            while pos + 1 < step:
                epoch, pos = self._advance(epoch, pos)
        epoch, pos = self._advance(epoch, pos, keep=True)
        return self._item  # type: ignore[return-value]

    def _iterate(self, epoch: int) -> Iterator:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # DistributedSampler: a fresh shard order per epoch
        return iter(self.loader)

    def _advance(self, epoch: int, pos: int, keep: bool = False) -> tuple[int, int]:
        try:
            item = next(self._it)  # type: ignore[arg-type]
        except StopIteration:
            epoch += 1
            self._it = self._iterate(epoch)
            try:
                item = next(self._it)
            except StopIteration:
                raise ValueError("the data loader yields no batch") from None
        if keep:
            self._item = self._split(item)
        self._pos = (epoch, pos + 1)
        return epoch, pos + 1

    def validate(self) -> float:
        total = torch.zeros(2, dtype=torch.float64, device=self._device)
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(self.seed)
            for item in self.val_loader:
                x, c = self._split(item)
                total[0] += self.objective(self.flow, x, c).double() * len(x)
                total[1] += len(x)
        self.group.sum(total)
        return float(total[0] / total[1])

    def check(self) -> float:
        x, c = self._split(next(iter(self.loader)))
        with torch.no_grad():
            return float(self.objective(self.flow, x, c))


def _loader(data: Any, batch_size: int, group: Group) -> Any:
    if isinstance(data, DataLoader):
        if group.active and not hasattr(data.sampler, "set_epoch"):
            raise ValueError(
                "under torch.distributed a DataLoader must shard its rows: build it with "
                "sampler=torch.utils.data.DistributedSampler(dataset, seed=...) (or pass the "
                "Dataset itself and let fit shard it)"
            )
        return data
    # an IterableDataset: rows in batches; each rank takes every world-th row
    return DataLoader(_Strided(data, group), batch_size=batch_size)


class _Strided(IterableDataset):
    def __init__(self, data: IterableDataset, group: Group) -> None:
        self.data, self.group = data, group

    def __iter__(self) -> Iterator:
        for i, item in enumerate(self.data):
            if i % self.group.world == self.group.rank:
                yield item


# ---- fit over such sources ---------------------------------------------------------------------


def _stream_id(rows: _Rows, extra: list[Any]) -> str:
    """A SHA-256 of the rows (values and order), read in chunks, and of the split."""
    h = hashlib.sha256()
    for which in ("data", "context") if rows.context is not None or rows.paired else ("data",):
        for _, t in rows.chunks(which):
            h.update(fingerprint([t]).encode())
    h.update(repr(extra).encode())
    return "sha256-stream:" + h.hexdigest()


def fit_streamed(flow: nn.Module, data: Any, **o: Any) -> Any:
    """``pf.fit`` over a streamed source and/or several processes; ``o`` holds fit's (already
    checked) options plus ``dtype``, ``device``, ``shape``, ``context_dim``, ``distributed``,
    ``check_data`` and ``make_config`` (``(task, base) -> LoopConfig``)."""
    from .engine import load_checkpoint, train
    from .fit import check_rows, objective_fn

    dtype, dev, shape = o["dtype"], o["device"], tuple(o["shape"])
    group = setup(o["distributed"], dev)
    seed, ckpt = o["seed"], None
    if o["resume"]:
        ckpt = load_checkpoint(o["checkpoint"])
    if ckpt is not None and seed is not None and seed != ckpt.get("seed"):
        raise ValueError(
            f"cannot resume from {o['checkpoint']}: its run used seed={ckpt.get('seed')}, this "
            f"one seed={seed}; pass the same seed or seed=None, or resume=False to start over"
        )
    if ckpt is not None:
        base = int(ckpt["seed"])
    elif seed is not None:
        base = seed
    else:  # the same base seed on every rank
        t = torch.randint(2**31 - 1, (1,), dtype=torch.float64, device=dev)
        base = int(t.item()) if not group.active else int(_broadcast(t, group).item())
    pyro.set_rng_seed(base + group.rank)  # each rank its own deterministic random stream
    objective = objective_fn(o["objective"], dict(o["objective_kwargs"] or {}))
    common = dict(
        batch_size=o["batch_size"],
        seed=base,
        objective=objective,
        regularization=dict(o["regularization"] or {}),
        group=group,
    )
    if isinstance(data, (DataLoader, IterableDataset)):
        if o["context"] is not None:
            raise ValueError(
                "a DataLoader/IterableDataset carries its own contexts: yield "
                "(rows, context) pairs and do not pass context="
            )
        val = None
        if o["val_data"] is not None:
            val = (
                _loader(o["val_data"], o["batch_size"], Group())
                if is_streamed(o["val_data"])
                else [(o["val_data"], o["val_context"])]
                if o["val_context"] is not None
                else [o["val_data"]]
            )
        task: Any = _IterFitTask(
            flow,
            _loader(data, o["batch_size"], group),
            val,
            dtype=dtype,
            device=dev,
            data_id=lambda: "iterable",
            **common,
        )
    else:
        if isinstance(data, Tensor) or (isinstance(data, np.ndarray) and not is_streamed(data)):
            data = check_rows(data, "data", shape, dtype=dtype, device=dev)
            if o["context"] is not None:
                o["context"] = check_rows(
                    o["context"],
                    "context",
                    (o["context_dim"],),
                    dtype=dtype,
                    device=dev,
                    rows=len(data),
                )
        rows = _Rows(data, o["context"], dtype, dev)
        cdim = o["context_dim"]
        if cdim and o["context"] is None and not rows.paired:
            raise ValueError(
                f"the flow is conditional (context_dim={cdim}); pass context= or a Dataset of "
                "(row, context) pairs"
            )
        if rows.n == 0:
            raise ValueError("data is empty")
        if o["check_data"] and not isinstance(data, Tensor):
            scan_rows(rows.chunks("data"), name="data", shape=shape)
            if cdim:
                scan_rows(rows.chunks("context"), name="context", shape=(cdim,))
        n = rows.n
        perm = torch.arange(n, dtype=_index_dtype(n))
        val: Any = None
        vf = o["val_fraction"]
        if o["val_data"] is not None:
            vd, vcx = o["val_data"], o["val_context"]
            if not is_streamed(vd):
                vd = check_rows(vd, "val_data", shape, dtype=dtype, device=dev)
                if vcx is not None:
                    vcx = check_rows(vcx, "val_context", (cdim,), dtype=dtype, device=dev,
                                     rows=len(vd), rows_of="val_data")  # fmt: skip
            elif o["check_data"]:
                scan_rows(_Rows(vd, vcx, dtype, dev).chunks("data"), name="val_data", shape=shape)
            vrows = _Rows(vd, vcx, dtype, dev)
            val = (vrows, torch.arange(vrows.n))
        elif vf > 0 and n >= 2:
            from .fit import validation_split

            perm, held = validation_split(n, vf, base, dtype=_index_dtype(n))
            val = (rows, held)
        if isinstance(data, Tensor):  # the in-memory fit's fingerprint: resumable either way

            def data_id() -> str:
                vx = vc = None
                if val is not None:
                    vx, vc = val[0].get(val[1])
                tx, tc = rows.get(perm)
                return "sha256:" + fingerprint([tx, tc, vx, vc])
        else:
            data_id = lambda: _stream_id(rows, [base, len(perm)])  # noqa: E731
        task = _IndexedFitTask(flow, rows, perm, val, data_id=data_id, **common)
    if o["patience"] is not None and not task.has_validation:
        raise ValueError("patience needs validation data: set val_fraction > 0 or pass val_data")
    cfg = _config(task, base, o)
    was_training = flow.training
    try:
        return train(task, cfg, ckpt)
    except Exception as exc:
        clear = explain(exc, group)
        if clear is not None:
            raise clear from exc
        raise
    finally:
        flow.train(was_training)


def _config(task: Any, base: int, o: dict[str, Any]) -> Any:
    from .engine import LoopConfig
    from .fit import default_eval_every

    steps, epochs = o["steps"], o["epochs"]
    if steps is None and epochs is not None:
        if not task.per_epoch:
            raise ValueError("this data source has no length: give steps instead of epochs")
        steps = epochs * task.per_epoch
    steps = steps or 1000
    eval_every = o["eval_every"] or default_eval_every(steps, task.per_epoch or steps)
    callbacks = o["callbacks"]
    return LoopConfig(
        steps=steps,
        lr=o["lr"],
        optimizer=o["optimizer"],
        lr_schedule=o["lr_schedule"],
        warmup=o["warmup"],
        weight_decay=o["weight_decay"],
        clip_grad=o["clip_grad"],
        eval_every=eval_every,
        patience=o["patience"],
        progress=o["progress"] and task.group.writer,
        checkpoint=o["checkpoint"],
        checkpoint_every=o["checkpoint_every"],
        callbacks=(callbacks,) if callable(callbacks) else tuple(callbacks),
        seed=base,
    )


def _pending_data_init(flow: nn.Module) -> bool:
    """Whether a layer of ``flow`` still waits for data to initialise (an ``initialized`` flag)."""
    for m in flow.modules():
        flag = getattr(m, "initialized", None)
        if isinstance(flag, Tensor) and not bool(flag):
            return True
    return False


def _broadcast(t: Tensor, group: Group) -> Tensor:
    import torch.distributed as td

    td.broadcast(t, src=0)
    return t
