"""Stand-ins for issue 13's two real posteriors: pf.AutoFlow against Pyro's guides by ELBO.

Issue 13 reports two posteriors kept outside the project, a 7-D autoregressive time-series model
and a 13-D Gaussian-process Poisson regression, on which the old default guide ended 10 and 120
nats of ELBO below Pyro's ``AutoMultivariateNormal`` in the loop ``pf.fit_svi(model, guide,
steps=5000, lr=3e-3, num_particles=8)``. This script builds models of the same kind and size on
synthetic data (fixed seeds; the data are generated here, so nothing is downloaded):

* ``ar7``: an AR(5) series of 100 points, :math:`x_t = \\mu + \\sum_k \\phi_k (x_{t-k} - \\mu) +
  \\sigma \\epsilon_t`, with :math:`\\phi \\sim N(0, 0.5^2 I_5)`, :math:`\\mu \\sim N(0, 5^2)`,
  :math:`\\sigma \\sim \\text{HalfNormal}(2)` (7 latents);
* ``gp13``: Poisson counts at 10 points of [0, 1] with a centred GP log-rate,
  :math:`f \\sim N(m \\mathbf 1, K)` with a squared-exponential kernel (amplitude and
  length-scale log-normal, :math:`m \\sim N(0, 2^2)`; 13 latents).

Neither has a known normaliser, so guides are compared by their ELBO (higher is better; the
difference of two ELBOs is the difference of their KLs), estimated from ``--draws`` single-draw
``Trace_ELBO`` evaluations with its standard error, and the final PSIS check of ``fit_svi``.

Usage::

    .venv/bin/python benchmarks/vi_standins.py                      # both models, 3 guides
    .venv/bin/python benchmarks/vi_standins.py --models ar7 --steps 500 --seeds 0 1
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoMultivariateNormal, AutoNormal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pyroflows as pf
from benchmarks.common import markdown_table, set_threads


def _ar_series(n: int = 100, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    phi = torch.tensor([0.5, -0.3, 0.2, 0.1, -0.1])
    x, e = torch.zeros(n + 5), 0.5 * torch.randn(n + 5, generator=g)
    for t in range(5, n + 5):
        x[t] = 1.0 + phi @ (x[t - 5 : t].flip(0) - 1.0) + e[t]
    return x[5:] + 1.0


_Y = _ar_series()
_LAGS = torch.stack([_Y[4 - k : len(_Y) - k - 1] for k in range(5)], -1)  # (95, 5): x_{t-1..t-5}


def ar7() -> None:
    """AR(5) with unknown mean and noise scale (7 latents)."""
    phi = pyro.sample("phi", dist.Normal(0.0, 0.5).expand([5]).to_event(1))
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    lagged = ((_LAGS - mu[..., None, None]) * phi.unsqueeze(-2)).sum(-1)
    with pyro.plate("t", len(_Y) - 5):
        pyro.sample("y", dist.Normal(mu.unsqueeze(-1) + lagged, sigma.unsqueeze(-1)), obs=_Y[5:])


_X = torch.linspace(0.0, 1.0, 10)
_C = torch.poisson((1.0 + torch.sin(6 * _X)).exp(), generator=torch.Generator().manual_seed(1))


def gp13() -> None:
    """Poisson regression with a centred GP log-rate at 10 points (13 latents)."""
    ls = pyro.sample("ls", dist.LogNormal(math.log(0.3), 0.5))
    amp = pyro.sample("amp", dist.LogNormal(0.0, 0.5))
    m = pyro.sample("m", dist.Normal(0.0, 2.0))
    d2 = (_X[:, None] - _X[None, :]) ** 2
    k = amp[..., None, None] ** 2 * torch.exp(-0.5 * d2 / ls[..., None, None] ** 2)
    k = k + 1e-4 * torch.eye(10)
    loc = m[..., None].expand(*m.shape, 10)
    f = pyro.sample("f", dist.MultivariateNormal(loc, covariance_matrix=k))
    with pyro.plate("obs", 10):
        pyro.sample("c", dist.Poisson(f.exp()), obs=_C)


MODELS: dict[str, Callable[[], None]] = {"ar7": ar7, "gp13": gp13}
GUIDES: dict[str, Callable] = {
    "AutoFlow": pf.AutoFlow,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoIAFNormal": AutoIAFNormal,
    "AutoNormal": AutoNormal,
}


def elbo(model: Callable, guide: Callable, draws: int) -> tuple[float, float]:
    """ELBO and its standard error from ``draws`` single-draw estimates."""
    with torch.no_grad():
        v = torch.tensor([-Trace_ELBO().loss(model, guide) for _ in range(draws)])
    return float(v.mean()), float(v.std() / math.sqrt(draws))


def run_one(name: str, guide_name: str, seed: int, args: argparse.Namespace) -> dict:
    model = MODELS[name]
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = GUIDES[guide_name](model)
    t0 = time.process_time()
    with warnings.catch_warnings(record=True):  # the final check's verdict goes in the table
        warnings.simplefilter("always")
        hist = pf.fit_svi(
            model, guide, steps=args.steps, lr=args.lr, num_particles=args.particles, seed=seed
        )
    cpu = time.process_time() - t0
    e, se = elbo(model, guide, args.draws)
    k_hat = hist.final_check.k_hat if hist.final_check is not None else float("nan")
    row = {"model": name, "guide": guide_name, "seed": seed, "elbo": e, "se": se, "cpu_s": cpu}
    row["k_hat"] = k_hat
    print(f"{name} {guide_name} seed={seed} ELBO {e:.2f} +- {se:.2f} ({cpu:.0f} s CPU)", flush=True)
    return row


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    p.add_argument("--guides", nargs="+", choices=tuple(GUIDES), default=list(GUIDES)[:3])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--particles", type=int, default=8)
    p.add_argument("--draws", type=int, default=2000)
    args = p.parse_args(argv)
    set_threads(1)
    rows = [run_one(m, g, s, args) for m in args.models for g in args.guides for s in args.seeds]
    table = []
    for m in args.models:
        best = max(
            statistics.median(r["elbo"] for r in rows if r["model"] == m and r["guide"] == g)
            for g in args.guides
        )
        for g in args.guides:
            mine = [r for r in rows if r["model"] == m and r["guide"] == g]
            med = statistics.median(r["elbo"] for r in mine)
            seeds = " / ".join(f"{r['elbo']:.2f}" for r in mine)
            cpu = statistics.median(r["cpu_s"] for r in mine)
            k_hat = statistics.median(r["k_hat"] for r in mine)
            row = [m, g, f"{med:.2f}", seeds, f"{med - best:+.2f}", f"{k_hat:.2f}", f"{cpu:.0f}"]
            table.append(row)
    headers = ["model", "guide", "ELBO (median)", "per seed", "vs best", "k-hat", "CPU s / fit"]
    out = markdown_table(headers, table)
    print(out)
    return out


if __name__ == "__main__":
    main()
