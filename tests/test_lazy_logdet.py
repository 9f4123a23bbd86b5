"""Deferred log-dets: sampling skips the spline's log-derivatives, scoring still reads the slot."""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import perturb
from pyro.infer import Trace_ELBO

import pyroflows as pf
from pyroflows.transforms import Coupling, NonFiniteError, base
from pyroflows.transforms.elementwise import rational_quadratic_spline

F64 = torch.float64

FLOWS = {
    "nsf-coupling": lambda: pf.NSF(4, num_layers=3, hidden_dims=(8,)),
    "nsf-iaf": lambda: pf.NSF(4, num_layers=2, hidden_dims=(8,), fast="sample"),
    "nsf-maf": lambda: pf.NSF(4, num_layers=2, hidden_dims=(8,), fast="density"),
    "realnvp": lambda: pf.RealNVP(4, num_layers=2, hidden_dims=(8,)),
}


def _flow(name: str) -> pf.Flow:
    torch.manual_seed(0)
    flow = FLOWS[name]().double()
    perturb(flow)
    return flow


def _layers(flow: pf.Flow) -> list[Coupling]:
    return [t for t in flow.transforms if hasattr(t, "conditioner")]


@pytest.mark.parametrize("inverse", [False, True])
def test_the_spline_defers_its_log_derivative_to_the_same_values(inverse):
    torch.manual_seed(0)
    x = 3 * torch.randn(64, 5, dtype=F64)  # inside and outside [-B, B]
    params = torch.randn(64, 23, 5, dtype=F64)
    y, ld = rational_quadratic_spline(x, params, dim=-2, inverse=inverse)
    y_later, later = rational_quadratic_spline(x, params, dim=-2, inverse=inverse, defer=True)
    assert callable(later)
    assert torch.equal(y_later, y)
    torch.testing.assert_close(later(), ld, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_sampling_defers_and_scoring_the_sample_matches_the_eager_log_prob(name):
    flow = _flow(name)
    torch.manual_seed(1)
    x_eager, lp_eager = flow.rsample_and_log_prob((16,))  # log-dets computed with the pass
    torch.manual_seed(1)
    x = flow.rsample((16,))
    assert all(callable(t._slot.log_det) for t in _layers(flow))  # deferred, not dropped
    lp = flow.log_prob(x)  # served by the slots: the deferred log-dets are computed now
    assert torch.equal(x, x_eager)
    torch.testing.assert_close(lp, lp_eager, rtol=1e-12, atol=1e-12)
    fresh = copy.deepcopy(flow).log_prob(x)  # no slot: the numerical inverse, eagerly
    torch.testing.assert_close(lp, fresh, rtol=1e-9, atol=1e-9)


def test_a_conditional_flow_defers_through_its_conditioned_transforms():
    torch.manual_seed(0)
    flow = pf.NSF(3, num_layers=2, hidden_dims=(8,), context_dim=2).double()
    perturb(flow)
    c = torch.randn(5, 2, dtype=F64)
    x = flow.rsample(context=c)
    assert all(callable(t._slot.log_det) for t in _layers(flow))
    torch.testing.assert_close(
        flow.log_prob(x, c), copy.deepcopy(flow).log_prob(x, c), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("name", ["nsf-coupling", "nsf-iaf", "nsf-maf"])
def test_the_conditioner_runs_once_per_layer_for_rsample_then_log_prob(name):
    flow = _flow(name)
    calls = []
    for t in _layers(flow):
        t.conditioner.register_forward_hook(lambda *_: calls.append(1))
    x = flow.rsample((8,))
    flow.log_prob(x).sum().backward()
    # the sequential (MAF) sampling direction solves in D passes, the others in one
    per_layer = 4 if name == "nsf-maf" else 1
    assert len(calls) == per_layer * len(_layers(flow))


def _elbo_loss_and_grads(guide, model) -> tuple[torch.Tensor, list[torch.Tensor]]:
    pyro.set_rng_seed(3)
    loss = Trace_ELBO(num_particles=4, vectorize_particles=True).differentiable_loss(model, guide)
    params = [p for p in guide.parameters() if p.requires_grad]
    return loss.detach(), [g.detach() for g in torch.autograd.grad(loss, params)]


def test_trace_elbo_with_a_spline_guide_gives_the_eager_loss_and_gradients(monkeypatch):
    def model():
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(z.sum(-1), 0.5), obs=torch.tensor(1.0))

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pf.AutoFlow(model, pf.NSF, num_layers=2, hidden_dims=(8,))
    guide()  # set up the parameters
    perturb(guide)
    eager_calls = []
    for t in _layers(guide.flow):
        t.forward_and_log_det = lambda *a, _f=t.forward_and_log_det, **k: (
            eager_calls.append(1) or _f(*a, **k)
        )
    loss, grads = _elbo_loss_and_grads(guide, model)
    assert not eager_calls  # the guide's sample deferred its log-dets; scoring used the slots
    monkeypatch.setattr(base, "_defers", lambda cls: False)  # the eager pass, as before
    loss_eager, grads_eager = _elbo_loss_and_grads(guide, model)
    assert eager_calls
    torch.testing.assert_close(loss, loss_eager)
    for g, g_eager in zip(grads, grads_eager, strict=True):
        torch.testing.assert_close(g, g_eager)


def _spline_coupling() -> Coupling:
    torch.manual_seed(0)
    t = Coupling(4, hidden_dims=(8,), transformer="spline").double()
    perturb(t)
    return t


def test_a_deferred_log_det_is_computed_once_and_handed_out_once():
    t = _spline_coupling()
    x = torch.randn(6, 4, dtype=F64, requires_grad=True)
    y = t(x)
    assert callable(t._slot.log_det)
    y_again, ld = t.apply_forward(x, None)  # the eager route computes it, into the slot
    assert y_again is y and isinstance(t._slot.log_det, torch.Tensor)
    assert t.log_abs_det_jacobian(x, y) is ld  # the same tensor, not a second evaluation
    assert t._slot is None  # consumed
    ld.sum().backward()
    again = t.log_abs_det_jacobian(x, y)  # recomputed, with a graph of its own
    again.sum().backward()
    torch.testing.assert_close(again, ld)
    torch.testing.assert_close(ld, t.forward_and_log_det(x)[1])


def test_a_deferred_log_det_taken_directly_matches_the_eager_one():
    t = _spline_coupling()
    x = torch.randn(6, 4, dtype=F64)
    y = t(x)
    ld = t.log_abs_det_jacobian(x, y)
    assert t._slot is None
    torch.testing.assert_close(ld, t.forward_and_log_det(x)[1], rtol=0, atol=0)
    torch.testing.assert_close(t.log_abs_det_jacobian(x, y), ld, rtol=0, atol=0)


def test_a_non_finite_deferred_log_det_raises_the_eager_error_when_it_is_computed(monkeypatch):
    t = _spline_coupling()
    tau = t._tau

    def nan_log_derivative(*args, defer=False, **kwargs):
        out, _ = tau(*args, **kwargs)
        nan = torch.full_like(out, float("nan"))
        return (out, lambda: nan) if defer else (out, nan)

    monkeypatch.setattr(t, "_tau", nan_log_derivative)
    x = torch.randn(3, 4, dtype=F64)
    with pytest.raises(NonFiniteError) as eager:
        t.apply_forward(x, None)
    y = t(x)  # the values are finite: sampling succeeds
    with pytest.raises(NonFiniteError) as deferred:
        t.log_abs_det_jacobian(x, y)
    assert str(deferred.value) == str(eager.value)
    assert "Coupling (forward): produced NaN or Inf from a finite input" in str(eager.value)
    y = t(x)
    with pytest.raises(NonFiniteError, match="produced NaN or Inf"):
        t.apply_forward(x, None)  # a slot hit on the eager route checks it too
    with pf.validation(False):
        y = t(x)
        assert torch.isnan(t.log_abs_det_jacobian(x, y)).all()


def test_non_finite_sampled_values_still_raise_at_sampling_time():
    t = _spline_coupling()
    with torch.no_grad():
        t.conditioner[-1].bias.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="Coupling \\(forward\\): produced NaN or Inf"):
        t(torch.randn(3, 4, dtype=F64))


def test_a_subclass_that_overrides_only_the_eager_pass_samples_with_it():
    class Shifted(Coupling):
        def forward_and_log_det(self, x, context=None):
            y, ld = super().forward_and_log_det(x, context)
            return y + 1.0, ld

    t = Shifted(4, hidden_dims=(8,), transformer="spline")
    x = torch.randn(3, 4)
    torch.testing.assert_close(t(x), x + 1.0)
