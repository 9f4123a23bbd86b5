"""Toy generators: shapes, seeding, and exact densities whose entropies are the optimal NLLs."""

from __future__ import annotations

import math

import pytest
import torch

from pyroflows.datasets import toy
from pyroflows.datasets.toy import OPTIMAL_NLL, TOY_DATASETS, toy_log_density

F64 = torch.float64


def _entropy(name: str, n: int, seed: int) -> tuple[float, float]:
    """Monte Carlo -E log p with its standard error, on float64 samples."""
    torch.set_default_dtype(F64)
    try:
        x = TOY_DATASETS[name](n, seed=seed)
    finally:
        torch.set_default_dtype(torch.float32)
    lp = toy_log_density(name, x)
    return float(-lp.mean()), float(lp.std() / math.sqrt(n))


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_shape_dtype_and_seeding(name):
    make = TOY_DATASETS[name]
    x = make(257, seed=3)
    assert x.shape == (257, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, make(257, seed=3))
    assert not torch.equal(x, make(257, seed=4))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(make(50, generator=g1), make(50, generator=g2))
    torch.manual_seed(1)
    a = make(20)
    torch.manual_seed(1)
    assert torch.equal(a, make(20))  # no seed: the global torch RNG
    assert make(0).shape == (0, 2)


@pytest.mark.parametrize("name", sorted(OPTIMAL_NLL))
def test_entropy_matches_optimal_nll(name):
    h, se = _entropy(name, 50_000, seed=0)
    assert abs(h - OPTIMAL_NLL[name]) < max(0.02, 4 * se), (name, h, se)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPTIMAL_NLL))
def test_entropy_matches_optimal_nll_200k(name):
    h, se = _entropy(name, 200_000, seed=1)
    assert abs(h - OPTIMAL_NLL[name]) < 0.01, (name, h, se)


def test_checkerboard_entropy_is_log_32_exactly():
    # uniform density: every sample has log p = -log 32, so the estimate has no variance
    x = toy.checkerboard(10_000, seed=0).double()
    lp = toy_log_density("checkerboard", x)
    assert torch.allclose(lp, torch.full_like(lp, -math.log(32)))
    assert OPTIMAL_NLL["checkerboard"] == pytest.approx(3.4657, abs=1e-4)
    outside = torch.tensor([[1.0, -1.0], [-3.0, -1.0], [4.5, 0.5], [0.5, -4.5]], dtype=F64)
    assert torch.isinf(toy_log_density("checkerboard", outside)).all()


def _grid(lo: float, hi: float, m: int) -> tuple[torch.Tensor, float]:
    g = torch.linspace(lo, hi, m, dtype=F64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2), float(g[1] - g[0]) ** 2


@pytest.mark.parametrize(("name", "half_width"), [("8gaussians", 5.0), ("rings", 3.8)])
def test_density_integrates_to_one(name, half_width):
    x, cell = _grid(-half_width, half_width, 401)
    mass = float(toy_log_density(name, x).exp().sum() * cell)
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_moons_density_integrates_to_one():
    g1, g2 = torch.linspace(-1.4, 2.4, 191, dtype=F64), torch.linspace(-0.9, 1.4, 116, dtype=F64)
    xx, yy = torch.meshgrid(g1, g2, indexing="ij")
    x = torch.stack([xx, yy], -1).reshape(-1, 2)
    cell = float((g1[1] - g1[0]) * (g2[1] - g2[0]))
    mass = float(toy_log_density("moons", x).exp().sum() * cell)
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_rings_closed_form_equals_numerical_angle_integral():
    # (1/4) sum_k (1/2pi) int N(x; R_k (cos t, sin t), s^2 I) dt by the trapezoid rule
    x = torch.tensor([[0.1, 0.0], [3.05, 0.2], [-1.0, 1.3], [0.0, -2.3], [5.0, 5.0]], dtype=F64)
    t = torch.linspace(0, 2 * math.pi, 20001, dtype=F64)[:-1]
    s = 0.08
    dens = torch.zeros(len(x), dtype=F64)
    for radius in (3.0, 2.25, 1.5, 0.75):
        centre = radius * torch.stack([t.cos(), t.sin()], -1)
        sq = ((x[:, None, :] - centre) ** 2).sum(-1)
        dens += (torch.exp(-sq / (2 * s * s)) / (2 * math.pi * s * s)).mean(-1) / 4
    assert torch.allclose(toy_log_density("rings", x)[:4], dens[:4].log(), rtol=0, atol=1e-8)
    assert toy_log_density("rings", x)[4] < -1000  # far away: finite and tiny, no underflow


def test_moons_density_converged_in_quadrature_nodes():
    x = toy.two_moons(500, seed=2).double()
    coarse = toy_log_density("moons", x, nodes=129)
    fine = toy_log_density("moons", x, nodes=4097)
    assert torch.allclose(toy_log_density("moons", x), fine, rtol=0, atol=1e-5)
    assert not torch.allclose(coarse, fine, rtol=0, atol=1e-5)  # the test can tell


def test_moons_noise_option_changes_the_density():
    x = toy.two_moons(5000, noise=0.1, seed=0).double()
    wide = float(-toy_log_density("moons", x, noise=0.1).mean())
    # larger noise, larger entropy; the wrong noise is a worse model of these samples
    assert wide > OPTIMAL_NLL["moons"] + 0.3
    assert float(-toy_log_density("moons", x, noise=0.05).mean()) > wide


def test_generators_follow_ffjord_geometry():
    x = toy.eight_gaussians(8000, seed=0).double()
    angle = torch.atan2(x[:, 1], x[:, 0])
    k = torch.round(angle / (math.pi / 4)) % 8
    assert torch.bincount(k.long(), minlength=8).min() > 800  # all eight modes, about equal
    assert float(x.norm(dim=1).mean()) == pytest.approx(4 / 1.414, abs=0.05)
    r = toy.rings(8000, seed=0).double().norm(dim=1)
    ring = torch.round(r / 0.75).long()
    assert set(ring.tolist()) == {1, 2, 3, 4}
    assert float((r - 0.75 * ring).std()) == pytest.approx(0.08, abs=0.01)
    m = toy.two_moons(8000, noise=0.0, seed=0).double()
    on_outer = ((m.norm(dim=1) - 1).abs() < 1e-5) & (m[:, 1] >= 0)
    on_inner = (((m - torch.tensor([1.0, 0.5], dtype=F64)).norm(dim=1) - 1).abs() < 1e-5) & (
        m[:, 1] <= 0.5
    )
    assert bool((on_outer | on_inner).all()) and 0.45 < float(on_outer.double().mean()) < 0.55


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: toy.rings(-1), ValueError),
        (lambda: toy.rings(2.5), TypeError),
        (lambda: toy.rings(3, seed=1, generator=torch.Generator()), ValueError),
        (lambda: toy.rings(3, seed="a"), TypeError),
        (lambda: toy.two_moons(3, noise=-1.0), ValueError),
        (lambda: toy.toy_data("swiss", 3), ValueError),
        (lambda: toy_log_density("spirals", torch.zeros(3, 2)), ValueError),
        (lambda: toy_log_density("rings", torch.zeros(3, 3)), ValueError),
        (lambda: toy_log_density("moons", torch.zeros(3, 2), nodes=10), ValueError),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error):
    with pytest.raises(error):
        call()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["MAF", "RealNVP"])
def test_flows_fitted_on_two_moons_reach_test_nll_below_040(family):
    import pyroflows as pf

    train, test = toy.two_moons(10_000, seed=0), toy.two_moons(20_000, seed=1)
    torch.manual_seed(0)
    flow = getattr(pf, family)(2, num_layers=10, hidden_dims=(128, 128))
    pf.fit(flow, train, steps=3000, batch_size=512, lr=1e-3, lr_schedule="cosine", seed=0,
           progress=False)  # fmt: skip
    flow.eval()
    with torch.no_grad():
        nll = float(-flow.log_prob(test).mean())
    # below 0.40 nats, and not below the entropy 0.289 (that would mean a wrong log-det)
    assert OPTIMAL_NLL["moons"] - 0.02 < nll < 0.40, nll
