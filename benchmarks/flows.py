"""Speed of the core discrete flows (MAF, RealNVP) against zuko, nflows, normflows and Pyro.

Every library builds the *same architecture*: 5 layers, each conditioner a network with two
hidden layers of 128 ReLU units (a MADE for MAF, a dense MLP on half the features for RealNVP),
with a permutation between layers, in float32. Parameter counts are printed (and checked to be
within 10 % of pyroflows'). For each ``D`` in 2, 8, 64 the script measures, in **one
interleaved run** per (flow, D, metric), with torch pinned to one thread:

* ``log_prob``: points/s scoring a batch of 4096 (under ``torch.no_grad``);
* ``sample``: points/s drawing 4096 samples (under ``torch.no_grad``);
* ``train``: Adam steps/s maximising the log-likelihood of batches of 512;

and the same work done by the **bare conditioner networks** alone (the floor: a flow cannot be
faster than its networks): the 5 networks as plain ``nn.Linear``/``ReLU`` stacks with their
masks baked into dense weights, on the same batch, summed over the layers, with no flow logic
(forward for ``log_prob``; forward, backward and the Adam step for ``train``; for ``sample`` the
same passes a flow needs: one per layer for RealNVP, ``D`` sequential passes per layer for MAF).

How each library is oriented, so each is compared in its fast direction:

* pyroflows ``MAF``: ``log_prob`` runs each layer's ``_inverse`` (data -> base), one MADE pass;
  ``sample`` is sequential (``D`` passes per layer). Layers alternate the MADE order (natural,
  reversed) instead of permuting the data; ``RealNVP`` alternates which half is transformed.
* zuko ``MAF``/``RealNVP`` presets: transforms map data -> base, so ``log_prob`` is one pass and
  MAF sampling is sequential. zuko too alternates orders (MAF) and checkered masks (RealNVP).
* nflows: ``MaskedAffineAutoregressiveTransform`` (MADE without residual blocks, one hidden
  block after the input layer = two hidden layers) and ``AffineCouplingTransform`` with an
  ``MLP``, ``ReversePermutation`` between layers; data -> base is the fast direction.
* normflows: ``MaskedAffineAutoregressive`` is oriented like an IAF inside a
  ``NormalizingFlow`` (``log_prob`` calls its sequential ``inverse``), so each one is wrapped in
  ``normflows.flows.Reverse`` to give MAF's one-pass density, as a normflows user wanting MAF
  must; ``AffineCouplingBlock`` with an ``MLP``; ``Permute(mode="swap")`` between layers.
  normflows' MADE without residual blocks has no activation after its input layer (one ReLU
  fewer than every other library's, same parameter count); the benchmark adds that ReLU so
  that all libraries run the same network.
* Pyro: ``affine_autoregressive`` is IAF-oriented (``_call`` is the one-pass direction), so the
  MAF uses ``t.inv`` of each (one-pass density, sequential sampling); ``affine_coupling``;
  ``Permute`` (reversal) between layers.

Every contender is scored on a pool of distinct input tensors cycled from call to call, so no
library's cache (Pyro's ``cache_size=1``, pyroflows' slot) can skip a computation. Times are
the process's CPU time by default (``--clock cpu``; see ``benchmarks/common.py``), which is far
less noisy than wall time on a shared machine. pyroflows runs in its default configuration
(validation on); the extra ``pyroflows (no validation)`` contender shows what the checks cost.

``--breakdown`` instead times pyroflows' density direction built up stage by stage (bare
networks, conditioners, transformer math, cache slot and checks, the full distribution) to show
where the time above the floor goes.

Usage::

    .venv/bin/python benchmarks/flows.py                 # the full run (5-11 minutes)
    .venv/bin/python benchmarks/flows.py --quick         # a smoke run (~1 minute)
    .venv/bin/python benchmarks/flows.py --dims 8 --flows MAF --metrics log_prob train
    .venv/bin/python benchmarks/flows.py --breakdown     # where pyroflows' time goes
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

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

LIBRARIES = ("pyroflows", "zuko", "nflows", "normflows", "pyro")
FLOW_NAMES = ("MAF", "RealNVP")
METRICS = ("log_prob", "sample", "train")
FLOOR = "floor"
NOVAL = "pyroflows (no validation)"
#: targets from the issue: pyroflows / fastest other >= 1.0, pyroflows / floor >= 1 / 1.25
TARGET_VS_OTHERS = 1.0
TARGET_VS_FLOOR = 1 / 1.25


@dataclass
class Contender:
    """One library's flow (or the bare networks) behind a uniform interface.

    Attributes:
        name: Library name.
        module: The ``nn.Module`` holding every trainable parameter.
        log_prob: ``x -> log p(x)`` for a batch ``(N, D)``.
        sample: ``n -> (n, D)`` samples.
        loss: ``x -> scalar`` minimised by the training step (mean negative log-likelihood).
        notes: How the architecture was built (for the report).
    """

    name: str
    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]
    loss: Callable[[Tensor], Tensor] | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if self.loss is None:
            self.loss = lambda x: -self.log_prob(x).mean()

    @property
    def num_params(self) -> int:
        """Number of trainable scalars (masked-out weights included, as every library stores)."""
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)


# ---- builders ---------------------------------------------------------------------------------


def _reversal(dim: int) -> list[int]:
    return list(range(dim - 1, -1, -1))


def build_pyroflows(flow: str, dim: int, layers: int, hidden: Sequence[int]) -> Contender:
    """pyroflows preset, as a user would call it: ``flow.log_prob``, ``flow.sample``."""
    import pyroflows as pf

    cls = pf.MAF if flow == "MAF" else pf.RealNVP
    model = cls(dim, num_layers=layers, hidden_dims=tuple(hidden))
    return Contender(
        "pyroflows",
        model,
        log_prob=model.log_prob,
        sample=lambda n: model.sample((n,)),
        notes="alternating MADE orders" if flow == "MAF" else "alternating halves (swap)",
    )


def build_zuko(flow: str, dim: int, layers: int, hidden: Sequence[int]) -> Contender:
    """zuko preset (``zuko.flows.MAF`` / ``zuko.flows.RealNVP``)."""
    import zuko

    cls = zuko.flows.MAF if flow == "MAF" else zuko.flows.RealNVP
    model = cls(dim, transforms=layers, hidden_features=tuple(hidden))
    return Contender(
        "zuko",
        model,
        log_prob=lambda x: model().log_prob(x),
        sample=lambda n: model().sample((n,)),
        notes="alternating orders" if flow == "MAF" else "alternating checkered masks",
    )


class _NoContext(nn.Module):
    """Adapts nflows' ``MLP`` (``forward(inputs)``) to the coupling's ``(inputs, context)`` call,
    as nflows' own examples do with ``ResidualNet``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def build_nflows(flow: str, dim: int, layers: int, hidden: Sequence[int]) -> Contender:
    """nflows ``Flow`` of masked-affine-autoregressive or affine-coupling transforms."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AffineCouplingTransform
    from nflows.transforms.permutations import ReversePermutation

    if len(set(hidden)) != 1:
        raise ValueError("nflows' MADE needs equal hidden sizes")
    parts: list[nn.Module] = []
    for k in range(layers):
        if k:
            parts.append(ReversePermutation(dim))
        if flow == "MAF":
            parts.append(
                MaskedAffineAutoregressiveTransform(
                    dim,
                    hidden_features=hidden[0],
                    num_blocks=len(hidden) - 1,
                    use_residual_blocks=False,
                )
            )
        else:
            mask = torch.ones(dim)
            mask[: dim // 2] = -1
            parts.append(
                AffineCouplingTransform(
                    mask, lambda i, o: _NoContext(MLP((i,), (o,), hidden_sizes=list(hidden)))
                )
            )
    model = Flow(CompositeTransform(parts), StandardNormal((dim,)))
    return Contender(
        "nflows",
        model,
        log_prob=model.log_prob,
        sample=model.sample,
        notes="ReversePermutation between layers",
    )


def build_normflows(flow: str, dim: int, layers: int, hidden: Sequence[int]) -> Contender:
    """normflows ``NormalizingFlow``; MAF layers wrapped in ``Reverse`` for one-pass density."""
    import normflows as nf

    if len(set(hidden)) != 1:
        raise ValueError("normflows' MADE needs equal hidden sizes")
    parts: list[nn.Module] = []
    for k in range(layers):
        if k:
            parts.append(nf.flows.Permute(dim, mode="swap"))
        if flow == "MAF":
            made = nf.flows.MaskedAffineAutoregressive(
                dim, hidden[0], num_blocks=len(hidden) - 1, use_residual_blocks=False
            )
            # normflows' MADE without residual blocks applies no activation after its input
            # layer (normflows/nets/made.py), unlike nflows', zuko's, Pyro's and pyroflows'
            # MADE; add that ReLU so every library runs the same network.
            net = made.autoregressive_net
            net.initial_layer = nn.Sequential(net.initial_layer, nn.ReLU())
            parts.append(nf.flows.Reverse(made))
        else:
            net = nf.nets.MLP([dim // 2, *hidden, 2 * (dim - dim // 2)], init_zeros=True)
            parts.append(nf.flows.AffineCouplingBlock(net))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(dim, trainable=False), parts)
    return Contender(
        "normflows",
        model,
        log_prob=model.log_prob,
        sample=lambda n: model.sample(n)[0],
        notes="Permute(swap) between layers"
        + (
            "; MAF layers in Reverse, ReLU added after the MADE input layer"
            if flow == "MAF"
            else ""
        ),
    )


def build_pyro(flow: str, dim: int, layers: int, hidden: Sequence[int]) -> Contender:
    """Pyro built-ins: ``affine_autoregressive(...).inv`` (MAF) or ``affine_coupling``."""
    import pyro.distributions as dist
    import pyro.distributions.transforms as T

    modules: list[nn.Module] = []
    parts = []
    for k in range(layers):
        if k:
            parts.append(T.Permute(torch.tensor(_reversal(dim))))
        if flow == "MAF":
            t = T.affine_autoregressive(dim, hidden_dims=list(hidden))
            parts.append(t.inv)
        else:
            t = T.affine_coupling(dim, hidden_dims=list(hidden))
            parts.append(t)
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
        notes="Permute between layers"
        + ("; .inv of affine_autoregressive" if flow == "MAF" else ""),
    )


def _dense(sizes: Sequence[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods[:-1])


def build_floor(flow: str, dim: int, layers: int, hidden: Sequence[int]) -> Contender:
    """The bare conditioner networks: dense ``Linear``/``ReLU`` stacks, no flow logic.

    MAF: ``layers`` MADE-sized nets ``D -> hidden -> 2D`` (masks baked into the weights; a MADE
    costs what a dense net of the same sizes costs). RealNVP: ``D/2 -> hidden -> 2(D - D/2)``.
    """
    d_in, d_out = (dim, 2 * dim) if flow == "MAF" else (dim // 2, 2 * (dim - dim // 2))
    nets = nn.ModuleList(_dense([d_in, *hidden, d_out]) for _ in range(layers))
    passes = dim if flow == "MAF" else 1  # sequential MAF sampling: D passes per layer

    def forward_all(x: Tensor) -> Tensor:
        return torch.stack([net(x).sum(-1) for net in nets]).sum(0)

    inputs: dict[int, Tensor] = {}

    def sample(n: int) -> Tensor:
        x = inputs.setdefault(n, torch.randn(n, d_in))  # drawn once: the floor is the networks
        for net in nets:
            for _ in range(passes):
                out = net(x)
        return out

    return Contender(
        FLOOR,
        nets,
        log_prob=lambda x: forward_all(x[..., :d_in]),
        sample=sample,
        loss=lambda x: sum(net(x[..., :d_in]).square().mean() for net in nets),
        notes=f"{layers} x dense {d_in}->{'->'.join(map(str, hidden))}->{d_out}"
        + (f", {passes} passes/layer to sample" if passes > 1 else ""),
    )


BUILDERS: dict[str, Callable[[str, int, int, Sequence[int]], Contender]] = {
    "pyroflows": build_pyroflows,
    "zuko": build_zuko,
    "nflows": build_nflows,
    "normflows": build_normflows,
    "pyro": build_pyro,
    FLOOR: build_floor,
}


# ---- the work ---------------------------------------------------------------------------------


def _cycle(pool: Sequence[Tensor]) -> Iterator[Tensor]:
    return itertools.cycle(pool)


def _log_prob_fn(c: Contender, pool: Sequence[Tensor]) -> Callable[[], Tensor]:
    it = _cycle(pool)

    def run() -> Tensor:
        with torch.no_grad():
            return c.log_prob(next(it))

    return run


def _sample_fn(c: Contender, n: int) -> Callable[[], Tensor]:
    def run() -> Tensor:
        with torch.no_grad():
            return c.sample(n)

    return run


def _train_fn(c: Contender, pool: Sequence[Tensor], lr: float = 1e-4) -> Callable[[], None]:
    it = _cycle(pool)
    opt = torch.optim.Adam([p for p in c.module.parameters() if p.requires_grad], lr=lr)
    loss_fn = c.loss
    assert loss_fn is not None  # set in Contender.__post_init__

    def run() -> None:
        loss = loss_fn(next(it))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return run


def _novalidation(fn: Callable[[], object]) -> Callable[[], object]:
    import pyroflows as pf

    def run() -> object:
        with pf.validation(False):
            return fn()

    return run


def check_agreement(contenders: dict[str, Contender], dim: int) -> None:
    """Sanity checks before timing: finite outputs of the right shapes from every library."""
    x = torch.randn(16, dim)
    for name, c in contenders.items():
        with torch.no_grad():
            lp = c.log_prob(x)
            s = c.sample(4)
        if name != FLOOR:
            if lp.shape != (16,) or not bool(torch.isfinite(lp).all()):
                raise RuntimeError(f"{name}: log_prob returned {tuple(lp.shape)} / non-finite")
            if s.shape != (4, dim):
                raise RuntimeError(f"{name}: sample returned shape {tuple(s.shape)}")


@dataclass
class Result:
    """Timings of one (flow, D, metric) interleaved run."""

    flow: str
    dim: int
    metric: str
    timings: dict[str, Timing]
    params: dict[str, int]


def run_case(
    flow: str,
    dim: int,
    metrics: Sequence[str],
    libraries: Sequence[str],
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> list[Result]:
    """Build every library's flow for (flow, D) and time each metric in one interleaved run."""
    torch.manual_seed(0)
    contenders = {
        lib: BUILDERS[lib](flow, dim, args.layers, args.hidden) for lib in (*libraries, FLOOR)
    }
    check_agreement(contenders, dim)
    params = {name: c.num_params for name, c in contenders.items()}
    ref = params.get("pyroflows")
    line = ", ".join(f"{k}={v:,}" for k, v in params.items())
    log(f"{flow} D={dim}: parameters {line}")
    for name, c in contenders.items():
        if c.notes:
            log(f"  {name}: {c.notes}")
    if ref:
        for name, n in params.items():
            if abs(n - ref) > 0.1 * ref:
                log(f"  WARNING: {name} has {n:,} parameters, >10% off pyroflows' {ref:,}")

    results = []
    gen = torch.Generator().manual_seed(1)
    for metric in metrics:
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
        if "pyroflows" in fns and metric != "sample" and not args.no_validation_off:
            fns[NOVAL] = _novalidation(fns["pyroflows"])
        slow = metric == "sample" and flow == "MAF" and dim > 8
        timings = time_interleaved(
            fns,
            repeats=min(3, args.repeats) if slow else args.repeats,
            warmup=1 if slow else args.warmup,
            number=1 if slow else None,  # seconds per call: no calibration call needed
            min_time=args.min_time,
            items=n,
            clock=args.clock,
        )
        results.append(Result(flow, dim, metric, timings, params))
        summary = "  ".join(
            f"{k}={format_rate(t.rate)}(±{100 * t.spread / 2:.0f}%)" for k, t in timings.items()
        )
        log(f"  {metric:8s} [{time.perf_counter() - start:5.1f}s] {summary}")
    return results


# ---- where pyroflows' time goes ---------------------------------------------------------------

STAGES = (
    "floor",
    "conditioners",
    "+ transformer math",
    "+ slot and checks",
    "full log_prob",
    "full, validation off",
)


def _stage_contender(stage: str, flow: str, dim: int, args: argparse.Namespace) -> Contender:
    """pyroflows' density direction, built up one layer of logic at a time (a fresh model each).

    ``conditioners``: each layer's conditioner on its input, nothing else (loss: mean square).
    ``+ transformer math``: each layer's ``inverse_and_log_det`` chained, plus the base density.
    ``+ slot and checks``: the same through ``apply_inverse`` (cache slot, input/output checks).
    ``full log_prob``: ``flow.log_prob`` (Pyro distribution, data check), as benchmarked.
    """
    if stage == "floor":
        return build_floor(flow, dim, args.layers, args.hidden)
    model = build_pyroflows(flow, dim, args.layers, args.hidden).module
    ts = list(model.transforms)

    def conditioners(x: Tensor) -> Tensor:
        out = x.new_zeros(x.shape[:-1])
        for t in ts:
            h = t.conditioner(x) if flow == "MAF" else t.conditioner(t._split(x)[0])
            out = out + h.square().flatten(1).mean(-1)
        return out

    def chained(x: Tensor, through_slot: bool) -> Tensor:
        lp = x.new_zeros(x.shape[:-1])
        for t in reversed(ts):
            if through_slot:
                x, ld = t.apply_inverse(x, None)
                t.clear_cache()
            else:
                x, ld = t.inverse_and_log_det(x)
            lp = lp - ld
        return lp + model.base_dist().log_prob(x)

    fn: Callable[[Tensor], Tensor] = {
        "conditioners": conditioners,
        "+ transformer math": lambda x: chained(x, False),
        "+ slot and checks": lambda x: chained(x, True),
        "full log_prob": model.log_prob,
        "full, validation off": model.log_prob,
    }[stage]
    loss = (lambda x: fn(x).mean()) if stage == "conditioners" else None
    return Contender(stage, model, log_prob=fn, sample=lambda n: torch.empty(0), loss=loss)


def run_breakdown(
    flow: str, dim: int, args: argparse.Namespace, log: Callable[[str], None]
) -> list[list[str]]:
    """Time the stages of :data:`STAGES` (log_prob and train) in one interleaved run each."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    rows = []
    for metric, batch in (("log_prob", args.batch), ("train", args.train_batch)):
        stages = {st: _stage_contender(st, flow, dim, args) for st in STAGES}
        pool = [torch.randn(batch, dim, generator=gen) for _ in range(args.pool)]
        make = _log_prob_fn if metric == "log_prob" else _train_fn
        fns = {st: make(c, pool) for st, c in stages.items()}
        fns["full, validation off"] = _novalidation(fns["full, validation off"])
        t = time_interleaved(
            fns,
            repeats=args.repeats,
            warmup=args.warmup,
            min_time=args.min_time,
            items=batch if metric == "log_prob" else 1,
            clock=args.clock,
        )
        base = t["floor"].median
        cells = [f"{1e3 * t[st].median:.2f} ms ({base / t[st].median:.2f}x)" for st in STAGES]
        rows.append([flow, str(dim), f"{metric} (batch {batch})", *cells])
        log(f"  breakdown {flow} D={dim} {metric}: " + ", ".join(cells))
    return rows


# ---- the report -------------------------------------------------------------------------------

_UNITS = {"log_prob": "pts/s", "sample": "pts/s", "train": "steps/s"}


def _fast_direction(flow: str, metric: str) -> bool:
    return not (flow == "MAF" and metric == "sample")


def table(results: Sequence[Result], libraries: Sequence[str]) -> str:
    """The markdown results table: rates, and pyroflows' ratios to the best other and the floor."""
    others = [lib for lib in libraries if lib != "pyroflows"]
    headers = [
        "flow",
        "D",
        "metric",
        *libraries,
        "floor",
        "pf / best other",
        "pf / floor",
        "pf no-val / floor",
    ]
    rows = []
    for r in results:
        t = r.timings
        rate = {k: v.rate for k, v in t.items()}
        best = max(others, key=lambda k: rate[k]) if others else None
        fast = _fast_direction(r.flow, r.metric)
        cells: list[str] = [r.flow, str(r.dim), f"{r.metric} ({_UNITS[r.metric]})"]
        cells += [format_rate(rate[lib], "") for lib in libraries]
        cells.append(format_rate(rate[FLOOR], ""))
        if best is not None and "pyroflows" in rate:
            v = rate["pyroflows"] / rate[best]
            mark = " (miss)" if fast and v < TARGET_VS_OTHERS else ""
            cells.append(f"{v:.2f}x vs {best}{mark}")
        else:
            cells.append("n/a")
        if "pyroflows" in rate:
            v = rate["pyroflows"] / rate[FLOOR]
            mark = " (miss)" if fast and v < TARGET_VS_FLOOR else ""
            cells.append(f"{v:.2f}x{mark}")
        else:
            cells.append("n/a")
        cells.append(f"{rate[NOVAL] / rate[FLOOR]:.2f}x" if NOVAL in rate else "n/a")
        rows.append(cells)
    return markdown_table(headers, rows)


def params_table(results: Sequence[Result]) -> str:
    """Parameter counts per (flow, D) and library."""
    seen: dict[tuple[str, int], dict[str, int]] = {}
    for r in results:
        seen.setdefault((r.flow, r.dim), r.params)
    names = list(next(iter(seen.values())))
    rows = [[f, str(d), *[f"{p[n]:,}" for n in names]] for (f, d), p in seen.items()]
    return markdown_table(["flow", "D", *names], rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are what ``make bench`` runs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dims", type=int, nargs="+", help="default: 2 8 64 (2 8 with --quick)")
    p.add_argument("--flows", nargs="+", choices=FLOW_NAMES, default=list(FLOW_NAMES))
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS))
    p.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    p.add_argument("--batch", type=int, default=4096, help="batch of log_prob and sample")
    p.add_argument("--train-batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=11, help="interleaved repetitions (medians)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timed block")
    p.add_argument("--pool", type=int, default=4, help="distinct input tensors cycled")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: process CPU time (robust to other jobs on a shared machine); wall: wall clock",
    )
    p.add_argument("--no-validation-off", action="store_true", help="skip the no-val row")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer repeats, short blocks")
    p.add_argument("--output", help="also write the markdown report to this file")
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="instead: where pyroflows' log_prob/train time goes, stage by stage (ms per call)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.min_time = 3, 1, 0.02
    if args.dims is None:
        args.dims = [2, 8] if args.quick else [2, 8, 64]
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the benchmark, print progress and the markdown report; return the report."""
    args = parse_args(argv)
    threads = set_threads(args.threads)
    import pyro

    pyro.set_rng_seed(0)
    command = "python benchmarks/flows.py " + " ".join(sys.argv[1:] if argv is None else argv)
    env = environment(["pyro-ppl", "zuko", "nflows", "normflows"])
    print(f"# {env}", flush=True)
    print(f"# torch.set_num_threads({threads}); {command.strip()}", flush=True)
    start = time.perf_counter()
    if args.breakdown:
        rows = [
            row
            for flow in args.flows
            for dim in args.dims
            for row in run_breakdown(flow, dim, args, lambda s: print(s, flush=True))
        ]
        headers = ["flow", "D", "work", *STAGES]
        report = "\n".join(
            [
                f"Command: `{command.strip()}` ({(time.perf_counter() - start) / 60:.1f} min)",
                "",
                "Median ms per call (floor / stage in parentheses: the fraction of floor speed).",
                "",
                markdown_table(headers, rows),
            ]
        )
        print()
        print(report)
        return report
    results: list[Result] = []
    for flow in args.flows:
        for dim in args.dims:
            results += run_case(
                flow, dim, args.metrics, args.libraries, args, lambda s: print(s, flush=True)
            )
    elapsed = time.perf_counter() - start
    report = "\n".join(
        [
            f"Command: `{command.strip()}` ({elapsed / 60:.1f} min)",
            "",
            f"Environment: {env}.",
            "",
            table(results, args.libraries),
            "",
            "Parameter counts:",
            "",
            params_table(results),
        ]
    )
    print()
    print(report)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(report + "\n")
    return report


if __name__ == "__main__":
    main()
