"""The ``pyroflows`` command: fit a flow to a table, sample from it, score rows, run the demo.

::

    pyroflows fit data.csv --flow maf --out model.pt      # CSV (header optional), TSV or NPY
    pyroflows fit data.csv --flow cnf --steps 5000 --lr-schedule cosine --out cnf.pt
    pyroflows sample model.pt -n 1000 --out samples.csv
    pyroflows score model.pt data.csv --out scores.csv    # log-density per row, original units
    pyroflows demo                                        # two moons and digits, PNGs + a table

``fit`` standardises each column (z = (x - mean) / std), fits the flow to z, and saves the flow
with that standardisation as its data-end layer (:meth:`pyroflows.Flow.standardize_`), so
``sample``, ``score`` and ``pyroflows.load(model).log_prob(raw_rows)`` all work in the original
units: log p(x) = log p_z(z) - sum(log std). Bad input
gets a one-line message on stderr and exit code 1 (2 for bad command-line usage).

``--flow cnf`` is a continuous flow trained by flow matching (``--objective flow-matching``, its
default: no ODE solve while training); its scores and reported NLLs are exact ODE likelihoods
with the exact divergence, whatever the dimension.

Every ``--out`` is checked before any work: it must name a file (not a folder) in a folder that
exists, and it must not be one of the command's input files (the same file also through a
symbolic or hard link), so nothing the user had is overwritten. In tables an empty cell is a
missing value (NaN): ``fit`` reports the rows that have one, ``score`` scores them NaN.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .flows import FLOWS
from .infer.table import exact_divergence, fit_table
from .nn import default_hidden_dims

__all__ = ["FLOW_CHOICES", "main"]

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _vector_presets() -> dict[str, str]:
    """``--flow`` names -> names of the presets in :data:`pyroflows.FLOWS` that model table rows:
    the classes of pyroflows whose ``__init__`` takes ``input_dim`` and ``hidden_dims`` and needs
    nothing else. A new preset shows up here (and in ``--flow``) without an edit."""
    out = {}
    for name, cls in FLOWS.items():
        if name.startswith("_") or cls.__module__.split(".")[0] != "pyroflows":
            continue
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        names = {p.name for p in params}
        needed = {p.name for p in params if p.default is p.empty and p.kind not in _VARIADIC}
        if {"input_dim", "hidden_dims"} <= names and needed <= {"input_dim"}:
            out[name.lower()] = name
    return dict(sorted(out.items()))


#: ``--flow`` names -> preset class names of :data:`pyroflows.FLOWS` (see :func:`_vector_presets`).
FLOW_CHOICES = _vector_presets()
_COUPLING = {"realnvp", "nice", "glow"}
#: ``--objective`` names -> :func:`pyroflows.fit` objectives.
OBJECTIVES = {"nll": "nll", "flow-matching": "flow_matching"}
#: .npy files larger than this are memory-mapped by `pyroflows fit` (issue 15); --stream forces it.
STREAM_BYTES = 256 * 2**20


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 1."""


def _rows_text(rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(r) + 1) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")


def _hidden(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive sizes like 128,128; got {text!r}"
        )
    return dims


def _positive(kind: type, *, zero: bool = False) -> Any:
    """An argparse type: a finite number of ``kind`` above 0 (or at least 0 with ``zero=True``)."""
    what = "a whole number >= 0" if zero else f"a positive {kind.__name__}"
    what = "a positive finite number" if kind is float else what

    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not math.isfinite(v) or not (v >= 0 if zero else v > 0):
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}")
        return v

    return parse


def _fraction(text: str) -> float:
    """An argparse type for ``--val-fraction``: a finite number in [0, 1)."""
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not 0 <= v < 1:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"expected the share of rows to hold out, a number from 0 (none) up to but not "
            f"including 1, e.g. 0.1; got {text!r}"
        )
    return v


def _seed(text: str) -> int:
    """An argparse type for ``--seed``: a whole number in [0, 2**32 - 1] (what numpy accepts)."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 0 to {2**32 - 1}; got {text!r}"
        )
    return v


def _check_out(out: str, inputs: Sequence[str] = (), *, example: str) -> None:
    """Refuse, before any work, an ``--out`` that cannot be written or that is one of ``inputs``.

    ``out`` must name a file (not a folder, not empty) in a folder that exists and is writable;
    missing folders are not created (the message gives the ``mkdir`` to run). An ``out`` that is
    the same file as an input (compared with :func:`os.path.samefile`, so also through symbolic
    and hard links) is refused: writing there would destroy the input.
    """
    if not out.strip():
        raise CLIError(f"--out is empty; give the file to write, e.g. --out {example}")
    path = Path(out)
    if path.is_dir() or out.endswith(("/", os.sep)):
        raise CLIError(
            f"--out {out} is a folder; give a file to write in it, e.g. --out {path / example}"
        )
    folder = path.parent
    if not folder.exists():
        raise CLIError(
            f"--out {out}: the folder {folder} does not exist; create it first "
            f"(mkdir -p {shlex.quote(str(folder))}) or give another --out"
        )
    if not folder.is_dir():
        raise CLIError(f"--out {out}: {folder} is a file, not a folder; give another --out")
    for source in inputs:
        try:
            same = os.path.samefile(out, source)
        except OSError:  # one of them does not exist (yet): not the same file
            same = False
        if same:
            how = "" if os.path.abspath(out) == os.path.abspath(source) else " (through a link)"
            raise CLIError(
                f"--out {out} is the input file {source}{how}; writing it would destroy the "
                "input, so give another --out"
            )
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CLIError(f"--out {out}: no permission to write there; give another --out")


def _check_outputs(args: argparse.Namespace) -> None:
    """Check a command's ``--out`` before it does any work (see :func:`_check_out`); ``demo``
    writes into a folder, which it may create, but not inside a folder that does not exist."""
    if args.command != "demo":
        _check_out(args.out, [getattr(args, k) for k in args.inputs], example=args.example)
        return
    out = Path(args.out)
    if not args.out.strip() or (out.exists() and not out.is_dir()):
        what = "is empty" if not args.out.strip() else f"{args.out} is a file"
        raise CLIError(f"--out {what}; give a folder for the plots, e.g. --out demo-output")
    if not out.parent.is_dir():
        raise CLIError(
            f"--out {args.out}: the folder {out.parent} does not exist; create it first "
            f"(mkdir -p {shlex.quote(str(out.parent))}) or give another --out"
        )


# ---- fit ---------------------------------------------------------------------------------------


def _load_finite_table(path: str) -> tuple[np.ndarray, list[str]]:
    from pyroflows.datasets import check_rows, load_table

    x, columns = load_table(path)
    bad = np.flatnonzero(~check_rows(x))
    if len(bad):
        raise CLIError(
            f"{path} has {len(bad)} row(s) with NaN/Inf or empty cells (data rows "
            f"{_rows_text(bad)}, counted from 1 after any header); remove or impute them before "
            "fitting"
        )
    return x, columns


def _cmd_fit(args: argparse.Namespace) -> int:
    import pyroflows as pf

    # ---- issue 15 hook: a large (or --stream) .npy is memory-mapped, never loaded whole
    stream = args.data.lower().endswith(".npy") and (
        args.stream or os.path.getsize(args.data) > STREAM_BYTES
    )
    if stream:
        from pyroflows.datasets.streaming import open_npy

        try:
            x = open_npy(args.data)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        columns = [f"x{j}" for j in range(x.shape[1])]
    else:
        x, columns = _load_finite_table(args.data)
    # ---- end of hook
    n, d = x.shape
    if args.flow in _COUPLING and d < 2:
        raise CLIError(
            f"--flow {args.flow} splits the columns in two and needs at least 2; use maf"
        )
    if n < 2:
        raise CLIError(f"{args.data} has {n} row; fitting needs at least 2")
    cnf = args.flow == "cnf"
    objective = args.objective or ("flow-matching" if cnf else "nll")
    if objective == "flow-matching" and not cnf:
        raise CLIError("--objective flow-matching trains continuous flows; use --flow cnf")
    preset = FLOWS[FLOW_CHOICES[args.flow]]
    if args.layers is not None and "num_layers" not in inspect.signature(preset).parameters:
        what = "is one ODE, not a stack of layers" if cnf else "takes no --layers"
        raise CLIError(f"--flow {args.flow} {what}; size it with --hidden")
    kwargs: dict[str, Any] = {"hidden_dims": args.hidden}
    kwargs |= {} if args.layers is None else {"num_layers": args.layers}
    torch.manual_seed(args.seed)
    try:
        flow = preset(d, **kwargs)
    except ValueError as exc:
        raise CLIError(f"--flow {args.flow} cannot model this table: {exc}; try maf") from exc
    start = time.perf_counter()
    opts = dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    opts |= dict(objective=OBJECTIVES[objective], warmup=args.warmup)
    opts |= dict(lr_schedule=None if args.lr_schedule == "constant" else args.lr_schedule)
    if stream:  # issue 15 hook
        from pyroflows.datasets.streaming import fit_npy

        out = fit_npy(flow, x, val_fraction=args.val_fraction, prepare=exact_divergence,
                      progress=not args.no_progress, **opts)  # fmt: skip
    else:
        out = fit_table(
            flow, x, val_fraction=args.val_fraction, progress=not args.no_progress, **opts
        )
    history = out["history"]
    if history.diverged:
        print(f"warning: training diverged: {history.message}", file=sys.stderr)
    meta = {k: out[k] for k in ("train_nll", "val_nll", "n_train", "n_val")}
    meta |= dict(source=str(args.data), family=args.flow, steps=history.steps, seed=args.seed)
    meta |= dict(objective=objective)
    from pyroflows.infer.distributed import rank  # issue 15 hook: under torchrun, rank 0 saves

    if rank() != 0:
        return 0
    st = out["standardizer"]  # part of the saved model: pf.load(out).log_prob(raw rows) works
    pf.save(flow.standardize_(mean=st.mean, std=st.std), args.out, columns=columns, **meta)
    val = "n/a" if out["val_nll"] is None else f"{out['val_nll']:.4f}"
    print(
        f"fitted {FLOW_CHOICES[args.flow]} to {n} rows x {d} columns in "
        f"{time.perf_counter() - start:.1f} s ({history.steps} steps)\n"
        f"final NLL (nats per row, original units): train {out['train_nll']:.4f}  val {val}\n"
        f"saved {args.out}"
    )
    return 0


# ---- sample and score --------------------------------------------------------------------------


def _load_model(path: str) -> tuple[Any, Any, list[str]]:
    import pyroflows as pf
    from pyroflows.datasets import Standardizer

    try:
        flow = pf.load(path)
    except FileNotFoundError as exc:
        raise CLIError(f"{exc}; give the file written by 'pyroflows fit --out'") from exc
    if len(flow.event_shape) != 1 or flow.context_dim:
        raise CLIError(
            f"{path} holds a model of events of shape {tuple(flow.event_shape)}"
            f"{' with a context' if flow.context_dim else ''}; the command line handles "
            "unconditional models of table rows (shape (D,)) only"
        )
    from pyroflows.transforms import Standardize

    d = flow.input_dim
    meta = getattr(flow, "metadata", {}) or {}
    columns = meta.get("columns") or [f"x{j}" for j in range(d)]
    if len(columns) != d:
        raise CLIError(
            f"{path} is inconsistent: metadata for {len(columns)} columns, model for {d}"
        )
    last = flow.transforms[-1] if len(flow.transforms) else None
    if "standardizer" in meta and not isinstance(last, Standardize):
        # a file from before the flow held its standardisation: attach the one in the metadata
        old = Standardizer.from_dict(meta["standardizer"])
        if old.dim != d:
            raise CLIError(f"{path} is inconsistent: metadata for {old.dim} columns, model for {d}")
        flow.standardize_(mean=old.mean, std=old.std)
    st = Standardizer(np.zeros(d), np.ones(d))  # identity: the flow takes original units
    flow.eval()
    exact_divergence(flow)
    return flow, st, list(columns)


def _write_table(path: str, array: np.ndarray, columns: Sequence[str]) -> None:
    """Write ``array`` to exactly ``path``: ``.npy`` (any case) as NumPy, ``.tsv`` with tabs, else
    CSV with a header line. The folder must exist (see :func:`_check_out`)."""
    out = Path(path)
    if out.suffix.lower() == ".npy":
        with out.open("wb") as f:  # np.save(path) would append ".npy" to "samples.NPY"
            np.save(f, array)
        return
    delimiter = "\t" if out.suffix.lower() == ".tsv" else ","
    with out.open("w", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerow(columns)
        np.savetxt(f, array, delimiter=delimiter, fmt="%.10g")


def _cmd_sample(args: argparse.Namespace) -> int:
    import pyro

    flow, st, columns = _load_model(args.model)
    pyro.set_rng_seed(args.seed)
    with torch.no_grad():
        chunks = [flow.sample((min(8192, args.n - s),)) for s in range(0, args.n, 8192)]
    x = st.inverse(torch.cat(chunks).double().numpy())
    from pyroflows.datasets import check_rows

    bad = int((~check_rows(x)).sum())
    if bad:
        print(f"warning: {bad} sample(s) are not finite", file=sys.stderr)
    _write_table(args.out, x, columns)
    print(f"wrote {args.n} samples x {len(columns)} columns to {args.out}")
    return 0


def _score_rows(flow: Any, st: Any, x: torch.Tensor) -> torch.Tensor:
    """Log-densities in original units; a row whose pass fails (a NonFiniteError, or a CNF's
    SolverError) gets NaN."""
    from pyroflows.transforms import SolverError
    from pyroflows.transforms.base import NonFiniteError

    with torch.no_grad():
        try:
            return st.log_prob(flow, x).double()
        except (NonFiniteError, SolverError):
            if len(x) == 1:
                return torch.full((1,), float("nan"), dtype=torch.float64)
            return torch.cat([_score_rows(flow, st, r) for r in x.split(max(1, len(x) // 8))])


def _cmd_score(args: argparse.Namespace) -> int:
    from pyroflows.datasets import check_rows, load_table

    flow, st, model_columns = _load_model(args.model)
    x, columns = load_table(args.data)
    if x.shape[1] != flow.input_dim:
        raise CLIError(
            f"{args.data} has {x.shape[1]} columns but the model was fitted to {flow.input_dim} "
            f"({', '.join(model_columns)}); give a table with the same columns in the same order"
        )
    default = [f"x{j}" for j in range(len(columns))]  # load_table's names without a header
    if default not in (columns, model_columns) and columns != model_columns:
        print(
            f"warning: the column names ({', '.join(columns)}) differ from the model's "
            f"({', '.join(model_columns)}); scoring by position",
            file=sys.stderr,
        )
    ok = check_rows(x)
    scores = np.full(len(x), np.nan)
    dtype = next(flow.parameters()).dtype
    rows = torch.as_tensor(x[ok], dtype=dtype)
    if len(rows):
        scores[ok] = torch.cat([_score_rows(flow, st, b) for b in rows.split(4096)]).numpy()
    bad = np.flatnonzero(~ok)
    if len(bad):
        print(
            f"{len(bad)} of {len(x)} rows have NaN/Inf or empty cells and were scored NaN "
            f"(data rows {_rows_text(bad)}, counted from 1 after any header)",
            file=sys.stderr,
        )
    failed = np.flatnonzero(ok & ~np.isfinite(scores))
    if len(failed):
        print(
            f"{len(failed)} rows got a non-finite score (data rows {_rows_text(failed)}); they "
            "lie far outside the training data",
            file=sys.stderr,
        )
    _write_table(args.out, scores[:, None], ["log_prob"])
    finite = scores[np.isfinite(scores)]
    mean = f"{finite.mean():.4f}" if len(finite) else "n/a"
    print(f"scored {len(x)} rows: mean log-density {mean} nats over {len(finite)} rows")
    print(f"wrote {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), quick=args.quick)


# ---- the parser --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyroflows",
        description="Normalizing flows for Pyro: fit a density to a table, sample, score, demo.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{fit,sample,score,demo}")
    f = sub.add_parser("fit", help="fit a flow to a CSV/TSV/NPY table and save it")
    f.add_argument("data", help="CSV (header optional), TSV or .npy file; one row per example")
    f.add_argument(
        "--stream",
        action="store_true",
        help="memory-map a .npy file and read it a minibatch at a time (automatic above 256 MiB)",
    )
    f.add_argument("--flow", choices=sorted(FLOW_CHOICES), default="maf", help="flow family")
    f.add_argument("--layers", type=_positive(int), default=None, help="number of layers")
    f.add_argument(
        "--hidden",
        type=_hidden,
        default=default_hidden_dims(),
        help="hidden sizes, e.g. 128,128 (default: %(default)s, pyroflows.nn.default_hidden_dims)",
    )
    f.add_argument("--steps", type=_positive(int), default=2000, help="optimisation steps")
    f.add_argument("--batch-size", type=_positive(int), default=256)
    f.add_argument("--lr", type=_positive(float), default=1e-3, help="Adam learning rate")
    f.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine", "tail"),
        default="constant",
        help="lr schedule",
    )
    f.add_argument(
        "--warmup", type=_positive(int, zero=True), default=0, help="steps of linear lr warm-up"
    )
    f.add_argument(
        "--objective",
        choices=sorted(OBJECTIVES),
        default=None,
        help="training loss (default: flow-matching for cnf, nll otherwise)",
    )
    f.add_argument("--val-fraction", type=_fraction, default=0.1, help="share of rows held out")
    f.add_argument("--seed", type=_seed, default=0)
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.add_argument("--out", required=True, help="model file to write, e.g. model.pt")
    f.set_defaults(run=_cmd_fit, inputs=("data",), example="model.pt")
    s = sub.add_parser("sample", help="draw samples from a fitted model")
    s.add_argument("model", help="model file written by 'pyroflows fit'")
    s.add_argument("-n", type=_positive(int), required=True, help="number of samples")
    s.add_argument("--out", required=True, help="output .csv, .tsv or .npy")
    s.add_argument("--seed", type=_seed, default=0)
    s.set_defaults(run=_cmd_sample, inputs=("model",), example="samples.csv")
    c = sub.add_parser("score", help="log-density of every row of a table")
    c.add_argument("model", help="model file written by 'pyroflows fit'")
    c.add_argument("data", help="CSV/TSV/NPY table with the model's columns")
    c.add_argument("--out", required=True, help="output .csv (one log_prob per row) or .npy")
    c.set_defaults(run=_cmd_score, inputs=("model", "data"), example="scores.csv")
    d = sub.add_parser("demo", help="fit flows to two moons and digits; write plots and a table")
    d.add_argument("--out", default="demo-output", help="folder for the plots and results")
    d.add_argument("--quick", action="store_true", help="tiny run (seconds), for tests")
    d.set_defaults(run=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyroflows`` command; returns the exit code (0 ok, 1 bad input, 2 bad usage).

    Example:
        >>> main(["fit", "missing.csv", "--out", "m.pt", "--no-progress"])
        1
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return int(exc.code or 0)
    try:
        _check_outputs(args)
        return int(args.run(args))
    except KeyboardInterrupt:
        print("pyroflows: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, FloatingPointError, ImportError) as exc:
        print(f"pyroflows {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
