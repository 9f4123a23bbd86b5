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
#: the issue's bound on eight schools, in reference sds (not met yet: the test is an xfail)
BOUND_SCHOOLS = 0.1
PYRO_GUIDES = {
    "AutoNormal": ag.AutoNormal,
    "AutoMultivariateNormal": ag.AutoMultivariateNormal,
    "AutoIAFNormal": lambda model: ag.AutoIAFNormal(model, num_transforms=5),
}


def _fit(target, make_guide, seed: int) -> tuple[float, dict[str, float]]:
    """(KL, largest |mean error| in reference sds) as ``benchmarks/vi_targets.py`` measures them
    with ``--steps 1000 --draws 5000 --moment-draws 2000`` (same seeds, same draws)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make_guide(target.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the final check may warn on a seed
        pf.fit_svi(target.model, guide, steps=STEPS, seed=seed, progress=False)
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
@pytest.mark.parametrize("name", ["funnel10", "U2"])
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
    reason="issue 13 asks for 0.1 reference sd; measured at the defaults after 1000 steps: "
    "max(|mu error|, |tau error|) 0.512 / 0.179 / 0.520 sds over seeds 0-2 (docs/benchmarks.md)",
)
def test_eight_schools_at_defaults_recovers_mu_and_tau():
    target = VI_TARGETS["eight_schools"]()
    errors = {site: [] for site in target.reference}
    for seed in SEEDS:
        for site, err in _fit(target, pf.AutoFlow, seed)[1].items():
            errors[site].append(err)
    medians = {site: statistics.median(e) for site, e in errors.items()}
    print(f"eight schools at defaults, |mean error| in reference sds: {errors}")
    for site, err in medians.items():
        assert err < BOUND_SCHOOLS, f"{site}: {err:.3f} reference sds ({errors[site]})"
