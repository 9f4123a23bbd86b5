"""Convergence at equal architecture: what slows pyroflows' MAF and RealNVP down.

Every contender is trained by the **same plain Adam loop** (not ``pf.fit``): the same
standardised training tensor, the same minibatches (one permutation per epoch from a generator
seeded by the run's seed), the same initialisation seed (``torch.manual_seed(seed)`` just before
each model is built), the same learning rate and number of steps. The validation NLL is computed
every ``--eval-every`` steps (and at step 0); the weights of the best validation NLL are kept,
and the test NLL is reported for those **best-validation weights** and for the **final
weights**. NLLs are in nats per point *in the data's own units* (the standardisation's
log-Jacobian is added back), so they compare with the generator's entropy
(:data:`pyroflows.datasets.toy.OPTIMAL_NLL`, 0.289 for two moons).

Contenders (the builders of ``benchmarks/flows.py``, imported, so the architectures are the ones
whose parameter counts that benchmark checks: 5 layers, conditioners with two hidden layers of
128 ReLU units; ``--flows NSF NICE`` add ``pf.NSF``'s coupling form against zuko's equal-parameter
spline coupling (``benchmarks/splines.py``'s builder) and ``pf.NICE`` alone, no other library
building the same flow):

* the other libraries: ``zuko``, ``pyro`` (and ``nflows``, ``normflows`` with ``--libraries``);
* pyroflows' preset (``pf.MAF`` / ``pf.RealNVP``) in its default configuration and in
  **variants** built here, without touching the library, by changing the constructed objects:

  ==================  ==============================================================================
  ``default``         as shipped: soft bound ``3 tanh(s / 3)``, alternation, and the
                      preset's ``zero_init`` default (zero last layers except RealNVP's)
  ``init-zero``       last layer of every conditioner zeroed (``zero_init=True``, the identity
                      start; the same weights as ``default`` before RealNVP's default changed)
  ``init-1e-3``       last layer of every conditioner ~ N(0, 1e-3^2) (weights; bias 0)
  ``init-torch``      last layer re-initialised by ``nn.Linear.reset_parameters`` (PyTorch
                      default, what zuko and Pyro use)
  ``bound-none``      no bound on the log-scale (``log_scale_bound=None``)
  ``bound-5``         ``5 tanh(s / 5)``
  ``bound-10``        ``10 tanh(s / 10)``
  ``random-perm``     RealNVP: the transformed half drawn at random per layer (``swap``); MAF: a
                      random order per layer. At D = 2 zuko's checkered masks are exactly the
                      alternation, so ``checkered`` is not a separate variant here.
  ``base-diag``       learnable diagonal Gaussian base (``base="diag"``)
  ``bound-softsign``  zuko's log-scale bound ``s = a / (1 + |a| / 6.91)`` (``log(1 / slope)``,
                      slope 1e-3) instead of ``3 tanh(a / 3)``
  ``shift-after``     zuko's direction of the affine: shift after scaling in the density
                      direction, ``z = y exp(-s) - t`` (sampling ``y = (x + t) exp(s)``), instead
                      of ``z = (y - t) exp(-s)``; ``softsign+shift-after``: both, which is
                      zuko's affine coupling exactly (checked by copying zuko's weights)
  ``base-side``       the affine map on the base side, ``z = (y - t) exp(-s)`` in the density
                      direction (MAF's default before ``invert_affine``; RealNVP's and IAF's
                      now). ``bound-softsign``, ``shift-after`` and ``softsign+shift-after``
                      replace the transformer whatever side the preset uses; MAF's default is
                      now the data side, the same map as ``shift-after`` up to the signs of
                      the conditioner's outputs
  ``torch+bound-5``   ``init-torch`` and ``bound-5`` (likewise ``torch+none``, ``1e-3+bound-5``,
                      ``1e-3+none``)
  ==================  ==============================================================================

Without ``--variants``, ``default``, ``init-torch``, ``init-1e-3``, ``bound-none``,
``bound-5`` and ``torch+none`` run (:data:`DEFAULT_VARIANTS`); ``random-perm``, ``base-diag``,
``bound-10`` and the other combinations are opt-in. ``--quick``: 200 steps, one seed,
``default`` and ``init-torch`` against zuko and Pyro.

The report is a markdown table of medians over the seeds (with the min-max range) of: the
validation NLL after 200 and 500 steps (how fast it gets there), the test NLL of the
best-validation weights and of the final weights, and the step of the best validation NLL.

Usage::

    .venv/bin/python benchmarks/convergence.py          # moons, 8 contenders x 2 flows x 3 seeds:
                                                        # 48 runs, ~12 min of CPU (~15 s a run)
    .venv/bin/python benchmarks/convergence.py --quick  # a smoke run (~1 min of CPU)
    .venv/bin/python benchmarks/convergence.py --datasets checkerboard \\
        --variants default init-torch                   # another data set
    # a long sweep in pieces (runs are deterministic), reported together:
    .venv/bin/python benchmarks/convergence.py --flows MAF --jsonl maf.jsonl
    .venv/bin/python benchmarks/convergence.py --flows RealNVP --jsonl nvp.jsonl
    .venv/bin/python benchmarks/convergence.py --combine maf.jsonl nvp.jsonl
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import environment, markdown_table, set_threads
from benchmarks.flows import BUILDERS, FLOW_NAMES, Contender

LIBRARIES = ("zuko", "pyro", "nflows", "normflows")
#: flows beyond ``benchmarks/flows.py``'s: ``NSF`` (pyroflows' coupling ``pf.NSF``, 8 bins on
#: [-5, 5], against zuko's equal-parameter spline coupling, ``benchmarks/splines.py``'s builder)
#: and ``NICE`` (``pf.NICE``: additive couplings and a scaling layer; no anchor library builds
#: the same flow, so only pyroflows' variants run)
EXTRA_FLOWS = ("NSF", "NICE")
FLOWS = (*FLOW_NAMES, *EXTRA_FLOWS)
DATASETS = ("moons", "checkerboard", "8gaussians")


# ---- pyroflows variants -----------------------------------------------------------------------


def _layers(model: nn.Module) -> list[nn.Module]:
    return list(model.transforms)  # type: ignore[attr-defined]


def _last_linear(layer: nn.Module) -> nn.Linear:
    """The output layer of a layer's conditioner (MLP: last module; MADE: ``net[-1]``)."""
    cond = layer.conditioner  # type: ignore[attr-defined]
    last = cond.net[-1] if hasattr(cond, "net") else cond[-1]
    if not isinstance(last, nn.Linear):
        raise TypeError(f"unexpected last layer {type(last).__name__}")
    return last


def _init_normal(std: float) -> Callable[[nn.Module], None]:
    def apply(model: nn.Module) -> None:
        with torch.no_grad():
            for layer in _layers(model):
                last = _last_linear(layer)
                last.weight.normal_(0.0, std)
                last.bias.zero_()

    return apply


def _init_zero(model: nn.Module) -> None:
    """The identity start: every conditioner's last layer zeroed (``zero_init=True``)."""
    with torch.no_grad():
        for layer in _layers(model):
            if hasattr(layer, "conditioner"):
                last = _last_linear(layer)
                last.weight.zero_()
                last.bias.zero_()


def _init_torch(model: nn.Module) -> None:
    for layer in _layers(model):
        if hasattr(layer, "conditioner"):  # NICE's scaling and NSF's permutations have none
            _last_linear(layer).reset_parameters()


def _bound(b: float | None) -> Callable[[nn.Module], None]:
    """What the constructor's ``log_scale_bound=b`` sets: the bound baked into the layer's
    transformer (a ``functools.partial`` of :func:`pyroflows.transforms.elementwise.affine`)."""

    def apply(model: nn.Module) -> None:
        for layer in _layers(model):
            tau = layer._tau  # type: ignore[attr-defined]
            layer._tau = functools.partial(tau.func, **{**tau.keywords, "bound": b})

    return apply


#: zuko's log-scale bound: ``MonotonicAffineTransform(slope=1e-3)`` maps the raw output ``a`` to
#: ``a / (1 + |a| / log(1 / slope))``, a softsign with asymptotes +-6.91
ZUKO_LOG_SLOPE = math.log(1e3)


def affine_variant(
    x: Tensor,
    params: Tensor,
    *,
    inverse: bool = False,
    dim: int = -1,
    bound: float | None = 3.0,
    softsign: bool = False,
    shift_after: bool = False,
) -> tuple[Tensor, Tensor]:
    """pyroflows' ``affine`` (``y = x exp(s) + t``, base -> data) or its variants.

    ``softsign``: ``s = a / (1 + |a| / 6.91)`` (zuko's bound) instead of ``b tanh(a / b)``.
    ``shift_after``: the shift added after the scaling in the **density** direction, as zuko's
    data -> base map ``z = y exp(-s) - t`` does; sampling is ``y = (x + t) exp(s)``. The
    log-derivative of the base -> data map is ``s`` in both forms (what the layer sums).
    """
    shift, raw = params.unbind(dim)
    if softsign:
        s = raw / (1 + raw.abs() / ZUKO_LOG_SLOPE)
    elif bound is None:
        s = raw
    else:
        s = bound * torch.tanh(raw / bound)
    if shift_after:
        if inverse:
            return x * torch.exp(-s) - shift, s
        return (x + shift) * torch.exp(s), s
    if inverse:
        return (x - shift) * torch.exp(-s), s
    return x * torch.exp(s) + shift, s


def _affine(*, softsign: bool = False, shift_after: bool = False) -> Callable[[nn.Module], None]:
    """Replace every layer's affine transformer by :func:`affine_variant` (same parameters)."""

    def apply(model: nn.Module) -> None:
        for layer in _layers(model):
            tau = layer._tau  # type: ignore[attr-defined]
            if getattr(tau, "func", None) is not _library_affine():
                raise TypeError(f"{type(layer).__name__} has no affine transformer to replace")
            keywords = {k: v for k, v in tau.keywords.items() if k != "invert"}  # its own side
            layer._tau = functools.partial(  # type: ignore[attr-defined]
                affine_variant, softsign=softsign, shift_after=shift_after, **keywords
            )

    return apply


def _library_affine() -> Callable[..., tuple[Tensor, Tensor | None]]:
    from pyroflows.transforms.elementwise import affine_on_side

    return affine_on_side


def _random_perm(model: nn.Module) -> None:
    """Rebuilt in :func:`build_variant` (the structure changes); nothing to do afterwards."""


#: variant name -> modifications applied, in order, to the freshly built preset
VARIANTS: dict[str, tuple[Callable[[nn.Module], None], ...]] = {
    "default": (),
    "init-zero": (_init_zero,),
    "init-1e-3": (_init_normal(1e-3),),
    "init-torch": (_init_torch,),
    "bound-none": (_bound(None),),
    "bound-5": (_bound(5.0),),
    "bound-10": (_bound(10.0),),
    "random-perm": (_random_perm,),
    "base-diag": (),
    "torch+bound-5": (_init_torch, _bound(5.0)),
    "torch+none": (_init_torch, _bound(None)),
    "1e-3+bound-5": (_init_normal(1e-3), _bound(5.0)),
    "1e-3+none": (_init_normal(1e-3), _bound(None)),
    "bound-softsign": (_affine(softsign=True),),
    "shift-after": (_affine(shift_after=True),),
    "base-side": (_affine(),),
    "softsign+shift-after": (_affine(softsign=True, shift_after=True),),
}
#: what a run without --variants trains (the others are cheap to add; see the docstring)
DEFAULT_VARIANTS = ("default", "init-torch", "init-1e-3", "bound-none", "bound-5", "torch+none")
QUICK_VARIANTS = ("default", "init-torch")


def build_variant(
    variant: str, flow: str, dim: int, layers: int, hidden: Sequence[int], seed: int
) -> Contender:
    """pyroflows' preset for ``flow``, changed as ``variant`` says (see :data:`VARIANTS`)."""
    import pyroflows as pf
    from pyroflows.transforms import Coupling, MaskedAutoregressive

    base = "diag" if variant == "base-diag" else "normal"
    if flow in EXTRA_FLOWS:
        if variant == "random-perm":
            raise ValueError(f"random-perm is built for MAF and RealNVP only; not {flow}")
        cls = pf.NSF if flow == "NSF" else pf.NICE
        model = cls(dim, num_layers=layers, hidden_dims=tuple(hidden), base=base)
    elif variant == "random-perm":
        gen = torch.Generator().manual_seed(10_000 + seed)
        if flow == "MAF":
            orders = [torch.randperm(dim, generator=gen).tolist() for _ in range(layers)]
            parts = [MaskedAutoregressive(dim, tuple(hidden), order=o) for o in orders]
        else:
            swaps = torch.randint(0, 2, (layers,), generator=gen).bool().tolist()
            parts = [Coupling(dim, tuple(hidden), swap=s) for s in swaps]
        model: nn.Module = pf.Flow(parts, event_shape=(dim,))
    else:
        cls = pf.MAF if flow == "MAF" else pf.RealNVP
        model = cls(dim, num_layers=layers, hidden_dims=tuple(hidden), base=base)
    for change in VARIANTS[variant]:
        change(model)
    return Contender(
        f"pyroflows {variant}",
        model,
        log_prob=model.log_prob,  # type: ignore[attr-defined]
        sample=lambda n: model.sample((n,)),  # type: ignore[attr-defined]
    )


# ---- data and the training loop ---------------------------------------------------------------


@dataclass
class Data:
    """Standardised splits of one toy set, and the log-Jacobian that maps NLLs back to data units.

    ``nll_data = nll_standardised + log_det`` with ``log_det = sum(log std)``.
    """

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    log_det: float


def make_data(name: str, n_train: int, n_val: int, n_test: int) -> Data:
    """Draw the splits with fixed seeds (0, 1, 2) and standardise them with the training stats."""
    from pyroflows.datasets import toy_data

    train, val, test = (toy_data(name, n, seed=s) for s, n in enumerate((n_train, n_val, n_test)))
    mean, std = train.mean(0), train.std(0)
    return Data(
        name,
        (train - mean) / std,
        (val - mean) / std,
        (test - mean) / std,
        float(std.log().sum()),
    )


def _nll(c: Contender, x: Tensor, log_det: float) -> float:
    with torch.no_grad():
        return float(-c.log_prob(x).mean()) + log_det


@dataclass
class Run:
    """One training run: the validation curve and the two test NLLs (data units)."""

    curve: dict[int, float] = field(default_factory=dict)
    best_step: int = 0
    best_test: float = math.nan
    final_test: float = math.nan
    seconds: float = 0.0


def train(
    c: Contender, data: Data, *, steps: int, batch: int, lr: float, seed: int, eval_every: int
) -> Run:
    """The loop every contender gets: Adam, epoch-wise shuffled minibatches, early-stopping copy."""
    params = [p for p in c.module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = data.train.shape[0]
    order, pos = torch.randperm(n, generator=gen), 0
    run = Run()
    best_val, best_state = _nll(c, data.val, data.log_det), copy.deepcopy(c.module.state_dict())
    run.curve[0] = best_val
    loss_fn = c.loss
    assert loss_fn is not None  # set by Contender.__post_init__
    start = time.process_time()
    for step in range(1, steps + 1):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=gen), 0
        x = data.train[order[pos : pos + batch]]
        pos += batch
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            v = _nll(c, data.val, data.log_det)
            run.curve[step] = v
            if v < best_val:  # NaN never wins
                best_val, run.best_step = v, step
                best_state = copy.deepcopy(c.module.state_dict())
    run.seconds = time.process_time() - start
    run.final_test = _nll(c, data.test, data.log_det)
    c.module.load_state_dict(best_state)
    run.best_test = _nll(c, data.test, data.log_det)
    return run


# ---- the sweep and the report -----------------------------------------------------------------


def contender_names(args: argparse.Namespace, flow: str | None = None) -> list[str]:
    """The contenders of a run (of ``flow``'s run: the libraries that can build it)."""
    libs = [lib for lib in args.libraries if flow is None or _library_builder(lib, flow)]
    return [*libs, *(f"pyroflows {v}" for v in args.variants)]


def _library_builder(
    lib: str, flow: str
) -> Callable[[str, int, int, Sequence[int]], Contender] | None:
    """``lib``'s builder of ``flow`` (``(flow, dim, layers, hidden)``), or None if it has none."""
    if flow in FLOW_NAMES:
        return BUILDERS[lib]
    if flow == "NSF" and lib == "zuko":
        from benchmarks.splines import build_zuko

        return lambda _flow, dim, layers, hidden: build_zuko("coupling", dim, layers, hidden)
    return None


def build(name: str, flow: str, args: argparse.Namespace, seed: int) -> Contender:
    torch.manual_seed(seed)
    if name.startswith("pyroflows "):
        return build_variant(name.split(" ", 1)[1], flow, 2, args.layers, args.hidden, seed)
    builder = _library_builder(name, flow)
    if builder is None:
        raise ValueError(f"{name} has no {flow} here")
    return builder(flow, 2, args.layers, args.hidden)


def _median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def _cell(xs: Sequence[float], digits: int = 3) -> str:
    """Median and, over more than one seed, the min-max range."""
    m = _median(xs)
    if len(xs) < 2:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({min(xs):.{digits}f}-{max(xs):.{digits}f})"


def _at(run: Run, step: int) -> float:
    """Validation NLL at the last evaluation at or before ``step``."""
    return run.curve[max(s for s in run.curve if s <= step)]


def report(
    results: dict[tuple[str, str, str], list[Run]],
    args: argparse.Namespace,
    params: dict[tuple[str, str], int],
) -> str:
    """The markdown table: one row per (flow, data set, contender) present in ``results``."""
    headers = [
        "flow",
        "data",
        "contender",
        "params",
        f"val NLL @{args.early[0]}",
        f"val NLL @{args.early[1]}",
        "test NLL, best-val weights",
        "test NLL, final weights",
        "best step",
        "seeds",
        "vs best other",
    ]
    rows = []
    names = list(dict.fromkeys(k[2] for k in results))
    for flow in dict.fromkeys(k[0] for k in results):
        for ds in dict.fromkeys(k[1] for k in results):
            others = [
                _median([r.best_test for r in results[(flow, ds, lib)]])
                for lib in names
                if not lib.startswith("pyroflows") and (flow, ds, lib) in results
            ]
            best_other = min(others) if others else math.nan
            for name in names:
                if (flow, ds, name) not in results:
                    continue
                runs = results[(flow, ds, name)]
                bt = [r.best_test for r in runs]
                diff = _median(bt) - best_other
                rows.append(
                    [
                        flow,
                        ds,
                        name,
                        f"{params[(flow, name)]:,}",
                        _cell([_at(r, args.early[0]) for r in runs]),
                        _cell([_at(r, args.early[1]) for r in runs]),
                        _cell(bt),
                        _cell([r.final_test for r in runs]),
                        f"{_median([float(r.best_step) for r in runs]):.0f}",
                        str(len(runs)),
                        f"{diff:+.3f}" if name.startswith("pyroflows") and others else "",
                    ]
                )
    return markdown_table(headers, rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flows", nargs="+", choices=FLOWS, default=list(FLOW_NAMES))
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=["moons"])
    p.add_argument("--libraries", nargs="*", choices=LIBRARIES, default=["zuko", "pyro"])
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), help="pyroflows variants")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--early", type=int, nargs=2, default=[200, 500], help="curve points shown")
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--n-val", type=int, default=5_000)
    p.add_argument("--n-test", type=int, default=20_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run (about a minute)")
    p.add_argument("--output", help="also write the markdown report to this file")
    p.add_argument("--jsonl", help="append every finished run to this JSON-lines file")
    p.add_argument(
        "--combine", nargs="+", metavar="JSONL", help="no training: report the runs in these files"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.early = min(args.steps, 200), args.seeds[:1], [50, 100]
        args.variants = args.variants or list(QUICK_VARIANTS)
    args.variants = args.variants or list(DEFAULT_VARIANTS)
    return args


def _save(path: str, flow: str, ds: str, name: str, seed: int, params: int, run: Run) -> None:
    """Append one finished run to a JSON-lines file (so a long sweep can be stopped and reported)."""
    rec = {"flow": flow, "data": ds, "contender": name, "seed": seed, "params": params}
    rec.update(
        curve={str(k): v for k, v in run.curve.items()},
        best_step=run.best_step,
        best_test=run.best_test,
        final_test=run.final_test,
        seconds=run.seconds,
    )
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def load_runs(
    paths: Sequence[str],
) -> tuple[dict[tuple[str, str, str], list[Run]], dict[tuple[str, str], int]]:
    """Runs saved by ``--jsonl`` (a repeated (flow, data, contender, seed) keeps the first)."""
    results: dict[tuple[str, str, str], list[Run]] = {}
    params: dict[tuple[str, str], int] = {}
    seen: set[tuple[str, str, str, int]] = set()
    for path in paths:
        with open(path) as fh:
            for line in fh:
                r = json.loads(line)
                key = (r["flow"], r["data"], r["contender"], r["seed"])
                if key in seen:
                    continue
                seen.add(key)
                run = Run({int(k): v for k, v in r["curve"].items()}, r["best_step"])
                run.best_test, run.final_test, run.seconds = (
                    r["best_test"],
                    r["final_test"],
                    r["seconds"],
                )
                results.setdefault(key[:3], []).append(run)
                params[(r["flow"], r["contender"])] = r["params"]
    return results, params


def main(argv: Sequence[str] | None = None) -> str:
    """Run the sweep (every contender within each seed), print and return the report."""
    args = parse_args(argv)
    threads = set_threads(args.threads)
    command = "python benchmarks/convergence.py " + " ".join(sys.argv[1:] if argv is None else argv)
    env = environment(["pyro-ppl", "zuko", "nflows", "normflows"])
    print(f"# {env}", flush=True)
    print(f"# torch.set_num_threads({threads}); {command.strip()}", flush=True)
    start = time.perf_counter()
    if args.combine:
        results, params = load_runs(args.combine)
    else:
        results, params = sweep(args)
    elapsed = time.perf_counter() - start
    text = "\n".join(
        [
            f"Command: `{command.strip()}` ({elapsed / 60:.1f} min wall)",
            "",
            f"Environment: {env}.",
            "",
            "Medians over the seeds (min-max in parentheses); NLL in nats per point in data "
            "units; the last column is the median best-val test NLL minus the best other "
            "library's.",
            "",
            report(results, args, params),
        ]
    )
    print()
    print(text)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text + "\n")
    return text


def sweep(
    args: argparse.Namespace,
) -> tuple[dict[tuple[str, str, str], list[Run]], dict[tuple[str, str], int]]:
    """Train every contender on every (flow, data set, seed); seeds outermost per data set."""
    results: dict[tuple[str, str, str], list[Run]] = {}
    params: dict[tuple[str, str], int] = {}
    for flow in args.flows:
        names = contender_names(args, flow)
        for name in names:
            params[(flow, name)] = build(name, flow, args, 0).num_params
        pf_names = [n for n in names if n.startswith("pyroflows")]
        ref = params[(flow, pf_names[0])] if pf_names else params[(flow, names[0])]
        print(f"{flow}: parameters " + ", ".join(f"{n}={params[(flow, n)]:,}" for n in names))
        for name in names:
            if params[(flow, name)] != ref and name != "pyroflows base-diag":
                print(f"  WARNING: {name} has {params[(flow, name)]:,} parameters, not {ref:,}")
        for ds in args.datasets:
            data = make_data(ds, args.n_train, args.n_val, args.n_test)
            for seed in args.seeds:
                for name in names:
                    c = build(name, flow, args, seed)
                    run = train(
                        c,
                        data,
                        steps=args.steps,
                        batch=args.batch,
                        lr=args.lr,
                        seed=seed,
                        eval_every=args.eval_every,
                    )
                    results.setdefault((flow, ds, name), []).append(run)
                    if args.jsonl:
                        _save(args.jsonl, flow, ds, name, seed, params[(flow, name)], run)
                    print(
                        f"{flow:7s} {ds:12s} seed {seed} {name:26s} "
                        f"val@{args.early[0]}={_at(run, args.early[0]):.3f} "
                        f"best-val test={run.best_test:.3f} (step {run.best_step}) "
                        f"final test={run.final_test:.3f} [{run.seconds:.1f}s cpu]",
                        flush=True,
                    )
    return results, params


if __name__ == "__main__":
    main()
