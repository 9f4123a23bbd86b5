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
