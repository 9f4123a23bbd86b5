"""pf.fit_svi: conjugate posteriors, the sticking-the-landing estimator, annealing, rollback,
checkpoints."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyroflows as pf
from pyroflows.infer import TraceSTL_ELBO, anneal_beta

X = torch.tensor([0.3, 1.2, -0.4, 0.9, 1.8, 0.2, 1.1, 0.7, -0.1, 1.4])
POST_LOC = float(X.sum() / (len(X) + 1))  # z ~ N(0, 1), x_i | z ~ N(z, 1)
POST_SCALE = 1 / math.sqrt(len(X) + 1)


def model(x):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def gaussian_guide(x):
    loc = pyro.param("loc", torch.tensor(POST_LOC))
    scale = pyro.param("scale", torch.tensor(POST_SCALE), constraint=dist.constraints.positive)
    pyro.sample("z", dist.Normal(loc, scale))


@pytest.mark.parametrize("loss", ["elbo", "stl"])
def test_autonormal_reaches_the_analytic_posterior(loss):
    guide = AutoNormal(model)
    h = pf.fit_svi(model, guide, X, steps=300, lr=0.05, loss=loss, lr_schedule="cosine", seed=0,
                   progress=False)  # fmt: skip
    assert h.steps == 300 and not h.diverged and h.elbo[-1] == -h.train_loss[-1]
    loc, scale = (float(v.detach()) for v in guide._get_loc_and_scale("z"))
    tol = 1e-3 if loss == "stl" else 0.05  # STL's gradient vanishes at the optimum: no jitter
    assert loc == pytest.approx(POST_LOC, abs=tol)
    assert scale == pytest.approx(POST_SCALE, rel=2 * tol)


def _grads(elbo, n=200):
    pyro.clear_param_store()
    gaussian_guide(X)  # create the parameters at the exact posterior
    params = [pyro.param("loc").unconstrained(), pyro.param("scale").unconstrained()]
    out = []
    for _ in range(n):
        loss = elbo.differentiable_loss(model, gaussian_guide, X)
        out.append(torch.stack(torch.autograd.grad(loss, params)))
    return torch.stack(out)


def test_stl_has_zero_variance_at_the_exact_posterior():
    stl, plain = _grads(TraceSTL_ELBO()), _grads(Trace_ELBO())
    assert float(stl.var(0).max()) < 1e-9 and float(stl.abs().max()) < 1e-4
    assert float(plain.var(0).min()) > 1e-2
    vec = _grads(TraceSTL_ELBO(num_particles=8, vectorize_particles=True), n=20)
    assert float(vec.abs().max()) < 1e-4


def test_stl_keeps_the_elbo_value_with_subsampling():
    def sub_model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), subsample_size=4) as idx:
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])

    guide = AutoNormal(sub_model)
    guide(X)  # set the guide up first (that traces the model, consuming randomness)
    values = []
    for elbo in (Trace_ELBO(), TraceSTL_ELBO()):
        pyro.set_rng_seed(3)
        values.append(float(elbo.differentiable_loss(sub_model, guide, X).detach()))
    assert values[0] == values[1]  # same draws (re-scoring consumes no randomness), same value


def test_anneal_tempers_every_model_site_with_the_scheduled_beta():
    def point_model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(0.0))

    def point_guide():
        pyro.sample("z", dist.Delta(pyro.param("a", torch.tensor(0.5))))  # log q = 0

    h = pf.fit_svi(point_model, point_guide, steps=15, anneal=10, lr=0.0, progress=False)
    log_p = float(dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.5)) * 2)  # prior + likelihood
    assert h.beta == [anneal_beta(k, 10) for k in range(15)]
    assert h.beta[0] == 0.01 and h.beta[10:] == [1.0] * 5
    assert h.train_loss == pytest.approx([-b * log_p for b in h.beta], rel=1e-6)
    assert anneal_beta(5, 0) == 1.0


def test_a_nan_parameter_is_rolled_back():
    def corrupt(step, history, guide):
        if step == 5:
            with torch.no_grad():
                pyro.param("loc").unconstrained().fill_(float("nan"))

    with pytest.warns(RuntimeWarning, match="(?s)step 6: ValueError.*invalid values.*rolled back"):
        h = pf.fit_svi(model, gaussian_guide, X, steps=20, callbacks=corrupt, seed=0,
                       progress=False)  # fmt: skip
    assert h.rollbacks == 1 and math.isnan(h.train_loss[6]) and not h.diverged
    assert math.isfinite(float(pyro.param("loc").detach()))


def test_checkpoint_resume_is_bit_identical(tmp_path):
    opts = dict(steps=30, lr=0.05, num_particles=2, loss="stl", seed=0, checkpoint_every=4,
                progress=False)  # fmt: skip
    full = AutoNormal(model)
    h_full = pf.fit_svi(model, full, X, checkpoint=tmp_path / "a.pt", **opts)

    def interrupt(step, history, guide):
        if step == 17:
            raise KeyboardInterrupt

    pyro.clear_param_store()
    with pytest.raises(KeyboardInterrupt):
        pf.fit_svi(model, AutoNormal(model), X, checkpoint=tmp_path / "b.pt", callbacks=interrupt,
                   **opts)  # fmt: skip
    pyro.clear_param_store()  # as in a new process
    part = AutoNormal(model)
    h_part = pf.fit_svi(model, part, X, checkpoint=tmp_path / "b.pt", resume=True, **opts)
    assert h_part.train_loss == h_full.train_loss
    for a, b in zip(full._get_loc_and_scale("z"), part._get_loc_and_scale("z"), strict=True):
        assert torch.equal(a, b)


def test_options_and_errors():
    h = pf.fit_svi(model, AutoNormal(model), X, steps=5, loss=Trace_ELBO(), progress=False,
                   final_check=False)  # fmt: skip
    assert h.steps == 5 and h.beta == []
    with pytest.raises(ValueError, match="loss must be"):
        pf.fit_svi(model, AutoNormal(model), X, steps=5, loss="renyi", progress=False)
    with pytest.raises(ValueError, match="nothing to train"):
        pf.fit_svi(model, lambda x: pyro.sample("z", dist.Normal(0.0, 1.0)), X, steps=5,
                   progress=False)  # fmt: skip


def test_particles_fall_back_to_a_loop_when_the_model_cannot_be_vectorised():
    def scalar_model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        shift = 0.0 if float(z.detach()) > -1e6 else 1.0  # Python control flow on a sample
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z + shift, 1.0), obs=x)

    guide = AutoNormal(scalar_model)
    with pytest.warns(UserWarning, match="looping over them"):
        h = pf.fit_svi(scalar_model, guide, X, steps=150, lr=0.1, num_particles=2, loss="stl",
                       seed=0, progress=False)  # fmt: skip
    assert h.steps == 150 and not h.diverged
    loc, scale = (v.detach() for v in guide._get_loc_and_scale("z"))
    assert float(loc) == pytest.approx(POST_LOC, abs=0.05)
    assert float(scale) == pytest.approx(POST_SCALE, rel=0.1)


def test_pyro_optimisers_are_accepted():
    h = pf.fit_svi(model, AutoNormal(model), X, steps=5, optimizer=pyro.optim.Adam({"lr": 0.2}),
                   progress=False, final_check=False)  # fmt: skip
    assert h.lr == [0.2] * 5
    sched = pyro.optim.ExponentialLR(
        {"optimizer": torch.optim.Adam, "optim_args": {}, "gamma": 0.9}
    )
    with pytest.raises(TypeError, match="lr_schedule"):
        pf.fit_svi(model, AutoNormal(model), X, steps=5, optimizer=sched, progress=False)


def test_stl_zero_variance_with_an_auxiliary_latent_guide():
    """AutoContinuous guides (like pf.AutoFlow) sample one auxiliary latent and unpack it with
    Delta sites; STL must drop the score term there too."""
    from pyro.infer.autoguide import AutoMultivariateNormal
    from torch.distributions import transform_to

    a = torch.tensor([1.0, -0.5])

    def model2(x):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z @ a, 1.0), obs=x)

    cov = torch.linalg.inv(torch.eye(2) + len(X) * torch.outer(a, a))  # the exact posterior
    chol = torch.linalg.cholesky(cov)
    guide = AutoMultivariateNormal(model2)
    guide(X)
    exact = {"loc": cov @ a * X.sum(), "scale": chol.diagonal(), "scale_tril": chol / chol.diagonal()[:, None]}  # fmt: skip
    constraints = pyro.get_param_store().get_state()["constraints"]
    with torch.no_grad():
        for name, value in exact.items():
            full = f"AutoMultivariateNormal.{name}"
            pyro.param(full).unconstrained().copy_(transform_to(constraints[full]).inv(value))
    params = [pyro.param(f"AutoMultivariateNormal.{n}").unconstrained() for n in exact]

    def grads(elbo):
        out = [torch.autograd.grad(elbo.differentiable_loss(model2, guide, X), params) for _ in range(100)]  # fmt: skip
        return torch.stack([torch.cat([g.reshape(-1) for g in gs]) for gs in out])

    assert float(grads(TraceSTL_ELBO()).var(0).max()) < 1e-9
    assert float(grads(Trace_ELBO()).var(0).max()) > 1e-1


# ---- STL on flow guides: no inverse (issue 10 item 11) -----------------------------------------


def _flow_model(x):
    a = pyro.sample("a", dist.Normal(torch.zeros(3, dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(a.sum(-1, keepdim=True), 1.0), obs=x)


def _perturbed_flow_guide(flow, dtype=torch.float32, **kw):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pf.AutoFlow(_flow_model, flow, init_scale=0.7, **kw)
    guide(X.to(dtype))
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return guide


@pytest.mark.parametrize("num_particles", [1, 3])
def test_stl_with_an_iaf_guide_never_runs_the_sequential_inverse(monkeypatch, num_particles):
    guide = _perturbed_flow_guide(pf.IAF, num_layers=2, hidden_dims=(8,))

    def boom(*args, **kwargs):
        raise AssertionError("sequential inverse was run")

    for t in guide.flow.transforms:
        monkeypatch.setattr(t, "inverse_and_log_det", boom)
    elbo = TraceSTL_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1)
    elbo.differentiable_loss(_flow_model, guide, X).backward()
    h = pf.fit_svi(_flow_model, guide, X, steps=3, loss="stl", num_particles=num_particles,
                   progress=False, final_check=False)  # fmt: skip
    assert h.steps == 3 and h.rollbacks == 0


@pytest.mark.parametrize(
    "flow",
    [
        pf.IAF,
        pf.RealNVP,
        pf.Planar,
        lambda d: pf.IAF(d, num_layers=2, hidden_dims=(8,), base="diag"),
    ],
    ids=["IAF", "RealNVP", "Planar", "IAF-learnable-base"],
)
@pytest.mark.parametrize("num_particles", [1, 3])
def test_inverse_free_stl_gradient_equals_the_replayed_one(monkeypatch, flow, num_particles):
    """The implicit-function score (forward passes only) equals the score of replaying the guide
    at the detached sample (which inverts the flow), parameter by parameter, in float64."""
    from pyroflows.infer import svi

    kw = {"num_layers": 2, "hidden_dims": (8,)} if flow in (pf.IAF, pf.RealNVP) else {}
    guide = _perturbed_flow_guide(flow, torch.float64, **kw)
    x = X.double()
    params = list(guide.parameters())

    def grads(max_dim):
        monkeypatch.setattr(svi, "STL_JACOBIAN_MAX_DIM", max_dim)
        pyro.set_rng_seed(1)
        elbo = TraceSTL_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1)
        loss = elbo.differentiable_loss(_flow_model, guide, x)
        return loss.detach(), torch.autograd.grad(loss, params)

    (loss_replayed, replayed), (loss_fast, fast) = grads(0), grads(1024)
    assert float(loss_fast) == float(loss_replayed)
    for a, b in zip(fast, replayed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    # and it is not the plain ELBO gradient (the score term really is dropped)
    pyro.set_rng_seed(1)
    plain = Trace_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1)
    g = torch.autograd.grad(plain.differentiable_loss(_flow_model, guide, x), params)
    assert max(float((a - b).abs().max()) for a, b in zip(fast, g, strict=True)) > 1e-3


# ---- one optimiser update per distinct tensor (issue 13) ---------------------------------------


def test_every_parameter_gets_one_update_per_step_with_pyro_aliases():
    """Pyro's AutoIAFNormal registers its first layer's weight twice in the param store
    (``_prototype_tensor`` and ``transform...weight``): one Adam step must move each tensor by
    lr * sign(grad) (twice that if an alias were updated twice)."""
    from pyro.infer.autoguide import AutoIAFNormal

    def model3():
        pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    pyro.clear_param_store()
    guide = AutoIAFNormal(model3, num_transforms=2)
    guide()
    store = pyro.get_param_store()
    tensors = [value.unconstrained() for _, value in store.items()]
    assert len({id(t) for t in tensors}) < len(tensors)  # the alias this test is about
    before = {id(t): t.detach().clone() for t in tensors}
    lr = 1e-3
    pf.fit_svi(model3, guide, steps=1, lr=lr, seed=0, progress=False, final_check=False)
    for t in tensors:
        moved = (t.detach() - before[id(t)]).abs()
        assert float(moved.max()) == pytest.approx(lr, rel=1e-3)  # first Adam step: lr * sign(g)


# ---- the final check (issue 13) ---------------------------------------------------------------


def test_final_check_reports_psis_and_warns_on_a_guide_it_cannot_trust():
    pyro.clear_param_store()
    good = pf.fit_svi(model, AutoNormal(model), X, steps=100, lr=0.1, seed=0, progress=False,
                      num_check_samples=500)  # fmt: skip
    assert good.final_check.verdict == "good" and good.final_check.num_samples == 500
    assert good.message == ""

    def narrow(x):  # a fixed guide far too narrow for the posterior: heavy-tailed weights
        pyro.sample("z", dist.Normal(pyro.param("m", torch.tensor(POST_LOC)), 0.02 * POST_SCALE))

    pyro.clear_param_store()
    with pytest.warns(RuntimeWarning, match="unreliable"):
        bad = pf.fit_svi(model, narrow, X, steps=2, lr=1e-6, seed=0, progress=False)
    assert bad.final_check.k_hat > 0.7 and "k-hat" in bad.message
    off = pf.fit_svi(model, narrow, X, steps=2, lr=1e-6, progress=False, final_check=False)
    assert off.final_check is None and off.message == ""
    with pytest.raises(ValueError, match="num_check_samples"):
        pf.fit_svi(model, narrow, X, steps=2, progress=False, num_check_samples=1)


def test_a_fit_that_stalls_says_so():
    def stuck(x):  # lr far too small to move: the ELBO cannot improve
        loc = pyro.param("stuck_loc", torch.tensor(-3.0))
        pyro.sample("z", dist.Normal(loc, POST_SCALE))

    pyro.clear_param_store()
    with pytest.warns(RuntimeWarning, match="stalled: the ELBO did not improve"):
        h = pf.fit_svi(model, stuck, X, steps=60, lr=1e-9, seed=0, progress=False,
                       num_particles=16)  # fmt: skip
    assert "did not improve" in h.message


def test_rollbacks_that_halve_the_lr_repeatedly_are_reported():
    calls = {"n": 0}

    def flaky(x):  # NaN loss on 3 of the first steps (rolled back, lr halved each time)
        calls["n"] += 1
        loc = pyro.param("flaky_loc", torch.tensor(0.0))
        bad = calls["n"] in (3, 4, 6)
        pyro.sample("z", dist.Normal(loc * (math.nan if bad else 1.0), POST_SCALE))

    pyro.clear_param_store()
    with pytest.warns(RuntimeWarning, match="halved the learning rate"):
        h = pf.fit_svi(model, flaky, X, steps=20, lr=0.1, seed=0, progress=False,
                       num_check_samples=100)  # fmt: skip
    assert h.rollbacks == 3 and not h.diverged
    assert "3 rolled-back steps halved the learning rate to 0.0125" in h.message
