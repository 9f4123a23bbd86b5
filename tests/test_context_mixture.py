"""ContextMixture: a conditional flow's density mixed over a finite set of contexts."""

from __future__ import annotations

import pytest
import torch
from conftest import perturb

import pyroflows as pf


def _conditional(dim: int = 1, classes: int = 3) -> pf.MAF:
    torch.manual_seed(0)
    flow = pf.MAF(dim, context_dim=classes, num_layers=2, hidden_dims=(8,))
    perturb(flow)
    return flow.eval()


def test_mixture_is_a_normalised_density_and_the_weighted_sum_of_its_components():
    flow = _conditional()
    mix = pf.ContextMixture.from_labels(flow, torch.tensor([0, 1, 1, 2, 2, 2]))
    torch.testing.assert_close(mix.probs, torch.tensor([1 / 6, 2 / 6, 3 / 6]))
    grid = torch.linspace(-30, 30, 60001).unsqueeze(-1)
    with torch.no_grad():
        density = mix.log_prob(grid).exp()
        parts = [flow.log_prob(grid, torch.eye(3)[k].expand(len(grid), -1)).exp() for k in range(3)]
    torch.testing.assert_close(density, sum(p * q for p, q in zip(mix.probs, parts, strict=True)))
    assert torch.trapezoid(density, grid[:, 0]).item() == pytest.approx(1.0, abs=1e-3)
    # all the weight on one context: that context's density
    one = pf.ContextMixture(flow, torch.eye(3), torch.tensor([0.0, 1.0, 0.0]))
    with torch.no_grad():
        x = grid[::1000]
        torch.testing.assert_close(one.log_prob(x), flow.log_prob(x, torch.eye(3)[1]))


def test_mixture_scores_in_the_ood_detector_and_samples_with_the_event_shape():
    flow = _conditional(dim=2)
    mix = pf.ContextMixture(flow, torch.eye(3))
    with torch.no_grad():
        reference = mix.sample((64,))
    assert reference.shape == (64, 2)
    detector = pf.OODDetector(mix, reference, method="likelihood")
    assert detector.scores(torch.randn(5, 2) + 10).shape == (5,)


def test_bad_inputs_say_what_to_pass():
    flow = _conditional()
    with pytest.raises(ValueError, match="needs a conditional flow"):
        pf.ContextMixture(pf.MAF(1, num_layers=1, hidden_dims=(8,)), torch.eye(3))
    with pytest.raises(ValueError, match=r"Expected contexts of shape \(K, 3\); got \(3, 2\)"):
        pf.ContextMixture(flow, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="non-negative mixture weights"):
        pf.ContextMixture(flow, torch.eye(3), torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\); got \[0, 3\]"):
        pf.ContextMixture.from_labels(flow, torch.tensor([0, 3]), num_classes=3)
    with pytest.raises(ValueError, match=r"Expected labels of shape \(N,\)"):
        pf.ContextMixture.from_labels(flow, torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="do not pass a context"):
        pf.ContextMixture(flow, torch.eye(3)).log_prob(torch.zeros(2, 1), torch.zeros(2, 3))
