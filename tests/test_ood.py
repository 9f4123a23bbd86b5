"""Out-of-distribution scores and inverse stability (pyroflows/diagnostics/ood.py)."""

from __future__ import annotations

import pytest
import torch

import pyroflows as pf
from pyroflows.diagnostics import OODDetector, inverse_stability


def test_typicality_flags_too_likely_points_that_likelihood_misses():
    flow = pf.RealNVP(20, num_layers=2, hidden_dims=(8,), zero_init=True)  # N(0, I) in 20-D
    reference = torch.randn(5000, 20)
    near_mode = 0.1 * torch.randn(200, 20)  # higher density than any typical sample
    typ = OODDetector(flow, reference, method="typicality")
    lik = OODDetector(flow, reference, method="likelihood")
    assert typ.is_ood(near_mode).float().mean() > 0.99
    assert lik.is_ood(near_mode).float().mean() == 0.0


def test_false_positive_rate_matches_alpha_on_fresh_in_distribution_data():
    flow = pf.RealNVP(5, num_layers=2, hidden_dims=(8,))
    det = OODDetector(flow, torch.randn(20000, 5))
    rate = det.is_ood(torch.randn(20000, 5), alpha=0.1).float().mean()
    assert abs(float(rate) - 0.1) < 0.015


def test_ratio_method_cancels_a_shared_background():
    flow = pf.RealNVP(2, num_layers=2, hidden_dims=(8,))
    det = OODDetector(flow, torch.randn(500, 2), method="ratio", background=flow)
    # the same model as background: every score is exactly zero
    assert torch.equal(det.scores(torch.randn(10, 2) * 5), torch.zeros(10))


def test_bad_arguments_are_explained():
    flow = pf.RealNVP(2, num_layers=2, hidden_dims=(8,))
    with pytest.raises(ValueError, match="background"):
        OODDetector(flow, torch.randn(100, 2), method="ratio")
    with pytest.raises(ValueError, match="method"):
        OODDetector(flow, torch.randn(100, 2), method="nope")
    with pytest.raises(ValueError, match="at least 10"):
        OODDetector(flow, torch.randn(3, 2))


def test_inverse_stability_flags_an_ill_conditioned_layer():
    good = pf.Glow(3, num_layers=2, hidden_dims=(8,))
    assert not inverse_stability(good, torch.randn(50, 3)).unstable.any()
    bad = pf.transforms.LULinear(3)
    with torch.no_grad():
        bad.log_diag.copy_(torch.tensor([14.0, -14.0, 0.0]))
        bad.upper.fill_(3.0)
    report = inverse_stability(bad, torch.randn(50, 3), tolerance=1e-3)
    assert report.unstable.any() and report.max_error > 1e-3
    assert "above tolerance" in str(report)
