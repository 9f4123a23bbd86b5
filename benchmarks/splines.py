"""Neural spline flows: pyroflows' NSF against zuko, nflows, normflows and Pyro (issue 12).

Every library builds the **same architecture**: 5 layers of monotonic rational-quadratic splines
(``K = 8`` bins on ``[-5, 5]``, linear/identity tails, boundary derivatives 1, minimum bin size
and derivative 1e-3), each conditioner a network with two hidden layers of 128 ReLU units, in
float32. Two forms, each compared with its match in every library:

* ``coupling`` (pyroflows' default ``pf.NSF(D)``): a dense MLP on the kept half outputs the
  ``3K - 1`` spline parameters of every transformed coordinate; both directions are one pass.

  - pyroflows ``NSF(D)``: alternating halves at ``D = 2``, a fixed seeded permutation between
    layers above (each layer keeps a half the previous one transformed).
  - zuko: ``zuko.flows.NICE(D, univariate=MonotonicRQSTransform, shapes=[(K,), (K,), (K-1,)])``,
    i.e. ``GeneralCouplingTransform`` with zuko's spline and alternating checkered masks. (zuko's
    ``NSF(D, passes=2)`` is also a coupling, but through a *masked* MLP on all ``D`` inputs with
    outputs for every coordinate: 16 % more stored parameters at ``D = 2`` and about twice as
    many at ``D = 64``, so it is not the equal-architecture match.)
  - nflows: ``PiecewiseRationalQuadraticCouplingTransform`` (``tails="linear"``) with an ``MLP``,
    ``ReversePermutation`` between layers.
  - normflows: its copy of the same class
    (``normflows.flows.neural_spline.coupling.PiecewiseRationalQuadraticCoupling``) inside a
    ``CoupledRationalQuadraticSpline`` whose ``ResidualNet`` (an extra 128 x 128 layer per
    residual block) is replaced by ``normflows.nets.MLP``, so that the network is the same;
    ``Permute(mode="swap")`` between layers.
  - Pyro: ``SplineCoupling(D, D // 2, DenseNN(...), order="quadratic", identity=True)`` and a
    reversing ``Permute`` between layers. Pyro's helper ``spline_coupling`` builds *linear*
    rational splines with an extra unconditional spline on the kept half and ``bound=3``; the
    class is built directly so the transformer is the same RQ spline.

* ``autoregressive`` (``pf.NSF(D, fast="density")``: MADE conditioners, one pass for the
  density, ``D`` passes to sample): zuko's default ``zuko.flows.NSF(D)`` (alternating orders);
  nflows' ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform`` (no residual blocks,
  ``ReversePermutation`` between layers); normflows'
  ``MaskedPiecewiseRationalQuadraticAutoregressive`` (no residual blocks, the ReLU its MADE omits
  after the input layer added as in ``benchmarks/flows.py``) in an
  ``AutoregressiveRationalQuadraticSpline`` (``log_prob`` is its one-pass direction);
  Pyro's ``SplineAutoregressive(D, AutoRegressiveNN(..., param_dims=[K, K, K - 1]),
  order="quadratic")`` used through ``.inv`` (Pyro's transform is IAF-oriented), reversing
  ``Permute`` between layers. (Pyro's helper ``spline_autoregressive(..., order="quadratic")``
  builds a 4-output network that its quadratic spline cannot unpack, hence the class.)

Parameter counts are printed and checked to be within 10 % of pyroflows'.

**Speed** (``--part speed``), in the fast direction, one interleaved run per (form, D, metric)
(``benchmarks/common.py``: round-robin, medians, the process's CPU clock, torch on one thread),
each contender fed a pool of distinct tensors: ``log_prob`` points/s on 4096 points,
``sample`` points/s drawing 4096 (coupling form only: autoregressive sampling is the slow,
sequential direction), ``train`` Adam steps/s on batches of 512. The closures are
``benchmarks/flows.py``'s.

**Quality** (``--part quality``): every contender trained by ``benchmarks/convergence.py``'s
plain Adam loop (same minibatches, ``torch.manual_seed(seed)`` before each build, lr 1e-3,
best-validation weights), test NLL of the best-validation weights, medians over seeds:

* ``moons``: two moons standardised (10 000 / 5 000 / 20 000 points), NLL in nats in data units
  (the optimum is the generator's entropy, 0.289);
* ``wine``: scikit-learn's wine table (178 x 13), a fixed split from seed 0 (60 / 20 / 20 %),
  standardised with the training rows' mean and std; NLL in nats per row in standardised units;
* ``digits``: ``pyroflows.datasets.digits`` (its fixed 1438 / 359 split; the last 144 training
  images held out for validation), 17 levels, flattened to 64 values; every library gets the same
  pipeline: uniform dequantisation ``y = (x + u) / 17`` and a fixed standardisation of ``y``
  (training mean and std per pixel) in front of its flow, the standardisation's log-Jacobian
  counted. Training minimises ``pyroflows.bits_per_dim_loss(levels=17)`` (fresh noise per step);
  validation and test are ``pyroflows.bits_per_dim`` (2 noise draws per image, the same noise for
  every contender): bits/dim bounds, exactly how pyroflows computes them.

**Sweep** (``--part sweep``): the experiment behind ``pf.NSF``'s defaults ``bins=8, bound=5``:
``pf.NSF(2, bins=K, bound=B)`` (coupling form, 5 x (128, 128)) on standardised two moons for
K in 4, 8, 16 and B in 3, 5, seeds 0 and 1, 1000 steps of 512 (``--sweep-*`` options), test NLL
at best-validation weights.

``--contenders`` takes the libraries and two pyroflows variants: ``"pyroflows init-torch"``
(the last layer of every conditioner re-initialised by PyTorch's default,
``benchmarks/convergence.py``'s mechanism, instead of zeros) and ``"pyroflows base-side"``
(``pf.NSF(..., invert_spline=False)``: each spline on the base side, as in Pyro and in
pyroflows before ``invert_spline``, instead of the data side).

Usage::

    .venv/bin/python benchmarks/splines.py --part speed            # D = 2, 8, 64
    .venv/bin/python benchmarks/splines.py --part speed --quick    # smoke run, D = 2, 8
    .venv/bin/python benchmarks/splines.py --part quality --jsonl q.jsonl
    .venv/bin/python benchmarks/splines.py --part quality --combine q.jsonl   # report only
    .venv/bin/python benchmarks/splines.py --part sweep        # bins x bound behind NSF's defaults
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (
    Timing,
    environment,
    format_rate,
    markdown_table,
    set_threads,
    time_interleaved,
)
from benchmarks.convergence import Data, Run, _last_linear, make_data, train
from benchmarks.flows import (
    Contender,
    _log_prob_fn,
    _NoContext,
    _novalidation,
    _reversal,
    _sample_fn,
    _train_fn,
    check_agreement,
)

# nflows/normflows warn about every spline coupling they build with a plain MLP
warnings.filterwarnings("ignore", message="Inputs to the softmax are not scaled down")

LIBRARIES = ("pyroflows", "zuko", "nflows", "normflows", "pyro")
FORMS = ("coupling", "autoregressive")
METRICS = ("log_prob", "sample", "train")
DATASETS = ("moons", "wine", "digits")
NOVAL = "pyroflows (no validation)"
TARGET = 1.0
BINS, BOUND = 8, 5.0


# ---- builders ---------------------------------------------------------------------------------


def build_pyroflows(
    form: str, dim: int, layers: int, hidden: Sequence[int], **options: Any
) -> Contender:
    """``pf.NSF`` as a user calls it (coupling default, ``fast="density"`` autoregressive)."""
    import pyroflows as pf

    fast = None if form == "coupling" else "density"
    model = pf.NSF(
        dim,
        num_layers=layers,
        hidden_dims=tuple(hidden),
        bins=BINS,
        bound=BOUND,
        fast=fast,
        **options,
    )
    return Contender(
        "pyroflows", model, log_prob=model.log_prob, sample=lambda n, m=model: m.sample((n,))
    )


def build_zuko(form: str, dim: int, layers: int, hidden: Sequence[int]) -> Contender:
    """zuko: ``NICE`` with ``MonotonicRQSTransform`` (coupling) or ``NSF`` (autoregressive)."""
    import zuko
    from zuko.transforms import MonotonicRQSTransform

    if form == "coupling":
        model = zuko.flows.NICE(
            dim,
            transforms=layers,
            univariate=MonotonicRQSTransform,
            shapes=[(BINS,), (BINS,), (BINS - 1,)],
            hidden_features=tuple(hidden),
        )
    else:
        model = zuko.flows.NSF(dim, bins=BINS, transforms=layers, hidden_features=tuple(hidden))
    return Contender(
        "zuko",
        model,
        log_prob=lambda x: model().log_prob(x),
        sample=lambda n: model().sample((n,)),
    )


def build_nflows(form: str, dim: int, layers: int, hidden: Sequence[int]) -> Contender:
    """nflows' spline coupling / masked autoregressive spline, ``ReversePermutation`` between."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms.autoregressive import (
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
    )
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
    from nflows.transforms.permutations import ReversePermutation

    parts: list[nn.Module] = []
    for k in range(layers):
        if k:
            parts.append(ReversePermutation(dim))
        if form == "coupling":
            mask = torch.ones(dim)
            mask[: dim // 2] = -1
            parts.append(
                PiecewiseRationalQuadraticCouplingTransform(
                    mask,
                    lambda i, o: _NoContext(MLP((i,), (o,), hidden_sizes=list(hidden))),
                    num_bins=BINS,
                    tails="linear",
                    tail_bound=BOUND,
                )
            )
        else:
            parts.append(
                MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    dim,
                    hidden_features=hidden[0],
                    num_bins=BINS,
                    tails="linear",
                    tail_bound=BOUND,
                    num_blocks=len(hidden) - 1,
                    use_residual_blocks=False,
                )
            )
    model = Flow(CompositeTransform(parts), StandardNormal((dim,)))
    return Contender("nflows", model, log_prob=model.log_prob, sample=model.sample)


def build_normflows(form: str, dim: int, layers: int, hidden: Sequence[int]) -> Contender:
    """normflows' spline wrappers with a plain MLP / MADE (see the module docstring)."""
    import normflows as nf
    from normflows.flows.neural_spline.autoregressive import (
        MaskedPiecewiseRationalQuadraticAutoregressive,
    )
    from normflows.flows.neural_spline.coupling import PiecewiseRationalQuadraticCoupling
    from normflows.utils.masks import create_alternating_binary_mask

    parts: list[nn.Module] = []
    for k in range(layers):
        if k:
            parts.append(nf.flows.Permute(dim, mode="swap"))
        if form == "coupling":
            flow = nf.flows.CoupledRationalQuadraticSpline(dim, 1, hidden[0], num_bins=BINS)
            flow.prqct = PiecewiseRationalQuadraticCoupling(
                mask=create_alternating_binary_mask(dim, even=False),
                transform_net_create_fn=lambda i, o: _NoContext(nf.nets.MLP([i, *hidden, o])),
                num_bins=BINS,
                tails="linear",
                tail_bound=BOUND,
            )
        else:
            flow = nf.flows.AutoregressiveRationalQuadraticSpline(
                dim, 1, hidden[0], num_bins=BINS, permute_mask=False
            )
            flow.mprqat = MaskedPiecewiseRationalQuadraticAutoregressive(
                dim,
                hidden[0],
                num_bins=BINS,
                tails="linear",
                tail_bound=BOUND,
                num_blocks=len(hidden) - 1,
                use_residual_blocks=False,
            )
            net = flow.mprqat.autoregressive_net  # add the ReLU its MADE omits (flows.py)
            net.initial_layer = nn.Sequential(net.initial_layer, nn.ReLU())
        parts.append(flow)
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(dim, trainable=False), parts)
    return Contender(
        "normflows", model, log_prob=model.log_prob, sample=lambda n: model.sample(n)[0]
    )


def build_pyro(form: str, dim: int, layers: int, hidden: Sequence[int]) -> Contender:
    """Pyro's ``SplineCoupling`` / ``SplineAutoregressive(...).inv`` with quadratic order."""
    import pyro.distributions as dist
    import pyro.distributions.transforms as T
    from pyro.nn import AutoRegressiveNN, DenseNN

    modules: list[nn.Module] = []
    parts = []
    for k in range(layers):
        if k:
            parts.append(T.Permute(torch.tensor(_reversal(dim))))
        if form == "coupling":
            split = dim // 2
            n = dim - split
            net = DenseNN(split, list(hidden), param_dims=[n * BINS, n * BINS, n * (BINS - 1)])
            t = T.SplineCoupling(dim, split, net, BINS, BOUND, order="quadratic", identity=True)
            parts.append(t)
        else:
            net = AutoRegressiveNN(dim, list(hidden), param_dims=[BINS, BINS, BINS - 1])
            t = T.SplineAutoregressive(dim, net, count_bins=BINS, bound=BOUND, order="quadratic")
            parts.append(t.inv)
        modules.append(t)
    holder = nn.ModuleList(modules)
    base = dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)

    def distribution() -> dist.TransformedDistribution:
        return dist.TransformedDistribution(base, parts)

    return Contender(
        "pyro",
        holder,
        log_prob=lambda x: distribution().log_prob(x),
        sample=lambda n: distribution().sample((n,)),
    )


BUILDERS: dict[str, Callable[[str, int, int, Sequence[int]], Contender]] = {
    "pyroflows": build_pyroflows,
    "zuko": build_zuko,
    "nflows": build_nflows,
    "normflows": build_normflows,
    "pyro": build_pyro,
}


def init_torch(model: nn.Module) -> None:
    """``convergence.py``'s ``init-torch``: PyTorch's default init of each conditioner's last
    layer (layers without a conditioner, the permutations, are skipped)."""
    for layer in model.transforms:  # type: ignore[attr-defined]
        if hasattr(layer, "conditioner"):
            _last_linear(layer).reset_parameters()


def build(name: str, form: str, dim: int, args: argparse.Namespace) -> Contender:
    """A contender by name: a library, ``pyroflows init-torch`` or ``pyroflows base-side``."""
    if name in ("pyroflows init-torch", "pyroflows base-side"):
        side = {"invert_spline": False} if name.endswith("base-side") else {}
        c = build_pyroflows(form, dim, args.layers, args.hidden, **side)
        if name.endswith("init-torch"):
            init_torch(c.module)
        c.name = name
        return c
    return BUILDERS[name](form, dim, args.layers, args.hidden)


# ---- speed ------------------------------------------------------------------------------------


def run_speed(
    form: str, dim: int, args: argparse.Namespace, log: Callable[[str], None]
) -> list[tuple[str, int, str, dict[str, Timing], dict[str, int]]]:
    """Every library's flow for (form, D), each metric timed in one interleaved run."""
    torch.manual_seed(0)
    contenders = {lib: BUILDERS[lib](form, dim, args.layers, args.hidden) for lib in args.libraries}
    check_agreement(contenders, dim)
    params = {name: c.num_params for name, c in contenders.items()}
    ref = params["pyroflows"]
    log(f"{form} D={dim}: parameters " + ", ".join(f"{k}={v:,}" for k, v in params.items()))
    for name, n in params.items():
        if abs(n - ref) > 0.1 * ref:
            log(f"  WARNING: {name} has {n:,} parameters, >10% off pyroflows' {ref:,}")
    gen = torch.Generator().manual_seed(1)
    out = []
    for metric in args.metrics:
        if metric == "sample" and form != "coupling":
            continue  # autoregressive sampling is the sequential direction
        start = time.perf_counter()
        if metric == "log_prob":
            n = args.batch
            pool = [torch.randn(n, dim, generator=gen) for _ in range(args.pool)]
            fns = {name: _log_prob_fn(c, pool) for name, c in contenders.items()}
        elif metric == "sample":
            n = args.batch
            fns = {name: _sample_fn(c, n) for name, c in contenders.items()}
        else:
            n = 1
            pool = [torch.randn(args.train_batch, dim, generator=gen) for _ in range(args.pool)]
            fns = {name: _train_fn(c, pool) for name, c in contenders.items()}
        if metric != "sample":
            fns[NOVAL] = _novalidation(fns["pyroflows"])
        timings = time_interleaved(
            fns,
            repeats=args.repeats,
            warmup=args.warmup,
            min_time=args.min_time,
            items=n,
            clock=args.clock,
        )
        out.append((form, dim, metric, timings, params))
        summary = "  ".join(
            f"{k}={format_rate(t.rate)}(±{100 * t.spread / 2:.0f}%)" for k, t in timings.items()
        )
        log(f"  {metric:8s} [{time.perf_counter() - start:5.1f}s] {summary}")
    return out


_UNITS = {"log_prob": "pts/s", "sample": "pts/s", "train": "steps/s"}


def speed_table(results, libraries: Sequence[str]) -> str:
    """Rates per library and pyroflows' ratio to the fastest other spline implementation."""
    others = [lib for lib in libraries if lib != "pyroflows"]
    headers = ["form", "D", "metric", *libraries, "pf no-val", "pf / fastest other"]
    rows = []
    for form, dim, metric, t, _ in results:
        rate = {k: v.rate for k, v in t.items()}
        best = max(others, key=lambda k: rate[k])
        v = rate["pyroflows"] / rate[best]
        rows.append(
            [
                form,
                str(dim),
                f"{metric} ({_UNITS[metric]})",
                *[format_rate(rate[lib], "") for lib in libraries],
                format_rate(rate[NOVAL], "") if NOVAL in rate else "n/a",
                f"{v:.2f}x vs {best}" + (" (miss)" if v < TARGET else ""),
            ]
        )
    return markdown_table(headers, rows)


def params_table(results) -> str:
    seen: dict[tuple[str, int], dict[str, int]] = {}
    for form, dim, _, _, params in results:
        seen.setdefault((form, dim), params)
    names = list(next(iter(seen.values())))
    rows = [[f, str(d), *[f"{p[n]:,}" for n in names]] for (f, d), p in seen.items()]
    return markdown_table(["form", "D", *names], rows)


# ---- quality ----------------------------------------------------------------------------------


class _Digits(nn.Module):
    """Integer digits ``(N, 1, 8, 8)`` -> the same dequantised, standardised pipeline for every
    library; ``log_prob`` is the density of the dequantised ``y`` in ``[0, 1]^64``."""

    event_shape = (1, 8, 8)

    def __init__(self, inner: Contender, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.flow = inner.module
        self._log_prob = inner.log_prob
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def log_prob(self, y: Tensor) -> Tensor:
        z = (y.flatten(1) - self.mean) / self.std
        return self._log_prob(z) - self.std.log().sum()


def digits_data(val: int = 144) -> tuple[Data, Tensor, Tensor]:
    """Digits as :class:`Data` of integer images, and the standardisation of dequantised ``y``."""
    from pyroflows.datasets import DIGITS_LEVELS, digits
    from pyroflows.transforms.dequantize import dequantize

    tr, te = digits("train"), digits("test")
    y = dequantize(tr[:-val], levels=DIGITS_LEVELS, generator=torch.Generator().manual_seed(7))
    y = y.flatten(1).float()
    data = Data("digits", tr[:-val].float(), tr[-val:].float(), te.float(), 0.0)
    return data, y.mean(0), y.std(0)


def wine_data() -> Data:
    """scikit-learn's wine table: fixed 60/20/20 split (seed 0), standardised by training rows."""
    from sklearn.datasets import load_wine

    x = torch.as_tensor(load_wine().data, dtype=torch.float32)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_tr, n_va = int(0.6 * len(x)), int(0.2 * len(x))
    tr, va, te = x[perm[:n_tr]], x[perm[n_tr : n_tr + n_va]], x[perm[n_tr + n_va :]]
    m, s = tr.mean(0), tr.std(0)
    return Data("wine", (tr - m) / s, (va - m) / s, (te - m) / s, 0.0)


def quality_contender(name: str, form: str, ds: str, data: Data, extra, args) -> Contender:
    """Build ``name`` for data set ``ds``; digits get the shared dequantise/standardise front."""
    import pyroflows as pf
    from pyroflows.datasets import DIGITS_LEVELS

    dim = {"moons": 2, "wine": 13, "digits": 64}[ds]
    c = build(name, form, dim, args)
    if ds != "digits":
        return c
    wrapped = _Digits(c, *extra)
    objective = pf.bits_per_dim_loss(levels=DIGITS_LEVELS)

    def neg_bits(x: Tensor) -> Tensor:  # "log_prob" of the loop = -bits/dim, fixed noise
        g = torch.Generator().manual_seed(123)
        return -pf.bits_per_dim(
            wrapped, x, levels=DIGITS_LEVELS, samples=2, generator=g, reduction="none"
        )

    return Contender(
        name, wrapped, log_prob=neg_bits, sample=c.sample, loss=lambda x: objective(wrapped, x)
    )


def run_quality(args: argparse.Namespace, log: Callable[[str], None]) -> list[dict]:
    """Train every contender on every (form, data set, seed); append each run to ``--jsonl``."""
    records = []
    for ds in args.datasets:
        extra = None
        if ds == "moons":
            data = make_data("moons", 10_000, 5_000, 20_000)
        elif ds == "wine":
            data = wine_data()
        else:
            data, *extra = digits_data()
        steps, batch = args.steps[ds], args.qbatch[ds]
        for form in args.forms:
            for seed in args.seeds:
                for name in args.contenders:
                    torch.manual_seed(seed)
                    c = quality_contender(name, form, ds, data, extra, args)
                    run: Run = train(
                        c,
                        data,
                        steps=steps,
                        batch=batch,
                        lr=args.lr,
                        seed=seed,
                        eval_every=10 if ds == "wine" else args.eval_every,
                    )
                    rec = {
                        "form": form,
                        "data": ds,
                        "contender": name,
                        "seed": seed,
                        "params": c.num_params,
                        "steps": steps,
                        "batch": batch,
                        "best_test": run.best_test,
                        "final_test": run.final_test,
                        "best_step": run.best_step,
                        "seconds": run.seconds,
                    }
                    records.append(rec)
                    if args.jsonl:
                        with open(args.jsonl, "a") as fh:
                            fh.write(json.dumps(rec) + "\n")
                    log(
                        f"{ds:7s} {form:14s} seed {seed} {name:22s} best-val test "
                        f"{run.best_test:.3f} (step {run.best_step}) final {run.final_test:.3f} "
                        f"[{run.seconds:.1f}s cpu, {c.num_params:,} params]"
                    )
    return records


def _median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def quality_table(records: Sequence[dict]) -> str:
    """Median (min-max) test NLL of the best-validation weights; pf minus the best other."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["data"], r["form"], r["contender"]), []).append(r)
    unit = {"moons": "nats", "wine": "nats/row", "digits": "bits/dim"}
    headers = ["data", "form", "contender", "params", "steps x batch", "test, best-val weights",
               "test, final weights", "seeds", "vs best other"]  # fmt: skip
    rows = []
    for data in dict.fromkeys(k[0] for k in groups):
        for form in dict.fromkeys(k[1] for k in groups if k[0] == data):
            keys = [k for k in groups if k[:2] == (data, form)]
            best = min(
                (_median([r["best_test"] for r in groups[k]]) for k in keys if k[2] in LIBRARIES
                 and k[2] != "pyroflows"),
                default=math.nan,
            )  # fmt: skip
            for k in keys:
                rs = groups[k]
                bt, ft = [r["best_test"] for r in rs], [r["final_test"] for r in rs]
                diff = _median(bt) - best
                pf_row = k[2].startswith("pyroflows")
                rows.append(
                    [
                        f"{data} ({unit[data]})",
                        form,
                        k[2],
                        f"{rs[0]['params']:,}",
                        f"{rs[0]['steps']} x {rs[0]['batch']}",
                        f"{_median(bt):.3f} ({min(bt):.3f}-{max(bt):.3f})",
                        f"{_median(ft):.3f} ({min(ft):.3f}-{max(ft):.3f})",
                        str(len(rs)),
                        (f"{diff:+.3f}" + (" (miss)" if diff > 0 else "")) if pf_row else "",
                    ]
                )
    return markdown_table(headers, rows)


# ---- the bins x bound sweep behind NSF's defaults ---------------------------------------------


def run_sweep(args: argparse.Namespace, log: Callable[[str], None]) -> list[dict]:
    """``pf.NSF(2, bins=K, bound=B)`` (coupling form, ``--layers`` x ``--hidden``) on two moons
    for every K in ``--sweep-bins`` and B in ``--sweep-bounds``, each seed of ``--sweep-seeds``
    trained by the quality loop (``--sweep-steps`` x 512); test NLL at best-validation weights."""
    import pyroflows as pf

    data = make_data("moons", 10_000, 5_000, 20_000)
    records = []
    for bins in args.sweep_bins:
        for bound in args.sweep_bounds:
            for seed in args.sweep_seeds:
                torch.manual_seed(seed)
                model = pf.NSF(
                    2, num_layers=args.layers, hidden_dims=tuple(args.hidden), bins=bins,
                    bound=bound,
                )  # fmt: skip
                c = Contender(
                    "pyroflows",
                    model,
                    log_prob=model.log_prob,
                    sample=lambda n, m=model: m.sample((n,)),
                )
                run = train(
                    c, data, steps=args.sweep_steps, batch=512, lr=args.lr, seed=seed,
                    eval_every=args.eval_every,
                )  # fmt: skip
                rec = {"bins": bins, "bound": bound, "seed": seed, "params": c.num_params,
                       "steps": args.sweep_steps, "best_test": run.best_test,
                       "final_test": run.final_test, "seconds": run.seconds}  # fmt: skip
                records.append(rec)
                if args.jsonl:
                    with open(args.jsonl, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                log(
                    f"bins {bins:3d} bound {bound:4.1f} seed {seed}: best-val test "
                    f"{run.best_test:.4f} final {run.final_test:.4f} [{run.seconds:.1f}s cpu]"
                )
    return records


def sweep_table(records: Sequence[dict]) -> str:
    """One row per (bins, bound): test NLL per seed and their mean."""
    groups: dict[tuple[int, float], list[dict]] = {}
    for r in records:
        groups.setdefault((r["bins"], r["bound"]), []).append(r)
    seeds = sorted({r["seed"] for r in records})
    best = min(statistics.mean(r["best_test"] for r in rs) for rs in groups.values())
    rows = []
    for (bins, bound), rs in sorted(groups.items()):
        by_seed = {r["seed"]: r["best_test"] for r in rs}
        mean = statistics.mean(by_seed.values())
        rows.append(
            [str(bins), f"{bound:g}", f"{rs[0]['params']:,}",
             *[f"{by_seed[s]:.4f}" if s in by_seed else "" for s in seeds],
             f"{mean:.4f}" + (" (best)" if mean == best else "")]
        )  # fmt: skip
    return markdown_table(["bins", "bound", "params", *[f"seed {s}" for s in seeds], "mean"], rows)


# ---- command line -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("speed", "quality", "sweep"), default="speed")
    p.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS))
    p.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run")
    p.add_argument("--output", help="also write the markdown report to this file")
    # speed
    p.add_argument("--dims", type=int, nargs="+", help="default: 2 8 64 (2 8 with --quick)")
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS))
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--train-batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-time", type=float, default=0.05)
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    # quality
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument(
        "--contenders",
        nargs="+",
        default=["pyroflows", "zuko", "nflows", "pyro", "pyroflows init-torch"],
        help="libraries, 'pyroflows init-torch' and/or 'pyroflows base-side'",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--moons-steps", type=int, default=400)
    p.add_argument("--wine-steps", type=int, default=300)
    p.add_argument("--digits-steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=50, help="(wine: every 10 steps)")
    p.add_argument("--jsonl", help="append every finished quality/sweep run to this file")
    # sweep (NSF's defaults)
    p.add_argument("--sweep-bins", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--sweep-bounds", type=float, nargs="+", default=[3.0, 5.0])
    p.add_argument("--sweep-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--sweep-steps", type=int, default=1000)
    p.add_argument("--combine", nargs="+", metavar="JSONL", help="report these runs, no training")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.min_time = 3, 1, 0.02
        args.moons_steps = args.wine_steps = args.digits_steps = args.sweep_steps = 50
        args.seeds, args.sweep_seeds = args.seeds[:1], args.sweep_seeds[:1]
    if args.dims is None:
        args.dims = [2, 8] if args.quick else [2, 8, 64]
    if "pyroflows" not in args.libraries:
        args.libraries = ["pyroflows", *args.libraries]
    args.steps = {"moons": args.moons_steps, "wine": args.wine_steps, "digits": args.digits_steps}
    args.qbatch = {"moons": 512, "wine": 64, "digits": 128}
    return args


def _read_jsonl(paths: Sequence[str]) -> list[dict]:
    """The records of ``--combine``'s JSON-lines files, in order."""
    records: list[dict] = []
    for path in paths:
        with open(path) as fh:
            records += [json.loads(line) for line in fh]
    return records


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    command = "python benchmarks/splines.py " + " ".join(sys.argv[1:] if argv is None else argv)
    env = environment(["pyro-ppl", "zuko", "nflows", "normflows"])
    print(f"# {env}", flush=True)
    print(f"# torch.set_num_threads({threads}); {command.strip()}", flush=True)
    start, cpu = time.perf_counter(), time.process_time()

    def log(s: str) -> None:
        print(s, flush=True)

    if args.part == "speed":
        results = [
            r for form in args.forms for dim in args.dims for r in run_speed(form, dim, args, log)
        ]
        body = [speed_table(results, args.libraries), "", "Parameter counts:", "",
                params_table(results)]  # fmt: skip
    elif args.part == "sweep":
        records = _read_jsonl(args.combine) if args.combine else run_sweep(args, log)
        body = [
            "Two moons (standardised; NLL in nats in data units, optimum 0.289), pf.NSF(2) coupling "
            "form, test NLL at best-validation weights.",
            "",
            sweep_table(records),
        ]
    else:
        records = _read_jsonl(args.combine) if args.combine else run_quality(args, log)
        body = [
            "Medians over the seeds (min-max); the last column is pyroflows' median minus the "
            "best other library's (negative: pyroflows better).",
            "",
            quality_table(records),
        ]
    text = "\n".join(
        [
            f"Command: `{command.strip()}` ({(time.perf_counter() - start) / 60:.1f} min wall, "
            f"{(time.process_time() - cpu) / 60:.1f} min CPU)",
            "",
            f"Environment: {env}.",
            "",
            *body,
        ]
    )
    print()
    print(text)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
