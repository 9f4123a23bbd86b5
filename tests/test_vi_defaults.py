"""Slow: ``pf.AutoFlow(model)`` fitted by ``pf.fit_svi(model, guide, steps=N)`` with nothing else
against Pyro's own guides in the same loop (median of 3 seeds), and eight schools at defaults.

The numbers behind the bounds are in docs/benchmarks.md (``benchmarks/vi_targets.py``).
"""

from __future__ import annotations

import importlib.util
import statistics
import warnings
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import autoguide as ag

import pyroflows as pf
from pyroflows.datasets import VI_TARGETS

STEPS = 1000
SEEDS = (0, 1, 2)
#: the issue's bound on eight schools, in reference sds, after the issue's 4000 steps
BOUND_SCHOOLS = 0.1
STEPS_SCHOOLS = 4000
PYRO_GUIDES = {
    "AutoNormal": ag.AutoNormal,
    "AutoMultivariateNormal": ag.AutoMultivariateNormal,
    "AutoIAFNormal": lambda model: ag.AutoIAFNormal(model, num_transforms=5),
}


def _fit(target, make_guide, seed: int, steps: int = STEPS) -> tuple[float, dict[str, float]]:
    """(KL, |mean error| in reference sds per site) as ``benchmarks/vi_targets.py`` measures them
    with ``--steps 1000 --draws 5000 --moment-draws 2000`` (same seeds, same draws)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make_guide(target.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the final check may warn on a seed
        pf.fit_svi(target.model, guide, steps=steps, seed=seed, progress=False)
        pyro.set_rng_seed(10_000 + seed)
        d = pf.psis_diagnostic(target.model, guide, num_samples=5000)
    kl = target.log_z - d.elbo if target.log_z is not None else float("nan")
    samples = pyro.infer.Predictive(target.model, guide=guide, num_samples=2000, parallel=False)()
    errors = {
        site: abs(float(samples[site].mean()) - mean) / sd
        for site, (mean, sd) in target.reference.items()
        if isinstance(mean, float)
    }
    return kl, errors


@pytest.mark.slow
@pytest.mark.parametrize("name", ["funnel10", "U2", "gauss_correlated10"])
def test_default_autoflow_is_at_or_below_the_best_pyro_guide(name):
    target = VI_TARGETS[name]()
    ours = statistics.median(_fit(target, pf.AutoFlow, s)[0] for s in SEEDS)
    theirs = {
        guide: statistics.median(_fit(target, make, s)[0] for s in SEEDS)
        for guide, make in PYRO_GUIDES.items()
    }
    print(f"{name}: AutoFlow KL {ours:.3f}; Pyro {theirs}")
    assert ours <= min(theirs.values()), (ours, theirs)


@pytest.mark.slow
def test_eight_schools_at_defaults_recovers_mu_and_tau():
    # met since AutoFlow's default_lr_schedule is "tail" (benchmarks/vi_targets.py, 4000 steps:
    # 0.017 / 0.034 / 0.003 sds over seeds 0-2; 0.116 median at a constant rate)
    target = VI_TARGETS["eight_schools"]()
    worst = [max(_fit(target, pf.AutoFlow, seed, STEPS_SCHOOLS)[1].values()) for seed in SEEDS]
    print(f"eight schools at defaults, max |mean error| of mu, tau in reference sds: {worst}")
    assert statistics.median(worst) < BOUND_SCHOOLS, worst


def _benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vi_targets.py"
    spec = importlib.util.spec_from_file_location("vi_targets_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_tail_schedule_is_flat_then_decays_to_zero():
    bench = _benchmark()
    assert bench._schedule("none", 8) is None and bench._schedule("cosine", 8) == "cosine"
    assert bench._schedule("tail", 8) == "tail"  # the library's named schedule
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = bench._schedule("tail0.25", 8)(opt)
    rates = []
    for _ in range(8):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # like "cosine": the first decayed step runs at the full rate, the rate reaches 0 at the end
    assert rates[:7] == [1.0] * 7 and rates[7] == pytest.approx(0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)
    _, fit = bench.make_guide("AutoIAFNormal:sched=cosine:lr=0.01", VI_TARGETS["U2"]())
    assert fit == {"lr": 0.01, "lr_schedule": "cosine"}
