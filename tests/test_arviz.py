"""ArviZ export and PSIS diagnostics: structure, the weights' meaning, Yao et al.'s verdicts."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal

import pyroflows as pf
from pyroflows.datasets import eight_schools

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

Y = torch.tensor(1.0)


def conjugate_model():
    m = pyro.sample("m", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(m, 1.0), obs=Y)


def normal_guide(sd_ratio: float):
    """A guide N(0.5, (sd_ratio * posterior sd)^2); the posterior is N(0.5, 1/2)."""

    def guide():
        pyro.sample("m", dist.Normal(0.5, sd_ratio * math.sqrt(0.5)))

    return guide


LOG_EVIDENCE = float(dist.Normal(0.0, math.sqrt(2.0)).log_prob(Y))


def _fitted_eight_schools():
    t = eight_schools()
    guide = AutoNormal(t.model)
    svi = pyro.infer.SVI(t.model, guide, pyro.optim.Adam({"lr": 0.05}), pyro.infer.Trace_ELBO())
    for _ in range(30):
        svi.step()
    return t, guide


def test_inference_data_groups_dims_and_attrs():
    t, guide = _fitted_eight_schools()
    idata = pf.to_inference_data(t.model, guide, num_samples=300)
    post = idata.posterior
    assert post["mu"].dims == ("chain", "draw") and post["mu"].shape == (1, 300)
    assert post["theta_tilde"].dims == ("chain", "draw", "school")
    assert post["theta"].shape == (1, 300, 8) and post["theta"].dims[-1] == "school"
    assert bool((post["tau"] > 0).all())
    np.testing.assert_allclose(
        post["theta"], post["mu"] + post["tau"] * post["theta_tilde"], rtol=1e-5, atol=1e-5
    )
    assert idata.observed_data["y"].dims == ("school",)
    stats = idata.sample_stats
    np.testing.assert_allclose(stats["lp"] - stats["log_q"], stats["log_weight"], atol=1e-8)
    # the attrs hold the PSIS k-hat of exactly these weights
    _, k = az.psislw(stats["log_weight"].values.reshape(-1), reff=1.0)
    assert post.attrs["psis_k_hat"] == pytest.approx(float(k))
    assert stats.attrs["psis_k_hat"] == post.attrs["psis_k_hat"]
    assert {"psis_ess", "log_evidence", "elbo"} <= set(post.attrs)
    assert az.summary(idata, var_names=["mu", "tau"], kind="stats").shape == (2, 4)


def test_weights_are_model_joint_minus_guide_density_per_draw():
    t = eight_schools()

    def guide():  # a hand-written guide whose density is easy to evaluate at given values
        pyro.sample("mu", dist.Normal(4.0, 3.0))
        pyro.sample("tau", dist.LogNormal(1.0, 0.7))
        with pyro.plate("school", 8):
            pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))

    idata = pf.to_inference_data(t.model, guide, num_samples=50)
    post, stats = idata.posterior, idata.sample_stats
    for s in (0, 17, 49):
        values = {
            "mu": torch.tensor(float(post["mu"][0, s])),
            "tau": torch.tensor(float(post["tau"][0, s])),
            "theta_tilde": torch.tensor(post["theta_tilde"][0, s].values),
        }
        lp = poutine.trace(poutine.condition(t.model, values)).get_trace().log_prob_sum()
        lq = poutine.trace(poutine.condition(guide, values)).get_trace().log_prob_sum()
        assert float(stats["lp"][0, s]) == pytest.approx(float(lp), abs=1e-3)
        assert float(stats["log_q"][0, s]) == pytest.approx(float(lq), abs=1e-3)


def test_exact_guide_is_good_with_full_ess_and_exact_evidence():
    d = pf.psis_diagnostic(conjugate_model, normal_guide(1.0), num_samples=500)
    assert d.verdict == "good" and d.k_hat < 0.5
    assert d.ess == pytest.approx(500, rel=1e-3)
    assert d.log_evidence == pytest.approx(LOG_EVIDENCE, abs=1e-4)
    assert d.elbo == pytest.approx(LOG_EVIDENCE, abs=1e-4)


def test_narrow_guide_is_unreliable_and_wide_guide_is_good():
    # Yao et al. 2018: a guide lighter-tailed than the posterior gives unbounded weights
    narrow = pf.psis_diagnostic(conjugate_model, normal_guide(0.3), num_samples=4000)
    wide = pf.psis_diagnostic(conjugate_model, normal_guide(2.0), num_samples=4000)
    assert narrow.k_hat > 0.7 and narrow.verdict == "unreliable"
    assert wide.k_hat < 0.5 and wide.verdict == "good"
    assert narrow.ess < 0.2 * 4000 < wide.ess
    # the IS estimate of the evidence is close for the wide guide, a bound is not exceeded
    assert wide.log_evidence == pytest.approx(LOG_EVIDENCE, abs=0.05)
    assert narrow.elbo < narrow.log_evidence and wide.elbo < wide.log_evidence
    assert "unreliable" in str(narrow)


def test_flow_guide_exports_through_the_same_path():
    t = eight_schools()
    guide = pf.AutoFlow(t.model, pf.IAF, num_layers=2, hidden_dims=(16,))
    idata = pf.to_inference_data(t.model, guide, num_samples=20)
    assert idata.posterior["theta"].shape == (1, 20, 8)
    assert math.isfinite(idata.posterior.attrs["elbo"])


def test_user_errors_say_what_to_do():
    with pytest.raises(ValueError, match="num_samples"):
        pf.psis_diagnostic(conjugate_model, normal_guide(1.0), num_samples=1)

    def nan_guide():
        pyro.sample("m", dist.Normal(torch.tensor(float("nan")), 1.0, validate_args=False))

    with pytest.raises(ValueError, match="NaN"), pyro.validation_enabled(False):
        pf.to_inference_data(conjugate_model, nan_guide, num_samples=10)


def test_a_model_that_does_not_vectorise_falls_back_to_a_loop_over_draws():
    """``X @ w + b`` with a latent vector ``w`` breaks under Pyro's particle dimension; the draws
    are then taken one by one, with fit_svi's warning, and mean the same thing."""
    torch.manual_seed(0)
    xs = torch.randn(12, 3)
    ys = xs @ torch.tensor([1.0, -1.0, 0.5]) + 0.3 + 0.5 * torch.randn(12)

    def regression(xs, ys):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(xs)):
            pyro.sample("y", dist.Normal(xs @ w + b, 0.5), obs=ys)

    def guide(xs, ys):  # a density easy to evaluate at given values
        pyro.sample("w", dist.Normal(torch.tensor([1.0, -1.0, 0.5]), 0.2).to_event(1))
        pyro.sample("b", dist.Normal(0.3, 0.2))

    with pytest.warns(UserWarning, match="does not run vectorised over 30 draws.*looping"):
        diag = pf.psis_diagnostic(regression, guide, xs, ys, num_samples=30)
    assert diag.num_samples == 30 and math.isfinite(diag.log_evidence)
    with pytest.warns(UserWarning, match="looping over them"):
        idata = pf.to_inference_data(regression, guide, xs, ys, num_samples=25)
    assert idata.posterior["w"].shape == (1, 25, 3) and idata.posterior["b"].shape == (1, 25)
    assert idata.observed_data["y"].dims == ("data",)
    # each draw's weight is the model's joint minus the guide's density at that draw
    stats = idata.sample_stats
    for i in (0, 24):
        z = {k: torch.as_tensor(idata.posterior[k].values[0, i]) for k in ("w", "b")}
        joint = poutine.trace(poutine.condition(regression, z)).get_trace(xs, ys).log_prob_sum()
        guide_tr = poutine.trace(poutine.condition(guide, z)).get_trace(xs, ys)
        assert float(stats["lp"].values[0, i]) == pytest.approx(float(joint), rel=1e-5)
        assert float(stats["log_q"].values[0, i]) == pytest.approx(
            float(guide_tr.log_prob_sum()), rel=1e-5
        )
        assert float(stats["log_weight"].values[0, i]) == pytest.approx(
            float(joint - guide_tr.log_prob_sum()), rel=1e-5
        )


def _conjugate_model():
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(a, 1.0), obs=torch.tensor(2.0))  # posterior N(1, 1/2)


def test_psis_resampled_draws_target_the_posterior_and_their_ess_sees_the_duplicates():
    """The guide's draws (centred at 0) summarise q; the resampled ones the posterior N(1, 1/2),
    and az.ess no longer counts every draw as independent."""
    import arviz as az
    from pyro.infer.autoguide.initialization import init_to_value

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(
        _conjugate_model, init_loc_fn=init_to_value(values={"a": torch.tensor(0.0)}), init_scale=1.0
    )
    raw = pf.to_inference_data(_conjugate_model, guide, num_samples=4000)
    res = pf.to_inference_data(_conjugate_model, guide, num_samples=4000, resample="psis")
    assert abs(float(raw.posterior["a"].mean())) < 0.1  # the guide's draws: q = N(0, 1)
    assert float(res.posterior["a"].mean()) == pytest.approx(1.0, abs=0.1)
    assert float(res.posterior["a"].std()) == pytest.approx(math.sqrt(0.5), abs=0.08)
    assert res.posterior.attrs["resample"] == "psis" and raw.posterior.attrs["resample"] == "none"
    psis_ess = res.posterior.attrs["psis_ess"]
    assert float(az.ess(raw.posterior["a"].values)) > 3000  # guide draws look independent
    assert float(az.ess(res.posterior["a"].values)) < 1.5 * psis_ess < 3000
    with pytest.raises(ValueError, match="resample must be None or 'psis'"):
        pf.to_inference_data(_conjugate_model, guide, num_samples=10, resample="sir")
