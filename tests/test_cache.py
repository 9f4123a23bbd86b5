"""The one cache slot: hits when it should, never serves a stale value."""

from __future__ import annotations

import torch
from conftest import perturb

import pyroflows as pf
from pyroflows import transforms as T


def test_sample_then_score_uses_the_slot_not_the_sequential_inverse(monkeypatch):
    flow = pf.IAF(3, num_layers=2, hidden_dims=(8,))
    perturb(flow)
    x, lp = flow.rsample_and_log_prob((5,))

    def boom(*args, **kwargs):
        raise AssertionError("sequential inverse was run")

    for t in flow.transforms:
        monkeypatch.setattr(t, "inverse_and_log_det", boom)
    torch.testing.assert_close(flow.log_prob(x), lp)


def test_a_new_context_is_never_served_from_the_slot():
    flow = pf.MAF(3, num_layers=2, hidden_dims=(8,), context_dim=2)
    perturb(flow)
    x = torch.randn(4, 3)
    with torch.no_grad():
        values = [flow.log_prob(x, torch.full((4, 2), float(k))) for k in range(3)]
    assert not torch.allclose(values[0], values[1]) and not torch.allclose(values[1], values[2])
    ref = flow.log_prob(x, torch.full((4, 2), 1.0)).detach()
    torch.testing.assert_close(values[1], ref)


def test_parameter_update_invalidates_the_slot():
    t = T.Coupling(2, hidden_dims=(8,))
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
    t = T.Coupling(2, hidden_dims=(8,))
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

    t = T.Coupling(2, hidden_dims=(8,))
    perturb(t)
    t(torch.randn(3, 2, requires_grad=True))
    clone = copy.deepcopy(t)
    assert clone._slot is None and t._slot is not None


# ---- issue 10 item 2: contexts and parameters changed behind the slot's back -----------------
def test_context_changed_in_place_between_rsample_and_log_prob_is_not_served_stale():
    flow = pf.MAF(3, num_layers=2, hidden_dims=(8,), context_dim=2)
    perturb(flow)
    c = torch.randn(4, 2)
    d = flow(c)
    x = d.rsample()
    c.fill_(5.0)  # same tensor, new values
    scored = flow(c).log_prob(x)  # first: the slot still holds the pass with the old values
    torch.testing.assert_close(scored, flow(c.clone()).log_prob(x))
    x = d.rsample()
    c.add_(1.0)
    scored = d.log_prob(x)  # the distribution built before the edit
    torch.testing.assert_close(scored, flow(c.clone()).log_prob(x))


def _same_values_as_a_fresh_copy(flow, x, value):
    import copy

    torch.testing.assert_close(value, copy.deepcopy(flow).log_prob(x))  # a copy has no slot


def test_parameter_replaced_through_data_is_detected():
    flow = pf.IAF(3, num_layers=2, hidden_dims=(8,))
    perturb(flow)
    x, _ = flow.rsample_and_log_prob((5,))
    p = flow.transforms[0].conditioner.net[0].weight
    p.data = 2 * p.detach().clone()  # new storage, no version bump
    _same_values_as_a_fresh_copy(flow, x, flow.log_prob(x))


def test_vector_to_parameters_is_detected():
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    flow = pf.IAF(3, num_layers=2, hidden_dims=(8,))
    perturb(flow)
    x, _ = flow.rsample_and_log_prob((5,))
    with torch.no_grad():
        vector_to_parameters(1.1 * parameters_to_vector(flow.parameters()), flow.parameters())
    _same_values_as_a_fresh_copy(flow, x, flow.log_prob(x))


def test_replaced_parameter_and_submodule_are_detected_without_hooks():
    t = T.Coupling(2, hidden_dims=(8,))
    perturb(t)
    x = torch.randn(3, 2)
    y1 = t(x)
    last = t.conditioner[-1]
    last.bias = torch.nn.Parameter(last.bias.detach() + 1.0)  # replaced, version 0 again
    y2 = t(x)
    assert not torch.allclose(y1, y2)
    t.conditioner = T.Coupling(
        2, hidden_dims=(8,)
    ).conditioner  # a whole new (identity) conditioner
    torch.testing.assert_close(t(x), x)


def test_importing_pyroflows_installs_no_module_registration_hooks():
    from torch.nn.modules import module

    for name in (
        "_global_parameter_registration_hooks",
        "_global_buffer_registration_hooks",
        "_global_module_registration_hooks",
    ):
        hooks = getattr(module, name, {}).values()
        assert not [h for h in hooks if getattr(h, "__module__", "").startswith("pyroflows")]


def test_in_place_data_edit_of_a_parameter_needs_clear_cache():
    """The documented route: ``.data`` edits bypass version counters; clear_cache() after them."""
    flow = pf.IAF(3, num_layers=2, hidden_dims=(8,))
    perturb(flow)
    x, _ = flow.rsample_and_log_prob((5,))
    flow.transforms[0].conditioner.net[0].weight.data.mul_(2.0)
    flow.clear_cache()
    _same_values_as_a_fresh_copy(flow, x, flow.log_prob(x))
    t = T.Coupling(2, hidden_dims=(8,))
    perturb(t)
    v = torch.randn(3, 2)
    t(v)
    t.conditioner[-1].bias.data.add_(1.0)
    t.clear_cache()
    torch.testing.assert_close(t(v), t.forward_and_log_det(v)[0])


def test_in_place_data_edit_of_the_input_needs_clear_cache():
    t = T.ElementwiseAffine(2)
    with torch.no_grad():
        t.shift.fill_(1.0)
    x = torch.ones(2)
    t(x)
    x.data.add_(1.0)
    t.clear_cache()
    torch.testing.assert_close(t(x), torch.full((2,), 3.0), check_dtype=False)


def test_the_slot_has_named_fields():
    t = T.Coupling(2, hidden_dims=(8,))
    x = torch.randn(3, 2)
    y = t(x)
    slot = t._slot
    assert isinstance(slot, pf.transforms.base.Slot)
    assert slot.x is x and slot.y is y and slot.context is None
    assert slot.versions == (x._version, y._version, -1)


def test_torch_func_transforms_still_work():
    """The key reads storage pointers; torch.func's wrapped tensors have none."""
    t = T.MaskedAutoregressive(3, hidden_dims=(8,))
    perturb(t)
    x = torch.randn(4, 3)
    params = dict(t.named_parameters())
    grads = torch.func.grad(lambda p: torch.func.functional_call(t, p, (x,)).sum())(params)
    assert set(grads) == set(params)
