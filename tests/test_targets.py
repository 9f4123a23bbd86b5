"""VI targets: normalisers by quadrature, model densities, eight-schools equivalence."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal

from pyroflows.datasets import targets as T
from pyroflows.datasets import vi_targets_suite as S


def _log_joint(model, values: dict) -> torch.Tensor:
    tr = poutine.trace(poutine.condition(model, values)).get_trace()
    return tr.log_prob_sum()


def _trapezoid_log_integral(log_f, lo1, hi1, lo2, hi2, n=801) -> float:
    g1 = torch.linspace(lo1, hi1, n, dtype=torch.float64)
    g2 = torch.linspace(lo2, hi2, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g1, g2, indexing="ij"), -1)
    w = torch.ones(n, dtype=torch.float64)
    w[0] = w[-1] = 0.5
    logw = (w[:, None] * w[None, :]).log() + ((g1[1] - g1[0]) * (g2[1] - g2[0])).log()
    return float(torch.logsumexp((log_f(grid) + logw).flatten(), 0))


def test_u1_log_normaliser_is_the_known_value_by_quadrature():
    log_z = _trapezoid_log_integral(lambda z: -T.energy(z, "U1"), -6, 6, -6, 6)
    assert abs(log_z - 1.877502) < 1e-5
    assert T.energy_target("U1").log_z == 1.877502


@pytest.mark.parametrize("name", ["U2", "U3", "U4"])
def test_boxed_energies_normalisers_match_quadrature(name):
    # z1 over the box (-4, 4), z2 wide enough for every tail
    log_z = _trapezoid_log_integral(lambda z: -T.energy(z, name), -4, 4, -10, 10)
    assert abs(log_z - T.energy_target(name).log_z) < 1e-5


def test_u2_normaliser_is_analytic():
    # the z2-integral is 0.4 sqrt(2 pi) for every z1, over a box of width 8
    assert abs(T.ENERGIES["U2"][1] - math.log(8 * 0.4 * math.sqrt(2 * math.pi))) < 1e-6


@pytest.mark.parametrize("name", ["U1", "U2", "U3", "U4"])
def test_log_density_integrates_to_one(name):
    # midpoint rule on cells inside [-6, 6] x [-10, 10]; edges of the box of U2-U4 fall on cell
    # boundaries (|z1| = 4), where log_density becomes -inf
    n1, n2 = 600, 1000
    g1 = torch.linspace(-6, 6, n1 + 1, dtype=torch.float64)
    g2 = torch.linspace(-10, 10, n2 + 1, dtype=torch.float64)
    c1, c2 = (g1[1:] + g1[:-1]) / 2, (g2[1:] + g2[:-1]) / 2
    grid = torch.stack(torch.meshgrid(c1, c2, indexing="ij"), -1)
    mass = T.log_density(grid, name).exp().sum() * (12 / n1) * (20 / n2)
    assert abs(float(mass) - 1.0) < 1e-4


@pytest.mark.parametrize("name", ["U1", "U2", "U3", "U4"])
def test_energy_model_joint_density_is_exp_minus_u(name):
    z = torch.rand(6, 2, dtype=torch.float64) * 7 - 3.5  # inside the box of U2-U4
    model = T.energy_target(name).model
    for zi in z:
        lp = _log_joint(model, {"z1": zi[0], "z2": zi[1]})
        torch.testing.assert_close(lp, -T.energy(zi, name))
    tr = poutine.trace(poutine.condition(model, {"z1": z[0, 0], "z2": z[0, 1]})).get_trace()
    assert torch.equal(tr.nodes["z"]["value"], z[0])


def test_boxed_energies_are_minus_inf_outside_the_box_and_u1_is_not():
    z = torch.tensor([[4.5, 0.0], [-4.2, 1.0]])
    assert torch.isinf(T.log_density(z, "U3")).all()
    assert torch.isfinite(T.log_density(z, "U1")).all()
    support = T.energy_target("U2").model
    tr = poutine.trace(support).get_trace()
    assert tr.nodes["z1"]["fn"].support.upper_bound == 4.0


def test_funnel_density_is_the_normalised_hierarchy():
    t = T.funnel(5)
    v, x = torch.tensor(1.3), torch.randn(4)
    expected = dist.Normal(0.0, 3.0).log_prob(v) + dist.Normal(0.0, (v / 2).exp()).log_prob(x).sum()
    torch.testing.assert_close(_log_joint(t.model, {"v": v, "x": x}), expected)
    assert t.log_z == 0.0 and t.latent_dim == 5


def test_noncentred_eight_schools_is_a_reparameterisation_of_the_centred_one():
    # p_nc(mu, tau, tilde) = p_c(mu, tau, mu + tau * tilde) * tau^8 (Jacobian of theta(tilde))
    centred, noncentred = T.eight_schools(centered=True), T.eight_schools()
    mu, tau, tilde = torch.tensor(2.0), torch.tensor(3.5), torch.randn(8)
    lp_nc = _log_joint(noncentred.model, {"mu": mu, "tau": tau, "theta_tilde": tilde})
    lp_c = _log_joint(centred.model, {"mu": mu, "tau": tau, "theta": mu + tau * tilde})
    torch.testing.assert_close(lp_nc, lp_c + 8 * tau.log())
    # the data enter the likelihood: y and sigma of Rubin (1981)
    tr = poutine.trace(noncentred.model).get_trace()
    assert tr.nodes["y"]["value"].tolist() == list(T.EIGHT_SCHOOLS_Y)
    assert tr.nodes["y"]["fn"].scale.tolist() == list(T.EIGHT_SCHOOLS_SIGMA)
    assert noncentred.reference == {"mu": (4.41, 3.31), "tau": (3.60, 3.20)}


@pytest.mark.parametrize(
    "target",
    [T.energy_target("U1"), T.energy_target("U3"), T.funnel(4), T.eight_schools(centered=True)],
    ids=lambda t: t.name,
)
def test_targets_vectorise_over_particles_with_pyro_guides(target):
    guide = AutoDiagonalNormal(target.model)
    elbo = Trace_ELBO(num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    assert math.isfinite(elbo.loss(target.model, guide))
    assert guide.latent_dim == target.latent_dim


def test_target_is_callable_as_a_model():
    pyro.set_rng_seed(1)
    z = poutine.trace(T.energy_target("U4")).get_trace().nodes["_RETURN"]["value"]
    assert z.shape == (2,) and abs(float(z[0])) < 4


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: T.energy_target("U5"), "unknown energy"),
        (lambda: T.energy(torch.zeros(3), "U1"), "shape"),
        (lambda: T.log_density([0.0, 0.0]), "torch.Tensor"),
        (lambda: T.funnel(1), "dim"),
    ],
)
def test_user_errors_say_what_to_do(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ---- the benchmark suite (pyroflows.datasets.vi_targets_suite) ------------------------------
def _exact_guide_log_weights(target, posterior, n=50):
    """log p(x, z) - log q(z) for n draws z of the exact posterior (all equal to log Z)."""
    out = []
    for _ in range(n):
        values = {k: d.sample() for k, d in posterior.items()}
        lq = sum(d.log_prob(values[k]).sum() for k, d in posterior.items())
        out.append(float(_log_joint(target.model, values) - lq))
    return torch.tensor(out)


def test_gaussians_are_normalised_with_their_stated_moments():
    for kind in ("correlated", "scaled"):
        t = S.gaussian(6, kind=kind)
        fn = poutine.trace(t.model).get_trace().nodes["x"]["fn"]
        mean, sd = (torch.tensor(v) for v in t.reference["x"])
        torch.testing.assert_close(fn.mean, mean.float())
        torch.testing.assert_close(fn.variance.sqrt(), sd.float())
        lw = _exact_guide_log_weights(t, {"x": fn})
        assert t.log_z == 0.0 and float(lw.abs().max()) < 1e-4
    corr = S.gaussian(6).reference["x"][1]
    scaled = S.gaussian(6, kind="scaled").reference["x"][1]
    assert max(abs(s - 1) for s in corr) < 1e-12 and abs(scaled[-1] / scaled[0] - 1000) < 1e-6


def test_mixture_is_normalised_and_its_moments_match_draws():
    t = S.gaussian_mixture(5)
    comp = dist.MultivariateNormal(torch.tensor([[-1.25] * 5, [1.25] * 5]), torch.eye(5))
    fn = dist.MixtureSameFamily(dist.Categorical(torch.tensor([0.3, 0.7])), comp)
    lw = _exact_guide_log_weights(t, {"x": fn})
    assert float(lw.abs().max()) < 1e-4
    x = fn.sample((200_000,))
    mean, sd = (torch.tensor(v) for v in t.reference["x"])
    assert float((x.mean(0) - mean).abs().max()) < 0.02
    assert float((x.std(0) - sd).abs().max()) < 0.02


def test_constrained_target_log_z_and_posterior_are_exact():
    t = S.constrained()
    post = {"p": dist.Dirichlet(torch.tensor([4.0, 1.0, 2.0, 1.0])), "lam": dist.Gamma(2.0, 4.0)}
    lw = _exact_guide_log_weights(t, post)
    assert float((lw - t.log_z).abs().max()) < 1e-4
    assert t.reference["lam"] == (0.5, 0.5**0.5 / 2)
    torch.testing.assert_close(torch.tensor(t.reference["p"][0]), post["p"].mean)
    sites = poutine.trace(t.model).get_trace().nodes
    assert sites["p"]["fn"].support is dist.constraints.simplex
    assert sites["lam"]["fn"].support.lower_bound == 0.0


def test_hierarchical_stored_quadrature_is_the_computed_one():
    t = S.hierarchical(300)
    y, sigma = S._hier_data(300)
    log_z, ref = S._hier_quadrature(y, sigma, n=401)
    assert abs(log_z - t.log_z) < 1e-3 and t.latent_dim == 302
    for site in ("mu", "tau"):
        assert abs(ref[site][0] - t.reference[site][0]) < 1e-3
        assert abs(ref[site][1] - t.reference[site][1]) < 1e-3


def test_hierarchical_group_effects_integrate_out_as_stated():
    # at fixed (mu, tau), the integral over theta_tilde of one group's joint is
    # N(y; mu, tau^2 + sigma^2): check by 1-D quadrature on a model with one group
    t = S.hierarchical(1)
    y, sigma = S._hier_data(1)
    mu, tau = torch.tensor(0.7), torch.tensor(1.3)
    grid = torch.linspace(-12, 12, 4001)
    lp = torch.stack(
        [_log_joint(t.model, {"mu": mu, "tau": tau, "theta_tilde": g[None]}) for g in grid[::8]]
    )
    log_int = float(torch.logsumexp(lp, 0) + math.log(float(grid[8] - grid[0])))
    prior = dist.Normal(0.0, 5.0).log_prob(mu) + dist.HalfNormal(5.0).log_prob(tau)
    marg = dist.Normal(mu.double(), (tau.double() ** 2 + sigma**2).sqrt()).log_prob(y).sum()
    assert abs(log_int - float(prior + marg)) < 1e-3


def test_logistic_regression_model_and_reference():
    pytest.importorskip("sklearn")
    t = S.logistic_regression()
    x, y = S._breast_cancer()
    w = torch.randn(31, dtype=torch.float64) * 0.3
    torch.testing.assert_close(
        _log_joint(t.model, {"w": w.float()}).double(),
        S._logistic_log_joint(w, x, y),
        rtol=1e-4,
        atol=1e-3,
    )
    mean, sd = t.reference["w"]
    assert len(mean) == len(sd) == 31 and t.latent_dim == 31 and min(sd) > 0
    assert "importance sampling" in t.source


@pytest.mark.slow
def test_logistic_regression_reference_reproduces_the_stored_one():
    pytest.importorskip("sklearn")
    ref = S.logistic_regression_reference(20_000)
    stored = S.logistic_regression()
    assert abs(ref["log_z"] - stored.log_z) < 0.05
    mean, sd = (torch.tensor(v, dtype=torch.float64) for v in stored.reference["w"])
    assert float(((ref["mean"] - mean) / sd).abs().max()) < 0.1


@pytest.mark.parametrize("name", sorted(S.VI_TARGETS))
def test_every_suite_target_runs_vectorised_and_says_where_its_answer_comes_from(name):
    if name == "logreg":
        pytest.importorskip("sklearn")
    t = S.VI_TARGETS[name]()
    assert t.source and (t.log_z is not None or t.reference)
    guide = AutoDiagonalNormal(t.model)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    assert math.isfinite(elbo.loss(t.model, guide))
    assert guide.latent_dim == t.latent_dim


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: S.gaussian(kind="round"), "kind"),
        (lambda: S.gaussian(1), "dim"),
        (lambda: S.gaussian_mixture(0), "dim"),
        (lambda: S.hierarchical(0), "groups"),
    ],
)
def test_suite_user_errors_say_what_to_do(call, match):
    with pytest.raises(ValueError, match=match):
        call()
