"""The one cache slot: hits when it should, never serves a stale value."""

from __future__ import annotations

import torch
from conftest import perturb

import pyroflows as pf
from pyroflows import transforms as T


def test_sample_then_score_uses_the_slot_not_the_sequential_inverse(monkeypatch):
    flow = pf.IAF(3, 2, (8,))
    perturb(flow)
    x, lp = flow.rsample_and_log_prob((5,))

    def boom(*args, **kwargs):
        raise AssertionError("sequential inverse was run")

    for t in flow.transforms:
        monkeypatch.setattr(t, "inverse_and_log_det", boom)
    torch.testing.assert_close(flow.log_prob(x), lp)


def test_a_new_context_is_never_served_from_the_slot():
    flow = pf.MAF(3, 2, (8,), context_dim=2)
    perturb(flow)
    x = torch.randn(4, 3)
    with torch.no_grad():
        values = [flow.log_prob(x, torch.full((4, 2), float(k))) for k in range(3)]
    assert not torch.allclose(values[0], values[1]) and not torch.allclose(values[1], values[2])
    ref = flow.log_prob(x, torch.full((4, 2), 1.0)).detach()
    torch.testing.assert_close(values[1], ref)


def test_parameter_update_invalidates_the_slot():
    t = T.Coupling(2, (8,))
    perturb(t)
    x = torch.randn(3, 2)
    y1 = t(x)
    with torch.no_grad():
        t.conditioner[-1].bias.add_(1.0)
    y2 = t(x)
    assert not torch.allclose(y1, y2)


def test_dtype_change_invalidates_the_slot():
    t = T.ActNorm(2)
    x = torch.randn(3, 2)
    t(x)
    t.double()
    assert t._slot is None


def test_log_det_is_handed_out_once():
    t = T.Coupling(2, (8,))
    x = torch.randn(3, 2)
    y = t(x)
    t.log_abs_det_jacobian(x, y)
    assert t._slot is None


def test_in_place_change_of_the_input_invalidates_the_slot():
    t = T.ElementwiseAffine(2)
    with torch.no_grad():
        t.shift.fill_(1.0)
    x = torch.ones(2)
    t(x)
    x.add_(1)
    torch.testing.assert_close(t(x), torch.full((2,), 3.0), check_dtype=False)


def test_a_transform_with_a_filled_slot_can_be_deep_copied():
    import copy

    t = T.Coupling(2, (8,))
    perturb(t)
    t(torch.randn(3, 2, requires_grad=True))
    clone = copy.deepcopy(t)
    assert clone._slot is None and t._slot is not None
