r"""Maximum-likelihood training of a flow: :func:`fit`.

Given data :math:`x_1, \dots, x_N` (and contexts :math:`c_i` for a conditional flow), ``fit``
minimises the average negative log-likelihood

.. math:: \mathcal{L}(\theta) = -\frac{1}{N} \sum_{i=1}^N \log p_\theta(x_i \mid c_i)

by minibatch stochastic gradient descent (Adam by default), or another objective (flow matching
for continuous flows, or any callable). The loop itself (rollback on divergence, checkpoints,
early stopping, progress bar) lives in :mod:`pyroflows.infer.engine` and is shared with
:func:`~pyroflows.infer.fit_svi`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..transforms.base import nonfinite_rows
from .config import DEFAULT_STEPS, loop_config, real_number, whole_number
from .engine import History, Run
from .state import fingerprint

__all__ = ["fit"]

Objective = Callable[[nn.Module, Tensor, "Tensor | None"], Tensor]


# ---- data checks -------------------------------------------------------------------------------


def _shape_str(shape: Sequence[int]) -> str:
    return "(N, " + ", ".join(map(str, shape)) + ")"


def as_tensor(x: Any, name: str) -> Tensor:
    """A torch view of a tensor, numpy array or array-like of numbers (no copy when possible)."""
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, (np.ndarray, list, tuple)) or hasattr(x, "__array__"):
        arr = np.asarray(x)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(
            arr
        ):
            raise TypeError(f"{name} must hold real numbers; got an array of dtype {arr.dtype}")
        return torch.from_numpy(np.ascontiguousarray(arr))
    raise TypeError(f"{name} must be a torch.Tensor or a numpy array; got {type(x).__name__}")


def check_rows(
    x: Any,
    name: str,
    shape: Sequence[int],
    *,
    dtype: torch.dtype,
    device: torch.device,
    rows: int | None = None,
    rows_of: str = "data",
) -> Tensor:
    """Convert ``x`` to a ``(N, *shape)`` tensor of ``dtype`` on ``device``, or raise a
    ``ValueError`` that says what is wrong: the shape, the row count (``rows``, those of
    ``rows_of``), or which rows hold NaN/Inf."""
    t = as_tensor(x, name)
    shape = tuple(shape)
    if t.dim() != 1 + len(shape) or tuple(t.shape[1:]) != shape:
        hint = ""
        if tuple(t.shape) == shape:
            hint = f"; a single point needs a leading batch axis: {name}[None]"
        elif t.dim() == 1 and shape == (1,):
            hint = f"; reshape it: {name}.reshape(-1, 1)"
        elif len(shape) == 3 and t.dim() == 4 and tuple(t.shape[1:]) == (*shape[1:], shape[0]):
            hint = f"; images must be channels-first: {name}.permute(0, 3, 1, 2)"
        raise ValueError(f"Expected {name} shape {_shape_str(shape)}; got {tuple(t.shape)}{hint}")
    if rows is not None and t.shape[0] != rows:
        raise ValueError(
            f"{name} has {t.shape[0]} rows but {rows_of} has {rows}; they must match row for row"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    t = t.to(device=device, dtype=dtype)
    bad = nonfinite_rows(t, len(shape))
    n = bad.numel()
    if n:
        idx = bad[:10].tolist()
        more = ", ..." if n > 10 else ""
        s = "s" if n > 1 else ""
        raise ValueError(
            f"{name} has {n} row{s} with NaN/Inf (row{s} {', '.join(map(str, idx))}{more}); "
            "remove or impute them"
        )
    return t


# ---- the task ----------------------------------------------------------------------------------


def nll(flow: nn.Module, x: Tensor, context: Tensor | None) -> Tensor:
    """Mean negative log-likelihood of a batch (the default objective)."""
    d = flow(context) if context is not None else flow()
    return -d.log_prob(x).mean()


def _plain(value: Any) -> Any:
    """A configuration value as checkpointable plain data that is equal across processes."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list, torch.Size)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    text = repr(value)
    return type(value).__qualname__ if " at 0x" in text else text


def describe_model(flow: nn.Module) -> dict[str, Any]:
    """The flow's class and configuration (``Flow.config``: the constructor's arguments), as
    recorded in checkpoints; flows built from a list of transforms have ``config`` ``None`` and
    are told apart by their tensors' names and shapes.

    Example:
        >>> import pyroflows as pf
        >>> describe_model(pf.MAF(2, num_layers=1, hidden_dims=(8,)))["hidden_dims"]
        [8]
    """
    config = getattr(flow, "config", None)
    if isinstance(config, dict):
        return {"class": type(flow).__name__, **_plain(config)}
    return {"class": type(flow).__name__}


def validation_split(
    n: int, val_fraction: float, seed: int, *, dtype: torch.dtype = torch.int64
) -> tuple[Tensor, Tensor]:
    """The rows :func:`fit` trains on and holds out: ``(train_indices, val_indices)``.

    The one rule for every caller (in-memory, streamed and table fits): a permutation of
    ``range(n)`` seeded by ``seed``, whose first ``min(max(1, round(n * val_fraction)), n - 1)``
    rows are held out (none when ``val_fraction`` is 0 or ``n < 2``).

    Example:
        >>> train, val = validation_split(10, 0.2, seed=0)
        >>> len(train), len(val), sorted(torch.cat([train, val]).tolist()) == list(range(10))
        (8, 2, True)
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)), dtype=dtype)
    n_val = validation_size(n, val_fraction)
    return perm[n_val:], perm[:n_val]


def validation_size(n: int, val_fraction: float) -> int:
    """How many of ``n`` rows :func:`validation_split` holds out.

    Example:
        >>> validation_size(300, 1e-3), validation_size(300, 0.1), validation_size(1, 0.5)
        (1, 30, 0)
    """
    return min(max(1, round(n * val_fraction)), n - 1) if val_fraction > 0 and n >= 2 else 0


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class Regularization:
    """Adds ``sum(weight * value)`` of the penalties that the flow's modules report (a
    ``regularization()`` method returning ``{name: value}``, e.g. a CNF's kinetic energy) to a
    loss; every reported value goes to the step's extras as ``"reg:<name>"``.

    Example:
        >>> import pyroflows as pf
        >>> reg = Regularization(pf.MAF(2, num_layers=1), {})
        >>> reg(torch.tensor(1.5))
        (tensor(1.5000), {})
    """

    def __init__(self, flow: nn.Module, weights: dict[str, float]) -> None:
        self.weights = weights
        self.modules = [m for m in flow.modules() if callable(getattr(m, "regularization", None))]
        self._checked = not weights

    def __call__(self, value: Tensor) -> tuple[Tensor, dict[str, Any]]:
        total, extras = value, {}
        reg: dict[str, Tensor] = {}
        for m in self.modules:
            for name, v in m.regularization().items():
                reg[name] = reg[name] + v if name in reg else v
        if not self._checked:  # once: a misspelt weight would otherwise do nothing, silently
            missing = set(self.weights) - set(reg)
            if missing:
                raise ValueError(
                    f"regularization names {sorted(missing)} are not reported by any module of "
                    f"the flow; available: {sorted(reg) or 'none'} (a ContinuousFlow reports "
                    "'kinetic' and 'jacobian' when built with regularize=True)"
                )
            self._checked = True
        for name, v in reg.items():
            w = self.weights.get(name, 0.0)
            if w:
                total = total + w * v
            extras["reg:" + name] = v
        return total, extras


class _FitTask:
    """Minibatches of the training rows, the objective, regularisation and validation."""

    kind = desc = "fit"

    def __init__(
        self,
        flow: nn.Module,
        x: Tensor,
        c: Tensor | None,
        val: tuple[Tensor, Tensor | None] | None,
        *,
        batch_size: int,
        seed: int,
        objective: Objective,
        regularization: dict[str, float],
    ) -> None:
        self.flow = self.target = flow
        self.x, self.c, self.val = x, c, val
        self.has_validation = val is not None
        self.batch_size = min(batch_size, len(x))
        self.per_epoch = max(1, len(x) // self.batch_size)  # the last partial batch is dropped
        self.seed = seed
        self.objective = objective
        self.regularize = Regularization(flow, regularization)
        self.nfe_modules = [m for m in flow.modules() if hasattr(m, "nfe")]
        self._epoch, self._perm = -1, None
        self._named = [(n, p) for n, p in flow.named_parameters() if p.requires_grad]
        self._model = describe_model(flow)
        self._fingerprint: str | None = None  # SHA-256 of the rows, computed when first needed
        # every parameter and buffer; modules update them in place (ActNorm's fill_, optimisers)
        self._state = flow.state_dict(keep_vars=True)

    def named_parameters(self) -> list[tuple[str, Tensor]]:
        return self._named  # fixed for the whole run (asked for at every step)

    def state(self) -> dict[str, Tensor]:
        return self._state

    def meta(self) -> dict[str, Any]:
        n_val = 0 if self.val is None else len(self.val[0])
        if self._fingerprint is None:
            vx, vc = (None, None) if self.val is None else self.val
            self._fingerprint = "sha256:" + fingerprint([self.x, self.c, vx, vc])
        return {
            "flow": self._model,
            "n_train": len(self.x),
            "n_val": n_val,
            "batch_size": self.batch_size,
            "data": self._fingerprint,
        }

    def set_training(self, mode: bool) -> None:
        self.flow.train(mode)

    def batch(self, step: int) -> tuple[Tensor, Tensor | None]:
        """The rows of step ``step``: a fresh permutation per epoch, a function of (seed, epoch)."""
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            self._perm = torch.randperm(len(self.x), generator=g).to(self.x.device)
            self._epoch = epoch
        rows = self._perm[i * self.batch_size : (i + 1) * self.batch_size]  # type: ignore[index]
        return self.x[rows], None if self.c is None else self.c[rows]

    def loss(self, step: int) -> tuple[Tensor, Tensor, dict[str, Any]]:
        x, c = self.batch(step)
        value = self.objective(self.flow, x, c)
        total, extras = self.regularize(value)
        if self.nfe_modules:
            extras["nfe"] = float(sum(m.nfe for m in self.nfe_modules))
        return total, value, extras

    def validate(self) -> float:
        return self._evaluate(*self.val)  # type: ignore[misc]

    def check(self) -> float:
        """The objective (the NLL by default) of the current weights on the first training
        batch: NaN/Inf, or a NonFiniteError, means the weights are unusable."""
        n = self.batch_size
        return self._evaluate(self.x[:n], None if self.c is None else self.c[:n])

    def _evaluate(self, x: Tensor, c: Tensor | None) -> float:
        chunk = 4 * self.batch_size
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        # a stochastic objective (flow matching) sees the same noise at every check, and the
        # training stream of random numbers does not depend on how often validation runs
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            for s in range(0, len(x), chunk):
                xb, cb = x[s : s + chunk], None if c is None else c[s : s + chunk]
                total += self.objective(self.flow, xb, cb).double() * len(xb)
        return float(total) / len(x)


def default_eval_every(steps: int, per_epoch: int) -> int:
    """Steps between validation checks by default: once per epoch, but at least
    ``ceil(steps / 100)`` and at most ``ceil(steps / 10)`` steps apart, so a run has between
    10 and 100 checks (a small table, whose epoch is one step, is not validated at every step).

    Example:
        >>> default_eval_every(1000, 1), default_eval_every(1000, 40), default_eval_every(1000, 4000)
        (10, 40, 100)
    """
    return max(1, min(max(per_epoch, math.ceil(steps / 100)), math.ceil(steps / 10)))


def _reference(flow: nn.Module) -> tuple[torch.dtype, torch.device]:
    for t in (*flow.parameters(), *flow.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def objective_fn(objective: Any, kwargs: dict[str, Any]) -> Objective:
    if objective == "nll":
        if kwargs:
            raise ValueError("objective_kwargs are only used by objective='flow_matching'")
        return nll
    if objective == "flow_matching":
        from .flow_matching import flow_matching_loss

        return lambda flow, x, c: flow_matching_loss(flow, x, c, **kwargs)
    if callable(objective) and not isinstance(objective, str):
        return objective
    raise ValueError(
        f"objective must be 'nll', 'flow_matching' or a callable (flow, batch, context) -> loss; "
        f"got {objective!r}"
    )


#: ``fit``'s own keywords (the others are the loop's, :class:`~pyroflows.infer.LoopConfig`).
FIT_OPTIONS = (
    "context",
    "epochs",
    "batch_size",
    "val_fraction",
    "val_data",
    "val_context",
    "device",
    "objective",
    "objective_kwargs",
    "regularization",
)


def fit(
    flow: nn.Module,
    data: Any,
    *,
    context: Any = None,
    epochs: int | None = None,
    batch_size: int = 256,
    val_fraction: float = 0.1,
    val_data: Any = None,
    val_context: Any = None,
    device: str | torch.device | None = None,
    objective: str | Objective = "nll",
    objective_kwargs: dict[str, Any] | None = None,
    regularization: dict[str, float] | None = None,
    distributed: bool | None = None,
    check_data: bool = True,
    **options: Any,
) -> History:
    """Fit ``flow`` to ``data`` by maximum likelihood (or another ``objective``).

    Args:
        flow: a :class:`~pyroflows.Flow` (anything with ``event_shape`` whose call returns a
            distribution). Trained in place; at the end it holds the best-validation weights.
        data: ``(N, *flow.event_shape)`` tensor or numpy array: ``(N, D)`` tables, ``(N, C, H, W)``
            images. Moved to the flow's device and dtype. Shapes and finiteness are checked
            before training, with errors that locate the bad rows.
        context: ``(N, context_dim)`` contexts for a conditional flow, row for row with ``data``.
        epochs: training length in epochs instead of ``steps`` (give at most one; default 1000
            steps). An epoch is ``N_train // batch_size`` steps; each epoch visits the rows in
            a fresh random order.
        batch_size: minibatch size.
        val_fraction: share of ``data`` held out for validation (ignored when ``val_data`` is
            given; 0 disables validation). ``val_context`` goes with ``val_data``.
        device: move the flow there first (default: where it is).
        objective: ``"nll"``; ``"flow_matching"`` (``pyroflows.infer.flow_matching``, with
            ``objective_kwargs``; its validation loss is the same flow-matching loss on the
            validation rows, with the same noise at every check; not a likelihood); or a callable
            ``(flow, batch, context) -> scalar loss``, used for validation too.
        regularization: ``{name: weight}``; after each loss evaluation every module with a
            ``regularization()`` method (e.g. a CNF's kinetic energy) reports ``{name: value}``,
            and ``sum(weight * value)`` is added to the training loss (not to the validation
            loss). All reported values are recorded in ``History.regularization``, and the
            ``nfe`` of modules that have one in ``History.nfe``.
        distributed: ``None`` (default): train data-parallel when a ``torch.distributed``
            process group is initialised, or initialise it when ``torchrun`` started this
            process with ``WORLD_SIZE`` > 1; ``True``:
            also initialise one from torchrun's environment variables (``gloo`` on the CPU,
            ``nccl`` on GPUs); ``False``: one process. Then ``batch_size`` is per process; see
            ``pyroflows.infer.data`` and docs/scaling.md.
        check_data: scan a streamed ``data`` source for NaN/Inf rows first (in chunks).
        **options: the training loop's options, documented in
            :class:`~pyroflows.infer.LoopConfig`: ``steps``, ``lr`` (default 1e-3),
            ``optimizer``, ``lr_schedule``, ``warmup``, ``weight_decay``, ``clip_grad``,
            ``eval_every``, ``patience``, ``progress``, ``seed``, ``checkpoint``,
            ``checkpoint_every``, ``resume``, ``callbacks`` (``cb(step, history, flow)``). An
            unknown keyword raises a ``TypeError`` naming the closest option.

    ``data`` may also be a memory-mapped array (:func:`pyroflows.datasets.open_npy`), a
    ``torch.utils.data.Dataset`` of rows or ``(row, context)`` pairs (read by index, a minibatch
    at a time, with the same validation split and batch order as the in-memory fit), an
    ``IterableDataset`` or a ``DataLoader`` (consumed in its own order; validation then comes
    from ``val_data`` only): see ``pyroflows.infer.data``.

    Returns:
        The :class:`~pyroflows.infer.History` (train/validation losses, best step, rollbacks...).

    A step whose loss or gradients are NaN/Inf (or that raises
    :class:`~pyroflows.NonFiniteError`) is rolled back (weights and optimiser state), the
    learning rate halved, and a warning issued. A rollback has recovered once ten steps in a row
    succeed after it; five failures without a recovery in between stop training with
    ``History.diverged`` set and ``History.message`` saying what failed. The weights returned
    (the best-validation ones when there is validation) are checked with the objective on a
    training batch; if that is NaN/Inf or raises, the last good weights are restored and
    ``diverged``/``message`` say so (with a ``RuntimeWarning``).

    Example:
        >>> import torch, pyroflows as pf
        >>> x = torch.randn(500, 2) * torch.tensor([1.0, 2.0]) + 3
        >>> flow = pf.MAF(2, num_layers=2, hidden_dims=(16,))
        >>> history = pf.fit(flow, x, steps=200, lr=1e-2, seed=0, progress=False)
        >>> history.steps, history.best_val_loss < 4.0
        (200, True)
    """
    if not isinstance(flow, nn.Module) or not hasattr(flow, "event_shape"):
        raise TypeError(
            f"flow must be a pyroflows Flow (an nn.Module with event_shape); got {type(flow).__name__}"
        )
    cfg = loop_config("fit", options, own=FIT_OPTIONS)  # checks every loop option
    if cfg.steps is not None and epochs is not None:
        raise ValueError("give steps or epochs, not both")
    # whole numbers (1e4 is fine, 2.5 is refused) and fractions, before any work is done
    epochs = None if epochs is None else whole_number("epochs", epochs, 1)
    batch_size = whole_number("batch_size", batch_size, 1)
    if real_number("val_fraction", val_fraction, 0.0) >= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    if device is not None:
        flow.to(device)
    dtype, dev = _reference(flow)
    shape = tuple(flow.event_shape)
    context_dim = int(getattr(flow, "context_dim", 0) or 0)
    # ---- issue 15 hook: Datasets, DataLoaders, memory maps, torch.distributed (infer/data.py)
    from .data import fit_streamed, is_streamed
    from .distributed import setup as _dist_setup

    if is_streamed(data) or _dist_setup(distributed, dev).active:
        opts = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        opts.update(
            context=context,
            epochs=epochs,
            batch_size=batch_size,
            val_fraction=val_fraction,
            val_data=val_data,
            val_context=val_context,
            objective=objective,
            objective_kwargs=objective_kwargs,
            regularization=regularization,
            distributed=distributed,
            check_data=check_data,
        )
        opts.update(dtype=dtype, device=dev, shape=shape, context_dim=context_dim)
        return fit_streamed(flow, data, **opts)
    # ---- end of hook
    x = check_rows(data, "data", shape, dtype=dtype, device=dev)

    def _context(c: Any, name: str, rows: int, rows_of: str) -> Tensor | None:
        if context_dim and c is None:
            raise ValueError(
                f"the flow is conditional (context_dim={context_dim}); pass {name}=array of "
                f"shape ({rows}, {context_dim})"
            )
        if not context_dim and c is not None:
            raise ValueError(f"the flow is unconditional; do not pass {name}")
        if c is None:
            return None
        return check_rows(
            c, name, (context_dim,), dtype=dtype, device=dev, rows=rows, rows_of=rows_of
        )

    c = _context(context, "context", len(x), "data")
    run = Run(cfg, seed_fixes="the validation split and the batch order")
    val = None
    if val_data is not None:
        vx = check_rows(val_data, "val_data", shape, dtype=dtype, device=dev)
        val = (vx, _context(val_context, "val_context", len(vx), "val_data"))
    elif val_context is not None:
        raise ValueError("val_context goes with val_data")
    elif val_fraction > 0 and len(x) >= 2:
        keep, held = (i.to(dev) for i in validation_split(len(x), val_fraction, run.seed))
        val = (x[held], None if c is None else c[held])
        x, c = x[keep], None if c is None else c[keep]
    if cfg.patience is not None and val is None:
        raise ValueError("patience needs validation data: set val_fraction > 0 or pass val_data")

    task = _FitTask(
        flow,
        x,
        c,
        val,
        batch_size=batch_size,
        seed=run.seed,
        objective=objective_fn(objective, dict(objective_kwargs or {})),
        regularization=dict(regularization or {}),
    )
    steps = cfg.steps
    if steps is None:
        steps = epochs * task.per_epoch if epochs is not None else DEFAULT_STEPS
    eval_every = cfg.eval_every
    if eval_every is None:
        eval_every = default_eval_every(steps, task.per_epoch)
    was_training = flow.training
    try:
        return run.train(task, steps=steps, eval_every=eval_every)
    finally:
        flow.train(was_training)
