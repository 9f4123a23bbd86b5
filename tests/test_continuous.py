"""Continuous flows: exact maps of linear fields, solver options, divergence estimators, adjoint
gradients, NFE, RNODE penalties, augmentation, and use as a Pyro guide."""

from __future__ import annotations

import copy
import math
from functools import partial

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import perturb
from pyro.distributions.transforms import iterated
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormalizingFlow
from torch import nn

import pyroflows as pf
from pyroflows.nn import VectorField
from pyroflows.transforms import (
    ConditionalContinuousFlow,
    ContinuousFlow,
    ODESolver,
    SolverError,
    continuous_flow,
)

F64 = torch.float64


def tol(eps: float) -> ODESolver:
    """dopri5 at rtol = atol = eps."""
    return ODESolver(rtol=eps, atol=eps)


def linear_flow(A: torch.Tensor, **kwargs) -> ContinuousFlow:
    """A continuous flow whose vector field is exactly f(t, z) = A z."""
    t = ContinuousFlow(A.shape[0], hidden_dims=(), **kwargs).double()
    layer = t.vector_field.layers[0]
    with torch.no_grad():
        layer.linear.weight.copy_(A)
        for p in (layer.linear.bias, layer.gate_weight, layer.gate_bias, layer.time_weight):
            p.zero_()  # gate 2 sigmoid(0) = 1, no time shift: f(t, z) = A z
    return t


def random_flow(dim=2, hidden=(16,), context_dim=0, **kwargs) -> ContinuousFlow:
    if context_dim:
        t = ConditionalContinuousFlow(dim, context_dim=context_dim, hidden_dims=hidden, **kwargs)
    else:
        t = ContinuousFlow(dim, hidden_dims=hidden, **kwargs)
    perturb(t, 0.5)
    return t.double()


class Counting(nn.Module):
    """Wraps a vector field and counts its calls."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field, self.calls = field, 0

    def forward(self, t, z, context=None):
        self.calls += 1
        return self.field(t, z, context)


def test_linear_field_gives_matrix_exponential_and_trace_log_det():
    torch.manual_seed(1)
    A = 0.7 * torch.randn(3, 3, dtype=F64)
    t0, t1 = 0.2, 1.5
    t = linear_flow(A, t0=t0, t1=t1, solver=tol(1e-10))
    x = torch.randn(6, 3, dtype=F64)
    y, ld = t.forward_and_log_det(x)
    torch.testing.assert_close(y, x @ torch.linalg.matrix_exp((t1 - t0) * A).T, atol=1e-8, rtol=0)
    torch.testing.assert_close(ld, torch.full((6,), (t1 - t0) * float(A.trace()), dtype=F64))
    x2, ld2 = t.inverse_and_log_det(y)  # the density direction integrates back
    torch.testing.assert_close(x2, x, atol=1e-8, rtol=0)
    torch.testing.assert_close(ld2, ld, atol=1e-8, rtol=0)


def test_fixed_grid_method_counts_its_evaluations_and_converges():
    torch.manual_seed(2)
    A = 0.7 * torch.randn(2, 2, dtype=F64)
    x = torch.randn(4, 2, dtype=F64)
    exact = x @ torch.linalg.matrix_exp(A).T
    errors = []
    for h in (0.25, 0.125):
        t = linear_flow(A, solver=ODESolver("rk4", step_size=h))
        y, _ = t.forward_and_log_det(x)
        assert t.nfe == 4 * round(1 / h)  # four evaluations per RK4 step
        errors.append(float((y.detach() - exact).abs().max()))
    assert errors[1] < errors[0] / 10  # fourth order: halving h divides the error by ~16


def test_nfe_counts_every_vector_field_evaluation_of_the_latest_solve():
    field = Counting(VectorField(2, (8,), zero_init=False))
    t = ContinuousFlow(2, vector_field=field)
    x = torch.randn(5, 2)
    y = t(x)
    assert t.nfe == field.calls > 6  # dopri5 takes at least one 6-stage step
    field.calls = 0
    t.clear_cache()
    t.inv(y)
    assert t.nfe == field.calls > 6


@pytest.mark.parametrize("conditional", [False, True])
def test_round_trip_error_is_within_solver_tolerance(conditional):
    torch.manual_seed(3)
    x = torch.randn(8, 2, dtype=F64)
    c = torch.randn(8, 3, dtype=F64) if conditional else None
    errors = []
    for eps in (1e-4, 1e-8):
        torch.manual_seed(4)  # the same field for both tolerances
        t = random_flow(context_dim=3 if conditional else 0, solver=tol(eps))
        with torch.no_grad():
            y, ld = t.forward_and_log_det(x, c)
            x2, ld2 = t.inverse_and_log_det(y, c)
        assert float((y - x).abs().max()) > 0.1  # the map is far from the identity
        errors.append(max(float((x2 - x).abs().max()), float((ld2 - ld).abs().max())))
    assert errors[0] < 1e-2 and errors[1] < 1e-6
    assert errors[1] < errors[0] / 100


def _hutchinson_mean(t, x, n):
    """Mean and standard error of n independent Hutchinson log-dets per point (one solve)."""
    _, ld = t.forward_and_log_det(x.repeat(n, 1))
    ld = ld.reshape(n, len(x))
    return ld.mean(0), ld.std(0) / math.sqrt(n)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_averages_to_the_exact_divergence(probe):
    torch.manual_seed(5)
    t = random_flow(solver=tol(1e-7))
    x = torch.randn(3, 2, dtype=F64)
    with torch.no_grad():
        exact = t.forward_and_log_det(x)[1]
        t.divergence, t.probe = "hutchinson", probe
        mean, se = _hutchinson_mean(t, x, 3000)
    assert (se > 0).all() and (se < 0.1).all()
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)


def test_hutchinson_probe_is_held_fixed_for_a_whole_solve(monkeypatch):
    torch.manual_seed(6)
    A = torch.randn(3, 3, dtype=F64)
    t = linear_flow(A, t0=0.5, t1=2.0, divergence="hutchinson", probe="rademacher")
    drawn = []
    draw = t._draw_probe
    monkeypatch.setattr(t, "_draw_probe", lambda z: drawn.append(draw(z)) or drawn[-1])
    _, ld = t.forward_and_log_det(torch.randn(5, 3, dtype=F64))
    (e,) = drawn
    assert set(e.unique().tolist()) <= {-1.0, 1.0}
    # with one probe e for the whole solve the estimate is exactly (t1 - t0) e^T A e
    torch.testing.assert_close(ld, 1.5 * torch.einsum("ni,ij,nj->n", e, A, e))


@pytest.mark.parametrize(("conditional", "direction"), [(False, "forward"), (True, "inverse")])
def test_adjoint_gradients_match_direct_backprop(conditional, direction):
    torch.manual_seed(7)
    t = random_flow(
        hidden=(8,), context_dim=3 if conditional else 0, solver=tol(1e-9), regularize=True
    )
    x = torch.randn(5, 2, dtype=F64, requires_grad=True)
    c = torch.randn(5, 3, dtype=F64, requires_grad=True) if conditional else None
    inputs = [x, *t.parameters()] + ([c] if conditional else [])

    def grads(adjoint):
        t.adjoint = adjoint
        run = t.forward_and_log_det if direction == "forward" else t.inverse_and_log_det
        y, ld = run(x, c)
        reg = t.regularization()
        loss = (y**2).sum() + ld.sum() + reg["kinetic"] + reg["jacobian"]
        return torch.autograd.grad(loss, inputs)

    for a, b in zip(grads(True), grads(False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_rnode_penalties_of_a_linear_field_match_closed_forms():
    torch.manual_seed(8)
    A = 0.8 * torch.randn(2, 2, dtype=F64)
    t = linear_flow(A, t0=0.0, t1=1.0, regularize=True, solver=tol(1e-10))
    x = torch.randn(4, 2, dtype=F64)
    y, _ = t.forward_and_log_det(x)
    reg = t.regularization()
    # Jacobian penalty: int ||A||_F^2 dt; kinetic: mean_n int ||A expm(sA) x_n||^2 ds (Simpson)
    torch.testing.assert_close(reg["jacobian"], A.pow(2).sum())
    s = torch.linspace(0, 1, 2001, dtype=F64)
    z = torch.einsum("sij,nj->sni", torch.linalg.matrix_exp(s[:, None, None] * A), x)
    integrand = (z @ A.T).pow(2).sum(-1).mean(-1)
    w = torch.ones_like(s)
    w[1:-1:2], w[2:-1:2] = 4, 2
    kinetic = (w * integrand).sum() * (s[1] - s[0]) / 3
    torch.testing.assert_close(reg["kinetic"], kinetic, rtol=1e-8, atol=0)
    t.inverse_and_log_det(y)  # the density direction integrates the same path backwards
    torch.testing.assert_close(t.regularization()["kinetic"], kinetic, rtol=1e-7, atol=0)
    # Hutchinson's Frobenius estimate (Gaussian probes) is unbiased
    t.divergence = "hutchinson"
    t.train_solver = tol(1e-6)
    n = 20000
    t.forward_and_log_det(x[:1].repeat(n, 1))
    aat = A @ A.T
    se = math.sqrt(2 * float(aat.pow(2).sum()) / n)
    assert abs(float(t.regularization()["jacobian"].detach() - A.pow(2).sum())) < 4 * se


def test_penalties_are_only_integrated_when_asked():
    t = random_flow()
    t.forward_and_log_det(torch.randn(3, 2, dtype=F64))
    assert t.regularization() == {}
    t.regularize = True
    assert t.regularization() == {}  # nothing integrated yet
    t.inverse_and_log_det(torch.randn(3, 2, dtype=F64))
    assert sorted(t.regularization()) == ["jacobian", "kinetic"]
    assert copy.deepcopy(t).regularization() == {}  # copies (check_flow) drop the graph


def test_evaluation_solves_skip_the_penalties_and_match_the_plain_flow():
    """In eval mode a regularised flow solves the plain ODE: same output, log-det and NFE."""
    x = torch.randn(5, 2, dtype=F64)
    t = random_flow(solver=tol(1e-6)).eval()
    y, ld = t.inverse_and_log_det(x)
    plain_nfe = t.nfe
    t.regularize = True
    y_reg, ld_reg = t.inverse_and_log_det(x)
    assert t.nfe == plain_nfe and t.regularization() == {}
    torch.testing.assert_close((y_reg, ld_reg), (y, ld), rtol=0, atol=0)
    t.train()
    t.inverse_and_log_det(x)
    assert sorted(t.regularization()) == ["jacobian", "kinetic"]


@pytest.mark.slow
def test_minimising_the_penalties_smooths_the_field():
    torch.manual_seed(9)
    t = random_flow(hidden=(16,), regularize=True, solver=tol(1e-5)).float()
    opt = torch.optim.Adam(t.parameters(), lr=1e-2)
    x = torch.randn(32, 2)
    values, nfes = [], []
    for _ in range(20):
        opt.zero_grad()
        t.inverse_and_log_det(x)
        reg = t.regularization()
        loss = reg["kinetic"] + reg["jacobian"]
        loss.backward()
        opt.step()
        values.append(float(loss.detach()))
        nfes.append(t.nfe)
    assert values[-1] < 0.1 * values[0]
    assert nfes[-1] < nfes[0]


def test_fit_adds_penalties_and_records_nfe():
    torch.manual_seed(10)
    flow = pf.CNF(2, hidden_dims=(8,), regularize=True, solver=tol(1e-4))
    data = torch.randn(64, 2) * 0.5 + 1
    history = pf.fit(
        flow,
        data,
        steps=3,
        batch_size=32,
        regularization={"kinetic": 0.1, "jacobian": 0.1},
        progress=False,
        seed=0,
    )
    assert len(history.nfe) == 3 and min(history.nfe) > 0
    assert sorted(history.regularization) == ["jacobian", "kinetic"]


def test_underflow_raises_a_pyroflows_error_with_advice():
    class BlowUp(nn.Module):  # dz/dt = z^2 from z = 1 blows up at t = 1
        def forward(self, t, z, context=None):
            return z * z

    t = ContinuousFlow(1, vector_field=BlowUp(), t1=2.0)
    with pytest.raises(SolverError, match=r"(?s)underflow.*rtol/atol.*rk4"):
        t.forward_and_log_det(torch.ones(2, 1))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"solver": {"method": "rk4"}}, ValueError, "step_size"),
        ({"solver": {"method": "rk45"}}, ValueError, "unknown ODE method"),
        ({"solver": {"rtol": 0.0}}, ValueError, "positive"),
        ({"solver": {"tol": 1e-4}}, TypeError, r"unknown solver setting\(s\) \['tol'\]"),
        ({"solver": "rk4"}, TypeError, "ODESolver"),
        ({"method": "rk4"}, TypeError, "method"),
        ({"t0": 1.0, "t1": 0.0}, ValueError, "t1 must be greater"),
        ({"divergence": "approx"}, ValueError, "divergence must be"),
        ({"probe": "uniform"}, ValueError, "probe must be"),
        ({"vector_field": lambda t, z, c: z}, TypeError, "nn.Module"),
        ({"eval_solver": {"method": "euler"}}, ValueError, "step_size"),
    ],
)
def test_invalid_settings_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        ContinuousFlow(2, hidden_dims=(8,), **kwargs)


def test_training_and_evaluation_use_separate_solvers():
    t = random_flow(solver=ODESolver("rk4", step_size=0.5), eval_solver=tol(1e-7))
    x = torch.randn(4, 2, dtype=F64)
    t.train()
    y_train, _ = t.apply_forward(x, None)
    assert t.nfe == 8
    t.eval()
    y_eval, _ = t.apply_forward(x, None)  # a new solve: the mode is part of the cache key
    assert t.nfe > 8 and t.solver is t.eval_solver
    assert not torch.equal(y_train, y_eval)
    with pytest.raises(AttributeError):
        t.eval_solver.method = "euler"  # settings are immutable: assign a new solver
    t.eval_solver = {"method": "euler", "step_size": 0.25}  # switchable by assignment
    t.forward_and_log_det(x)
    assert t.nfe == 4
    assert t.train_solver == ODESolver("rk4", step_size=0.5)  # the other one is untouched
    with pytest.raises(ValueError, match="step_size"):
        t.train_solver = {"method": "euler"}
    assert t.train_solver.method == "rk4"  # a rejected setting leaves the old one


def test_one_solver_serves_both_modes_unless_eval_solver_is_given():
    t = ContinuousFlow(2, hidden_dims=(8,), solver={"method": "rk4", "step_size": 0.5})
    assert t.train_solver == t.eval_solver == ODESolver("rk4", step_size=0.5)
    assert ContinuousFlow(2, hidden_dims=(8,)).eval_solver == ODESolver(
        "dopri5", rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("conditional", [False, True])
def test_saved_cnf_keeps_its_training_and_evaluation_solvers(tmp_path, conditional):
    flow = pf.CNF(
        2,
        hidden_dims=(8,),
        context_dim=2 if conditional else 0,
        solver=ODESolver("rk4", step_size=0.25),
        eval_solver={"rtol": 1e-7, "atol": 1e-6},
    )
    flow.save(tmp_path / "cnf.pt")
    again = pf.load(tmp_path / "cnf.pt")
    assert again.transform.train_solver == ODESolver("rk4", step_size=0.25)
    assert again.transform.eval_solver == ODESolver("dopri5", rtol=1e-7, atol=1e-6)
    assert isinstance(again.transform.eval_solver, ODESolver)


def test_set_divergence_switches_for_good_or_inside_a_with_block():
    torch.manual_seed(14)
    t = random_flow(dim=3, solver=tol(1e-8))
    t.divergence = "hutchinson"
    x = torch.randn(4, 3, dtype=F64)
    with torch.no_grad():
        t.divergence = "exact"
        _, exact = t.forward_and_log_det(x)
        t.divergence = "hutchinson"
        with t.set_divergence("exact") as same:
            assert same is t and t.exact_divergence
            _, again = t.forward_and_log_det(x)
        assert t.divergence == "hutchinson"
        _, noisy = t.forward_and_log_det(x)
    torch.testing.assert_close(again, exact)  # exact: no probe noise
    assert not torch.allclose(noisy, exact)
    t.set_divergence("exact")
    assert t.divergence == "exact" and t.exact_divergence
    with pytest.raises(ValueError, match="divergence must be"):
        t.set_divergence("approx")
    assert t.divergence == "exact"


def test_divergence_estimator_is_switchable_after_loading(tmp_path):
    torch.manual_seed(11)
    flow = pf.CNF(2, hidden_dims=(16,), divergence="exact", solver=tol(1e-7))
    perturb(flow, 0.5)
    path = tmp_path / "cnf.pt"
    flow.save(path)
    again = pf.load(path)
    assert not any("divergence" in k or "probe" in k for k in again.state_dict())
    x = torch.randn(2, 2)
    with torch.no_grad():
        exact = again.log_prob(x)
        again.transform.divergence = "hutchinson"
        n = 3000
        lp = again.log_prob(x.repeat(n, 1)).reshape(n, 2)
    se = lp.std(0) / math.sqrt(n)
    assert (se > 0).all() and ((lp.mean(0) - exact).abs() < 4 * se).all()


def test_variational_guide_samples_and_scores_in_one_solve(monkeypatch):
    torch.manual_seed(12)
    flow = pf.CNF(2, hidden_dims=(8,), solver=tol(1e-7))
    perturb(flow, 0.5)
    solves = []
    solve = flow.transform._solve
    monkeypatch.setattr(
        flow.transform, "_solve", lambda *a, **k: solves.append(1) or solve(*a, **k)
    )
    x, lp = flow.rsample_and_log_prob((6,))
    assert len(solves) == 1
    lp.sum().backward()
    assert all(p.grad is not None for p in flow.parameters())
    with torch.no_grad():
        rescored = flow.log_prob(x.detach().clone())  # a separate data -> base solve
    torch.testing.assert_close(rescored, lp.detach(), atol=1e-4, rtol=0)


def test_pyro_autoguide_with_continuous_flow_helper():
    def model():
        pyro.sample("z", dist.Normal(torch.tensor([1.0, -1.0]), 0.5).to_event(1))

    guide = AutoNormalizingFlow(
        model, partial(iterated, 1, continuous_flow, hidden_dims=(8,), solver=tol(1e-4))
    )
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step() for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)


def test_augmented_cnf_is_a_distribution_over_the_data_dimensions(tmp_path):
    flow = pf.CNF(2, hidden_dims=(8,), augment_dim=2)
    d = flow()
    assert flow.event_shape == d.event_shape == (2,) and flow.transform.event_shape == (4,)
    assert d.sample((3,)).shape == (3, 2)
    x, lp = d.rsample_and_log_prob((5,))
    assert x.shape == (5, 2) and lp.shape == (5,)
    # identity flow and q(a|x) = N(0, I): the bound equals log N(x; 0, I)
    x = torch.randn(4, 2)
    torch.testing.assert_close(d.log_prob(x), dist.Normal(0.0, 1.0).log_prob(x).sum(-1))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        d.log_prob(torch.randn(4, 4))
    perturb(flow)
    flow.save(tmp_path / "augmented.pt")
    again = pf.load(tmp_path / "augmented.pt")
    assert again.augment_dim == 2 and again.event_shape == (2,)
    bounds = []
    for f in (flow, again):  # the same bound estimate from the same draws of a
        torch.manual_seed(0)
        bounds.append(f.log_prob(x))
    torch.testing.assert_close(*bounds)


def test_augmented_log_prob_is_a_lower_bound_that_tightens_with_samples():
    torch.manual_seed(13)
    flow = pf.CNF(1, hidden_dims=(16,), augment_dim=1, solver=tol(1e-6)).double()
    perturb(flow.transform, 0.5)
    perturb(flow.auxiliary, 0.1)
    x = torch.tensor([[0.3], [-1.0]], dtype=F64)
    with torch.no_grad():
        # log p(x) = log int p(x, a) da, by the trapezoid rule on a wide grid
        a = torch.linspace(-12, 12, 601, dtype=F64)
        pts = torch.cat((x.expand(len(a), 2, 1), a[:, None, None].expand(len(a), 2, 1)), -1)
        joint = flow().joint.log_prob(pts)
        log_marginal = torch.logsumexp(joint, 0) + math.log(float(a[1] - a[0]))
        n = 500
        bounds = {}
        for s in (1, 32):
            flow.num_bound_samples = s
            lb = flow.log_prob(x.repeat(n, 1)).reshape(n, 2)
            bounds[s] = (lb.mean(0), lb.std(0) / math.sqrt(n))
    gap1 = log_marginal - bounds[1][0]
    gap32 = log_marginal - bounds[32][0]
    assert (gap1 > 4 * bounds[1][1]).all()  # strictly below: q(a|x) is not the posterior
    assert (gap32 > -4 * bounds[32][1]).all()  # still a bound
    assert (gap32 < gap1 / 4).all()  # and much tighter


def test_a_model_file_written_with_the_old_solver_keywords_still_loads(tmp_path):
    import json

    from pyroflows.flows import _checksum

    flow = pf.CNF(2, hidden_dims=(8,), solver={"rtol": 1e-4, "atol": 1e-4})
    flow.save(tmp_path / "new.pt")
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    config = json.loads(payload["config"])
    del config["solver"]  # as written before solver objects: CNF(2, (8,), rtol=..., ...)
    config.update(rtol=1e-4, atol=1e-4, eval_method="rk4", eval_step_size=0.25, eval_rtol=None)
    payload["config"] = json.dumps(config)
    payload["checksum"] = _checksum(payload)  # a consistent file, as the old version wrote it
    torch.save(payload, tmp_path / "old.pt")
    with pytest.warns(FutureWarning, match=r"solver= and eval_solver=.*save the model again"):
        again = pf.load(tmp_path / "old.pt")
    assert again.transform.train_solver == ODESolver(rtol=1e-4, atol=1e-4)
    assert again.transform.eval_solver == ODESolver("rk4", rtol=1e-4, atol=1e-4, step_size=0.25)
    x = torch.randn(3, 2)
    torch.testing.assert_close(again.log_prob(x), flow.log_prob(x))  # the same weights
    with pytest.raises(TypeError, match="only, not also"):
        pf.CNF(2, hidden_dims=(8,), solver=ODESolver(), rtol=1e-4)
