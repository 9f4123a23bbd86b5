"""Variational guides on targets with known answers: pf.AutoFlow against Pyro's own guides.

Every guide is fitted by the same loop, ``pf.fit_svi(model, guide, steps=N, lr=..., loss=...,
seed=s)``, at equal steps, loss and learning rate, on the targets of
``pyroflows.datasets.VI_TARGETS`` (each with a known ``log Z`` or reference moments, and a
stated source). Reported per (target, guide), median over seeds (each seed's value listed):

* ``KL``: ``KL(q || p) = log Z - ELBO``, the ELBO from ``--draws`` guide draws (targets with a
  known ``log Z``);
* ``err``: the largest |posterior mean - reference mean| / reference sd over every referenced
  scalar (targets with reference moments, e.g. eight schools), from the same draws;
* ``k-hat``: PSIS k-hat of those draws (``pf.psis_diagnostic``);
* ``ms/step``: training wall time per step (one torch thread, a shared machine: indicative).

Guides (``--guides``): ``AutoNormal``, ``AutoMultivariateNormal``, ``AutoLowRankMultivariateNormal``,
``AutoIAFNormal`` (5 IAF layers, Pyro's default net of one hidden layer of 3D+1 units),
``AutoNFSpline`` (Pyro's ``AutoNormalizingFlow`` with 2 ``spline_coupling`` layers), and
``AutoFlow`` with every family in :data:`FAMILIES` that this pyroflows has (``IAF``, ``MAF``,
``RealNVP``, ``NSF`` once it lands): ``AutoFlow`` alone is ``pf.AutoFlow(model)`` at its
defaults; ``AutoFlow:key=value:...`` sets options, which is how the defaults sweep runs: keys
``flow`` (a family), ``init_scale``, ``affine`` (``tril``, ``diagonal``), ``layers``,
``hidden`` (``64``, ``64x64`` or ``3D+1``), ``last`` (``zero``, the presets' initialisation of
the conditioners' last layers, or ``torch``, PyTorch's random one), ``side`` (``data`` or
``base``: NSF's ``invert_spline``, MAF's and RealNVP's ``invert_affine``), ``lr``, ``loss`` and
``sched`` (fit_svi's, for this guide only; ``sched`` is its ``lr_schedule``: ``none``,
``cosine``, ``tail`` (the library's: ``tail0.25``) or ``tailF``, constant then a cosine decay to
0 over the last fraction ``F`` of the steps). The fit_svi options ``lr``, ``loss`` and ``sched``
apply to Pyro's guides too, e.g. ``AutoIAFNormal:sched=cosine``. Without them each guide gets
fit_svi's defaults for it: for ``AutoFlow`` its ``default_loss`` (``stl``) and
``default_lr_schedule`` (``tail``), for Pyro's guides ``elbo`` at a constant rate.

Usage::

    .venv/bin/python benchmarks/vi_targets.py --quick     # 2 targets, 3 guides, 200 steps
    .venv/bin/python benchmarks/vi_targets.py             # the full table (see docs/benchmarks.md)
    .venv/bin/python benchmarks/vi_targets.py --targets U2 funnel10 --seeds 0 1 2 \\
        --guides AutoFlow AutoFlow:lr=3e-3 AutoFlow:init_scale=1 AutoIAFNormal
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import pyro
import torch
from pyro.infer import autoguide as ag

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyroflows as pf
from benchmarks.common import environment, markdown_table, set_threads
from pyroflows.datasets import VI_TARGETS, VITarget
from pyroflows.infer.optim import _tail

#: AutoFlow families the benchmark runs when this pyroflows has them (NSF: skipped if missing).
FAMILIES = ("IAF", "MAF", "RealNVP", "NSF")
PYRO_GUIDES = (
    "AutoNormal",
    "AutoMultivariateNormal",
    "AutoLowRankMultivariateNormal",
    "AutoIAFNormal",
    "AutoNFSpline",
)
DEFAULT_TARGETS = (
    "U2",
    "funnel10",
    "eight_schools",
    "gauss_correlated10",
    "gauss_scaled10",
    "mixture5",
    "constrained",
    "logreg",
    "hier300",
)


def available_families() -> list[str]:
    return [f for f in FAMILIES if hasattr(pf, f)]


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"AutoFlow:lr=3e-3:flow=MAF"`` -> ``("AutoFlow", {"lr": "3e-3", "flow": "MAF"})``."""
    name, *opts = spec.split(":")
    options = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep:
            raise SystemExit(f"guide option {opt!r} of {spec!r} is not key=value")
        options[key] = value
    return name, options


def _hidden(text: str, dim: int) -> tuple[int, ...]:
    if text.endswith("D+1"):
        return (int(text[:-3] or 1) * dim + 1,)
    return tuple(int(h) for h in text.split("x"))


def make_guide(spec: str, target: VITarget) -> tuple[Callable, dict]:
    """The guide of ``spec`` for ``target`` and the fit_svi options it overrides."""
    name, opts = parse_spec(spec)
    model, dim = target.model, target.latent_dim
    fit = {
        k: (float(opts.pop(k)) if k == "lr" else opts.pop(k)) for k in ("lr", "loss") if k in opts
    }
    if "sched" in opts:
        fit["lr_schedule"] = opts.pop("sched")
    if name == "AutoNormal":
        return ag.AutoNormal(model), fit
    if name == "AutoMultivariateNormal":
        return ag.AutoMultivariateNormal(model), fit
    if name == "AutoLowRankMultivariateNormal":
        return ag.AutoLowRankMultivariateNormal(model), fit
    if name == "AutoIAFNormal":
        return ag.AutoIAFNormal(model, num_transforms=5), fit
    if name == "AutoNFSpline":
        spline = functools.partial(
            pyro.distributions.transforms.iterated, 2, pyro.distributions.transforms.spline_coupling
        )
        return ag.AutoNormalizingFlow(model, spline), fit
    if name != "AutoFlow":
        raise SystemExit(f"unknown guide {name!r}")
    kwargs: dict = {}
    if "flow" in opts:
        kwargs["flow"] = getattr(pf, opts.pop("flow"))
    if "init_scale" in opts:
        kwargs["init_scale"] = float(opts.pop("init_scale"))
    if "affine" in opts:
        kwargs["affine"] = opts.pop("affine")
    if "layers" in opts:
        kwargs["num_layers"] = int(opts.pop("layers"))
    if "hidden" in opts:
        kwargs["hidden_dims"] = _hidden(opts.pop("hidden"), dim)
    if "side" in opts:  # which side the splines (NSF) or affine maps (MAF, RealNVP) are on
        side = opts.pop("side")
        if side not in ("data", "base"):
            raise SystemExit(f"side must be data or base in {spec!r}")
        option = "invert_spline" if kwargs.get("flow") is pf.NSF else "invert_affine"
        kwargs[option] = side == "data"
    if opts.get("last", "zero") not in ("zero", "torch"):
        raise SystemExit(f"last must be zero or torch in {spec!r}")
    if opts.pop("last", "zero") == "torch":
        kwargs["flow"] = _torch_last_layers(kwargs.get("flow", pf.IAF))
    if opts:
        raise SystemExit(f"unknown AutoFlow options {sorted(opts)} in {spec!r}")
    return pf.AutoFlow(model, **kwargs), fit


def _schedule(text: str, steps: int) -> str | Callable | None:
    """fit_svi's ``lr_schedule`` of the ``sched`` option: ``none``, ``cosine`` (over the whole
    run) or ``tailF`` (constant, then a cosine decay to 0 over the last fraction ``F`` of the
    ``steps``, e.g. ``tail0.25``)."""
    if text in ("none", "None"):
        return None  # a constant rate, also for AutoFlow (whose default is "tail")
    if text in ("cosine", "tail"):
        return text
    if text.startswith("tail"):  # the library's "tail" at another fraction
        fraction = float(text[4:])
        return lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: _tail(k, steps, fraction)
        )
    raise SystemExit(f"sched must be none, cosine, tail or tailF; got {text!r}")


def _torch_last_layers(family: Callable) -> Callable:
    """A factory of ``family`` flows whose conditioners' last layers have PyTorch's default
    (random) initialisation instead of zeros (the ``last=torch`` sweep option)."""

    def build(dim: int, **kwargs):
        flow = family(dim, **kwargs)
        for module in flow.modules():
            net = getattr(module, "net", None)
            if isinstance(net, torch.nn.Sequential) and isinstance(net[-1], torch.nn.Linear):
                net[-1].reset_parameters()
        return flow

    build.__name__ = getattr(family, "__name__", "flow")
    return build


def _moment_error(target: VITarget, guide: Callable, draws: int) -> float:
    """Largest |mean - reference mean| / reference sd over the referenced scalars."""
    pred = pyro.infer.Predictive(target.model, guide=guide, num_samples=draws, parallel=False)
    with torch.no_grad():
        samples = pred()
    worst = 0.0
    for site, (mean, sd) in target.reference.items():
        est = samples[site].double().reshape(draws, -1).mean(0)
        m = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        s = torch.as_tensor(sd, dtype=torch.float64).reshape(-1)
        worst = max(worst, float(((est - m).abs() / s).max()))
    return worst


def run_one(target: VITarget, spec: str, seed: int, args: argparse.Namespace) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide, fit = make_guide(spec, target)
    opts = {"lr": args.lr, "loss": args.loss} if args.lr is not None else {"loss": args.loss}
    if args.loss is None:
        opts.pop("loss")
    opts.update(fit)
    if "lr_schedule" in opts:
        opts["lr_schedule"] = _schedule(opts["lr_schedule"], args.steps)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = pf.fit_svi(
            target.model,
            guide,
            steps=args.steps,
            seed=seed,
            progress=False,
            final_check=False,
            **opts,
        )
        seconds = time.perf_counter() - start
        pyro.set_rng_seed(10_000 + seed)
        d = pf.psis_diagnostic(target.model, guide, num_samples=args.draws)
        out = {"k": d.k_hat, "ms": 1e3 * seconds / args.steps, "diverged": history.diverged}
        out["kl"] = target.log_z - d.elbo if target.log_z is not None else math.nan
        out["err"] = (
            _moment_error(target, guide, args.moment_draws) if target.reference else math.nan
        )
    return out


def _cell(values: list[float], digits: int = 3) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    med = statistics.median(finite)
    each = " / ".join(f"{v:.{digits}f}" for v in values)
    return f"**{med:.{digits}f}** ({each})" if len(values) > 1 else f"{med:.{digits}f}"


def run(args: argparse.Namespace) -> str:
    rows = []
    for key in args.targets:
        target = VI_TARGETS[key]()
        for spec in args.guides:
            results = []
            for seed in args.seeds:
                r = run_one(target, spec, seed, args)
                print(key, spec, seed, {k: round(v, 4) for k, v in r.items()}, flush=True)
                results.append(r)
            rows.append(
                [
                    key,
                    spec,
                    _cell([r["kl"] for r in results]),
                    _cell([r["err"] for r in results]),
                    _cell([r["k"] for r in results], 2),
                    f"{statistics.median(r['ms'] for r in results):.1f}",
                ]
            )
    return markdown_table(
        ["target", "guide", "KL (nats)", "err (ref. sd)", "k-hat", "ms/step"], rows
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--targets", nargs="+", default=list(DEFAULT_TARGETS), choices=sorted(VI_TARGETS)
    )
    default_guides = [*PYRO_GUIDES, "AutoFlow"] + [
        f"AutoFlow:flow={f}" for f in available_families() if f != "IAF"
    ]
    p.add_argument("--guides", nargs="+", default=None, help=f"default: {default_guides}")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=None, help="fit_svi's lr (default: its default)")
    p.add_argument("--loss", default=None, help="fit_svi's loss (default: its default)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--draws", type=int, default=5000, help="guide draws for ELBO and k-hat")
    p.add_argument("--moment-draws", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: U2 and eight schools, AutoFlow, AutoMultivariateNormal and "
        "AutoIAFNormal, 1 seed, 200 steps",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.targets, args.seeds, args.steps, args.draws = ["U2", "eight_schools"], [0], 200, 2000
        args.moment_draws = 1000
        args.guides = args.guides or ["AutoFlow", "AutoMultivariateNormal", "AutoIAFNormal"]
    args.guides = args.guides or default_guides
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the selected targets and guides; print and return the markdown report."""
    args = parse_args(argv)
    threads = set_threads(args.threads)
    command = "python benchmarks/vi_targets.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"Environment: {environment(['pyro-ppl'])}; torch threads {threads}.", ""]
    lines += [f"Command: `{command.strip()}`", ""]
    lines += [
        f"{args.steps} steps, seeds {args.seeds}, ELBO and k-hat from {args.draws} draws.",
        "",
    ]
    lines += [run(args), ""]
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
