"""Better likelihood estimates for OOD scores, with known answers: importance-weighted
dequantisation (``dequantization_samples=``) against the exact integer likelihood of a Gaussian
flow, and ensembles (``ensemble=``, the ``"waic"`` method) against the members' exact densities
(pyroflows/diagnostics/ood.py)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import gaussian_flow, normal_nll

import pyroflows as pf
from pyroflows.diagnostics import OODDetector

# importance-weighted dequantisation ----------------------------------------------------------
K, SIGMA = 4, 0.3  # levels; the flow is N(0, 0.3^2) on the dequantised scale y = (x + u) / K


def exact_integer_nll(level: int) -> float:
    """-log P(x) = -log of the N(0, sigma^2) mass of the bin [x / K, (x + 1) / K)."""
    cdf = torch.distributions.Normal(0.0, SIGMA).cdf
    lo, hi = torch.tensor(level / K), torch.tensor((level + 1) / K)
    return -math.log(float(cdf(hi) - cdf(lo)))


def single_draw_mean_nll(level: int) -> float:
    """E_u[-log(p((x + u) / K) / K)] for u ~ U[0, 1): E[(x + u)^2] = x^2 + x + 1/3."""
    second_moment = (level**2 + level + 1 / 3) / K**2
    return second_moment / (2 * SIGMA**2) + math.log(SIGMA * math.sqrt(2 * math.pi)) + math.log(K)


@pytest.mark.parametrize("level", [2, 3])
def test_importance_weighted_dequantisation_converges_to_the_exact_integer_likelihood(level):
    flow = gaussian_flow(1, SIGMA)
    x = torch.full((2000, 1), level)  # every row gets its own noise draws
    one = OODDetector(flow, x[:20], levels=K, method="likelihood", seed=1)
    many = OODDetector(
        flow, x[:20], levels=K, method="likelihood", dequantization_samples=500, seed=1
    )
    exact, single = exact_integer_nll(level), single_draw_mean_nll(level)
    assert single - exact > 0.1  # the Jensen gap of one draw (0.12 and 0.23 nats here)
    # one draw: an upper bound whose average is the analytic single-draw expectation
    s1 = one.scores(x)
    assert float(s1.mean()) == pytest.approx(single, abs=0.02)
    # 500 draws: the gap closes, on average and row by row, and the noise per input drops
    s500 = many.scores(x)
    assert float(s500.mean()) == pytest.approx(exact, abs=0.01)
    assert float(torch.quantile((s500 - exact).abs(), 0.95)) < 0.08
    assert float(s500.std()) < 0.2 * float(s1.std())


def test_one_dequantisation_draw_is_the_previous_score():
    flow = gaussian_flow(4)
    x = torch.randint(0, 5, (30, 4))
    det = OODDetector(flow, x, levels=5, method="likelihood", seed=3)
    y = pf.dequantize(x, levels=5, generator=torch.Generator().manual_seed(3))
    expected = 4 * math.log(5) - flow.log_prob(y).double()
    torch.testing.assert_close(det.scores(x), expected)


# ensembles -----------------------------------------------------------------------------------
def test_ensemble_scores_are_the_members_mean_and_waic_adds_their_variance():
    torch.manual_seed(0)
    scales = (1.0, 2.0, 0.5)
    flows = [gaussian_flow(3, s) for s in scales]
    ref, x = torch.randn(100, 3), 1.5 * torch.randn(20, 3)
    det = OODDetector(flows[0], ref, method="waic", ensemble=flows[1:])
    assert det.methods[-1] == "waic" and len(det.members) == 3
    nll = torch.stack([normal_nll(x, s) for s in scales])
    torch.testing.assert_close(det.scores(x, method="likelihood"), nll.mean(0), rtol=1e-6, atol=0)
    # Choi et al.: WAIC = mean - variance of the members' log-likelihoods; the score is -WAIC
    torch.testing.assert_close(det.scores(x), nll.mean(0) + nll.var(0), rtol=1e-5, atol=0)
    # the typical-set level and the batch test use the ensemble's NLL too
    ref_nll = torch.stack([normal_nll(ref, s) for s in scales]).mean(0)
    assert det.entropy == pytest.approx(float(ref_nll.mean()))


def test_ensemble_of_n_trains_n_copies_with_their_own_seeds(fit_calls):
    calls = fit_calls
    torch.manual_seed(0)
    flow = pf.RealNVP(2, num_layers=1, hidden_dims=(4,))
    train = torch.randn(200, 2)
    det = OODDetector(
        flow, train[:20], ensemble=2, train_data=train, ensemble_fit={"steps": 3}, seed=5
    )
    assert len(det.members) == 3 and det.members[0] is flow
    assert [kw["seed"] for _, _, kw in calls] == [6, 7]
    for member, (fitted, data, kw) in zip(det.members[1:], calls, strict=True):
        assert member is fitted and type(member) is pf.RealNVP and member.config == flow.config
        assert data is train and kw["steps"] == 3 and not member.training
    a, b = (torch.cat([p.flatten() for p in m.parameters()]) for m in det.members[1:])
    assert not torch.equal(a, b)
    assert "waic" in det.methods


def test_ensemble_and_draw_options_are_checked():
    flow = gaussian_flow(2)
    ref = torch.randn(20, 2)
    with pytest.raises(ValueError, match="ensemble=4, train_data"):
        OODDetector(flow, ref, method="waic")
    with pytest.raises(ValueError, match="ensemble must be >= 0"):
        OODDetector(flow, ref, ensemble=-1)
    with pytest.raises(TypeError, match="list of flows"):
        OODDetector(flow, ref, ensemble="four")
    with pytest.raises(ValueError, match="train_data"):
        OODDetector(flow, ref, ensemble=2)
    with pytest.raises(ValueError, match=r"no configuration.*ensemble=\[flow2"):
        OODDetector(flow, ref, ensemble=2, train_data=ref)  # a bare Flow has no .config
    with pytest.raises(ValueError, match="dequantization_samples"):
        OODDetector(flow, ref, dequantization_samples=0)
    with pytest.raises(ValueError, match="waic needs ensemble"):
        OODDetector(flow, ref).scores(ref, method="waic")
    assert "waic" not in OODDetector(flow, ref).methods
