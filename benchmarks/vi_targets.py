"""Variational inference on targets with known answers: how close do flow guides get?

* **U1** (Rezende & Mohamed 2015, two lobes on a ring; ``log Z = 1.877502``): every seed family
  as an :class:`pyroflows.AutoFlow`, with and without annealing (the model's log-density
  tempered by beta rising from 0.01 to 1 over the first ``--anneal`` steps), and Pyro's own
  ``AutoIAFNormal`` for reference. Reported: ``KL(q || p) = log Z - ELBO`` (the ELBO estimated
  from ``--draws`` guide draws), the PSIS k-hat of the same draws, and the training time.
* **Funnel** (Neal, 10-D, normalised so ``KL = -ELBO``): AutoFlow (IAF) against Pyro's
  ``AutoNormal``: ELBO and k-hat.
* **Eight schools** (non-centred): AutoFlow (IAF) posterior means of ``mu`` and ``tau`` against
  the reference (4.41 / 3.31, 3.60 / 3.20), in reference standard deviations, and k-hat.

Every run uses ``pf.fit_svi`` (Adam, cosine learning-rate decay, vectorised particles) with one
seed per configuration, so differences of a few hundredths of a nat are within seed noise.
Training times are wall-clock on a shared machine (one torch thread): indicative only.

Usage::

    .venv/bin/python benchmarks/vi_targets.py                   # everything (~30 min on 1 core)
    .venv/bin/python benchmarks/vi_targets.py --quick           # smoke run (~1 minute)
    .venv/bin/python benchmarks/vi_targets.py --targets u1 --families IAF Planar
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

import pyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyroflows as pf
from benchmarks.common import environment, markdown_table, set_threads
from pyroflows.datasets import eight_schools, energy_target, funnel

FAMILIES = ("IAF", "MAF", "RealNVP", "NICE", "Glow", "Planar")
PYRO_IAF = "pyro AutoIAFNormal"


def flow_kwargs(family: str, hidden: int) -> dict:
    """The architecture of each family: 5 layers of (hidden, hidden) nets; Planar-32."""
    if family == "Planar":
        return {"num_layers": 32}
    return {"num_layers": 5, "hidden_dims": (hidden, hidden)}


def make_guide(name: str, model: Callable, hidden: int) -> Callable:
    if name == PYRO_IAF:
        return pyro.infer.autoguide.AutoIAFNormal(
            model, hidden_dim=[hidden, hidden], num_transforms=5
        )
    return pf.AutoFlow(model, getattr(pf, name), init_scale=1.0, **flow_kwargs(name, hidden))


def train(model: Callable, guide: Callable, args: argparse.Namespace, anneal: int) -> float:
    """Fit with fit_svi; return the wall-clock seconds."""
    start = time.perf_counter()
    pf.fit_svi(
        model,
        guide,
        steps=args.steps,
        lr=args.lr,
        num_particles=args.particles,
        anneal=anneal,
        lr_schedule="cosine",
        seed=args.seed,
        progress=False,
    )
    return time.perf_counter() - start


def run_u1(args: argparse.Namespace) -> str:
    target = energy_target("U1")
    rows = []
    names = list(args.families) + ([PYRO_IAF] if args.pyro else [])
    for name in names:
        for anneal in (0, args.anneal):
            pyro.clear_param_store()
            pyro.set_rng_seed(args.seed)
            guide = make_guide(name, target.model, args.hidden)
            seconds = train(target.model, guide, args, anneal)
            d = pf.psis_diagnostic(target.model, guide, num_samples=args.draws)
            kl = target.log_z - d.elbo
            row = [name, anneal or "no", f"{kl:.3f}", f"{d.k_hat:.2f}", f"{d.ess:.0f}"]
            row += [f"{seconds:.0f}", f"{1e3 * seconds / args.steps:.1f}"]
            print("u1", row, flush=True)
            rows.append(row)
    headers = ["guide", "anneal steps", "KL (nats)", "k-hat", "ESS", "train s", "ms/step"]
    return markdown_table(headers, rows)


def run_funnel(args: argparse.Namespace) -> str:
    target = funnel(10)
    rows = []
    for name in ("AutoNormal", "IAF"):
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        if name == "AutoNormal":
            guide = pyro.infer.autoguide.AutoNormal(target.model)
        else:
            guide = pf.AutoFlow(
                target.model, pf.IAF, init_scale=1.0, num_layers=4, hidden_dims=(64, 64)
            )
        seconds = train(target.model, guide, args, 0)
        d = pf.psis_diagnostic(target.model, guide, num_samples=args.draws)
        row = [name, f"{d.elbo:.3f}", f"{-d.elbo:.3f}", f"{d.k_hat:.2f}", f"{seconds:.0f}"]
        print("funnel", row, flush=True)
        rows.append(row)
    return markdown_table(["guide", "ELBO", "KL (nats)", "k-hat", "train s"], rows)


def run_schools(args: argparse.Namespace) -> str:
    target = eight_schools()
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    guide = pf.AutoFlow(target.model, pf.IAF, num_layers=4, hidden_dims=(32, 32))
    seconds = train(target.model, guide, args, 0)
    idata = pf.to_inference_data(target.model, guide, num_samples=args.draws)
    rows = []
    for site, (mean, sd) in target.reference.items():
        est = idata.posterior[site]
        m, s = float(est.mean()), float(est.std())
        rows.append(
            [site, f"{m:.2f}", f"{s:.2f}", f"{mean:.2f} / {sd:.2f}", f"{(m - mean) / sd:+.3f}"]
        )
    k = idata.posterior.attrs["psis_k_hat"]
    print("schools", rows, f"k-hat {k:.2f}", flush=True)
    table = markdown_table(["site", "mean", "sd", "reference mean / sd", "error (ref. sd)"], rows)
    return table + f"\n\nPSIS k-hat {k:.2f}; training {seconds:.0f} s."


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--targets", nargs="+", default=["u1", "funnel", "schools"])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--no-pyro", dest="pyro", action="store_false", help="skip AutoIAFNormal")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--anneal", type=int, default=1000)
    p.add_argument("--particles", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--draws", type=int, default=20000, help="guide draws for ELBO and k-hat")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="200 steps, 2000 draws (smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.anneal, args.draws = 200, 100, 2000
    return args


def main(argv: Sequence[str] | None = None) -> str:
    """Run the selected targets; print and return the markdown report."""
    args = parse_args(argv)
    threads = set_threads(args.threads)
    command = "python benchmarks/vi_targets.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"Environment: {environment(['pyro-ppl'])}; torch threads {threads}.", ""]
    lines += [f"Command: `{command.strip()}`", ""]
    settings = (
        f"{args.steps} steps, {args.particles} particles, Adam lr {args.lr} with cosine decay, "
        f"seed {args.seed}, ELBO and k-hat from {args.draws} draws"
    )
    runs = {"u1": ("U1", run_u1), "funnel": ("Funnel (10-D)", run_funnel)}
    runs["schools"] = ("Eight schools (non-centred)", run_schools)
    for key in args.targets:
        title, fn = runs[key]
        lines += [f"### {title}", "", f"{settings}.", "", fn(args), ""]
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
