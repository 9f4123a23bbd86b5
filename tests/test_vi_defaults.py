"""Slow: ``pf.AutoFlow(model)`` fitted by ``pf.fit_svi(model, guide, steps=N)`` with nothing else
against Pyro's own guides in the same loop (median of 3 seeds), and eight schools at defaults.

The numbers behind the bounds are in docs/benchmarks.md (``benchmarks/vi_targets.py``).
"""

from __future__ import annotations

import statistics
import warnings

import pyro
import pytest
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
@pytest.mark.xfail(
    strict=True,
    reason="issue 13 asks for 0.1 reference sd; measured at the defaults (loss 'stl') after 4000 "
    "steps: max(|mu error|, |tau error|) 0.116 / 0.132 / 0.043 sds over seeds 0-2, median 0.116 "
    "(with loss='elbo': 0.039 / 0.030 / 0.053, met; docs/benchmarks.md)",
)
def test_eight_schools_at_defaults_recovers_mu_and_tau():
    target = VI_TARGETS["eight_schools"]()
    worst = [max(_fit(target, pf.AutoFlow, seed, STEPS_SCHOOLS)[1].values()) for seed in SEEDS]
    print(f"eight schools at defaults, max |mean error| of mu, tau in reference sds: {worst}")
    assert statistics.median(worst) < BOUND_SCHOOLS, worst
