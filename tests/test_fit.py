"""pf.fit: maximum likelihood on known optima, data checks, objectives, regularisation (the loop
itself, shared with fit_svi, is tested in test_engine.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.optim.lr_scheduler import StepLR

import pyroflows as pf
from pyroflows.transforms import ActNorm, ElementwiseAffine, LULinear

SIGMA = torch.tensor([[2.0, 0.6], [0.6, 0.5]])
MU = torch.tensor([1.0, -2.0])


def gaussian(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU + torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(SIGMA).T


def entropy(cov: torch.Tensor) -> float:
    """Differential entropy = the expected NLL of the true density (the NLL optimum)."""
    d = cov.shape[-1]
    return 0.5 * (d * math.log(2 * math.pi * math.e) + float(torch.logdet(cov)))


def linear_flow() -> pf.Flow:
    """A flow that can represent any 2-D Gaussian exactly: y = diag(s) W x + b."""
    return pf.Flow([LULinear(2), ElementwiseAffine(2)], event_shape=(2,))


def state(flow: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in flow.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def all_finite(flow: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in flow.parameters())


# ---- reaching the optimum ------------------------------------------------------------------------


def test_fit_reaches_the_analytic_nll_of_a_gaussian():
    flow = linear_flow()
    h = pf.fit(flow, gaussian(3000, 0), steps=300, lr=0.05, seed=0, progress=False)
    with torch.no_grad():
        test_nll = -float(flow.log_prob(gaussian(20000, 1)).mean())
    assert abs(test_nll - entropy(SIGMA)) < 0.03
    assert abs(h.best_val_loss - entropy(SIGMA)) < 0.15  # 300 held-out rows: noisier
    assert h.steps == 300 and len(h.val_loss) == len(h.val_steps) >= 10
    assert h.train_loss[-1] < h.train_loss[0] - 0.5
    assert not h.diverged and h.rollbacks == 0 and h.final_lr == pytest.approx(0.05)


def test_numpy_float64_input_trains_a_float32_flow_and_is_not_modified():
    x = gaussian(600, 2).double().numpy()
    before = x.copy()
    flow = linear_flow()
    h = pf.fit(flow, x, steps=30, lr=0.05, seed=0, progress=False)
    assert np.array_equal(x, before)
    assert next(flow.parameters()).dtype == torch.float32
    assert all(math.isfinite(v) for v in h.train_loss) and h.train_loss[-1] < h.train_loss[0]


def test_float64_flow_gets_float64_data():
    seen = []

    def objective(flow, x, c):
        seen.append(x.dtype)
        return -flow.log_prob(x).mean()

    pf.fit(linear_flow().double(), gaussian(100, 0), steps=2, objective=objective, progress=False)
    assert set(seen) == {torch.float64}


def test_image_shaped_data_reaches_the_analytic_nll():
    shape = (2, 4, 4)
    flow = pf.Flow(
        [ActNorm(2, event_shape=shape), LULinear(2, event_shape=shape)], event_shape=shape
    )
    pixels = gaussian(800 * 16, 3)  # every pixel an independent 2-channel Gaussian
    x = pixels.reshape(800, 4, 4, 2).permute(0, 3, 1, 2).contiguous()
    h = pf.fit(flow, x, steps=250, lr=0.03, batch_size=128, seed=0, progress=False)
    with torch.no_grad():
        y = gaussian(4000 * 16, 4).reshape(4000, 4, 4, 2).permute(0, 3, 1, 2)
        test_nll = -float(flow.log_prob(y).mean())
    assert abs(test_nll - 16 * entropy(SIGMA)) < 0.2  # 16 pixels: 16x the 2-D optimum
    assert not h.diverged


def test_conditional_flow_learns_from_its_context():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(1500, 1, generator=g)
    x = torch.cat([2 * c, -c], 1) + 0.3 * torch.randn(1500, 2, generator=g)
    flow = pf.MAF(2, num_layers=2, hidden_dims=(16,), context_dim=1)
    h = pf.fit(flow, x, context=c.numpy(), steps=300, lr=1e-2, seed=0, progress=False)
    # the residual noise has NLL 2*(0.5*log(2*pi*e*0.09)) = 0.43; the marginal of x about 2.9
    assert h.best_val_loss < 1.0


# ---- checks before training -----------------------------------------------------------------------


def test_nan_rows_are_counted_and_located():
    x = gaussian(1000, 0)
    x[5, 0], x[17, 1], x[902, 0] = float("nan"), float("inf"), -float("inf")
    with pytest.raises(ValueError, match=r"data has 3 rows with NaN/Inf \(rows 5, 17, 902\)"):
        pf.fit(linear_flow(), x, steps=1, progress=False)


def test_wrong_shapes_and_contexts_are_reported():
    flow = pf.MAF(8, num_layers=1, hidden_dims=(8,))
    with pytest.raises(ValueError, match=r"Expected data shape \(N, 8\); got \(100, 7\)"):
        pf.fit(flow, torch.randn(100, 7), steps=1, progress=False)
    with pytest.raises(ValueError, match="do not pass context"):
        pf.fit(flow, torch.randn(100, 8), context=torch.randn(100, 2), steps=1, progress=False)
    cond = pf.MAF(2, num_layers=1, hidden_dims=(8,), context_dim=3)
    with pytest.raises(ValueError, match=r"context_dim=3\); pass context"):
        pf.fit(cond, torch.randn(50, 2), steps=1, progress=False)
    with pytest.raises(ValueError, match="context has 40 rows but data has 50"):
        pf.fit(cond, torch.randn(50, 2), context=torch.randn(40, 3), steps=1, progress=False)
    with pytest.raises(ValueError, match="context has 60 rows but data has 50"):
        pf.fit(cond, torch.randn(50, 2), context=torch.randn(60, 3), steps=1, progress=False)
    with pytest.raises(ValueError, match="val_context has 10 rows but val_data has 20; they must"):
        pf.fit(cond, torch.randn(50, 2), context=torch.randn(50, 3), val_data=torch.randn(20, 2),
               val_context=torch.randn(10, 3), steps=1, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"Expected context shape \(N, 3\); got \(50, 2\)"):
        pf.fit(cond, torch.randn(50, 2), context=torch.randn(50, 2), steps=1, progress=False)
    bad = torch.randn(50, 3)
    bad[7, 2] = float("nan")
    with pytest.raises(ValueError, match=r"context has 1 row with NaN/Inf \(row 7\)"):
        pf.fit(cond, torch.randn(50, 2), context=bad, steps=1, progress=False)
    with pytest.raises(ValueError, match="channels-first"):
        img = pf.Flow([ActNorm(2, event_shape=(2, 4, 4))], event_shape=(2, 4, 4))
        pf.fit(img, torch.randn(10, 4, 4, 2), steps=1, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 5, "epochs": 1}, "steps or epochs"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"resume": True}, "checkpoint"),
        ({"val_fraction": 0.0, "patience": 3}, "patience needs validation"),
        ({"objective": "likelihood"}, "objective must be"),
        ({"optimizer": "adamm"}, "unknown optimizer"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"regularization": {"kinetic": 1.0}}, "not reported by any module"),
        ({"steps": 0}, "steps must be a whole number"),
        ({"steps": None, "epochs": 0}, "epochs must be a whole number"),
        ({"lr": -1e-3}, "lr must be a finite number"),
        ({"clip_grad": 0.0}, "clip_grad must be None or a positive number"),
        ({"eval_every": 0}, "eval_every must be"),
        ({"patience": 0}, "patience must be"),
        ({"warmup": -1}, "warmup must be a whole number >= 0"),
        ({"warmup": 2.5}, "warmup must be a whole number >= 0"),
        ({"warmup": 3, "lr_schedule": lambda opt: StepLR(opt, 10)}, "brings its own warm-up"),
        # a float where a whole number is meant is refused, never truncated or passed on
        ({"batch_size": 1.5}, r"batch_size must be a whole number >= 1; got 1.5"),
        ({"steps": 2.5}, r"steps must be a whole number >= 1; got 2.5"),
        ({"steps": None, "epochs": 1.5}, r"epochs must be a whole number >= 1; got 1.5"),
        ({"seed": 1.5}, r"seed must be a whole number >= 0; got 1.5"),
        ({"seed": -1}, r"seed must be a whole number >= 0; got -1"),
        ({"eval_every": 1.5}, r"eval_every must be a whole number >= 1; got 1.5"),
        ({"checkpoint_every": 2.5}, r"checkpoint_every must be a whole number >= 1; got 2.5"),
        ({"val_fraction": float("nan")}, r"val_fraction must be a finite number >= 0; got nan"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pf.fit(linear_flow(), gaussian(50, 0), **{"steps": 2, "progress": False, **kwargs})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": "8"}, r"batch_size must be a whole number >= 1; got '8'"),
        ({"batch_size": True}, r"batch_size must be a whole number >= 1; got True"),
        ({"steps": True}, r"steps must be a whole number >= 1; got True"),
        ({"steps": None, "epochs": True}, r"epochs must be a whole number >= 1; got True"),
        ({"lr": "0.1"}, r"lr must be a finite number >= 0; got '0.1'"),
        ({"val_fraction": None}, r"val_fraction must be a finite number >= 0; got None"),
    ],
)
def test_options_of_the_wrong_type_raise_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        pf.fit(linear_flow(), gaussian(50, 0), **{"steps": 2, "progress": False, **kwargs})


def test_whole_floats_and_numpy_integers_are_accepted():
    h = pf.fit(linear_flow(), gaussian(100, 0), steps=1e1, batch_size=np.int64(20), seed=3.0,
               progress=False)  # fmt: skip
    assert h.steps == 10


# ---- validation cadence ---------------------------------------------------------------------------


def test_a_small_table_is_not_validated_at_every_step():
    # 119 rows: 12 held out, 107 in one batch, so an epoch is a single step; the default
    # cadence checks every steps/100 steps (100 checks), not at every step (1000 checks)
    x = gaussian(119, 0)
    h = pf.fit(linear_flow(), x, steps=200, seed=0, progress=False)
    assert h.val_steps == list(range(1, 200, 2))  # every 2 steps: 100 checks
    assert h.best_step in h.val_steps


def test_the_default_cadence_is_once_per_epoch_within_10_to_100_checks():
    from pyroflows.infer.fit import default_eval_every

    # 2000 rows: 1800 train in batches of 256, 7 steps per epoch
    h = pf.fit(linear_flow(), gaussian(2000, 0), steps=100, seed=0, progress=False)
    assert h.val_steps == [*range(6, 100, 7), 99]
    assert default_eval_every(1000, 1) == 10  # at most 100 checks
    assert default_eval_every(1000, 7) == 10
    assert default_eval_every(1000, 40) == 40  # once per epoch
    assert default_eval_every(1000, 5000) == 100  # at least 10 checks
    assert default_eval_every(5, 1) == 1


@pytest.mark.parametrize("schedule", [None, "cosine"])
def test_warmup_ramps_the_learning_rate_linearly(schedule):
    history = pf.fit(
        linear_flow(),
        gaussian(200, 0),
        steps=20,
        lr=0.1,
        warmup=4,
        lr_schedule=schedule,
        batch_size=50,
        val_fraction=0.0,
        seed=0,
        progress=False,
    )
    cosine = [0.5 * (1 + math.cos(math.pi * k / 20)) for k in range(20)]
    ramp = [min(1.0, (k + 1) / 4) for k in range(20)]
    expected = [0.1 * r * (c if schedule else 1.0) for r, c in zip(ramp, cosine, strict=True)]
    assert history.lr == pytest.approx(expected)


def test_non_arrays_are_rejected():
    with pytest.raises(TypeError, match="numpy array"):
        pf.fit(linear_flow(), "data.csv", steps=1, progress=False)
    with pytest.raises(TypeError, match="real numbers"):
        pf.fit(linear_flow(), np.array([["a", "b"]]), steps=1, progress=False)


# ---- objectives, regularisation, options ----------------------------------------------------------


class Penalised(ElementwiseAffine):
    """A layer reporting a penalty and a function-evaluation count, like a CNF."""

    nfe = 7

    def regularization(self) -> dict[str, torch.Tensor]:
        return {"l2": (self.log_scale**2).sum()}


def test_regularization_is_added_to_the_loss_and_recorded():
    x = 3.0 * torch.randn(2000, 1, generator=torch.Generator().manual_seed(0))
    flow = pf.Flow([Penalised(1, shift=False)], event_shape=(1,))
    h = pf.fit(flow, x, steps=400, lr=0.05, batch_size=2000, val_fraction=0.0,
               regularization={"l2": 1.0}, progress=False)  # fmt: skip
    # minimise s + v exp(-2s) / 2 + s^2 (v: the data's second moment): 1 - v exp(-2s) + 2s = 0
    v, lo, hi = float((x**2).mean()), 0.0, 2.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 1 - v * math.exp(-2 * mid) + 2 * mid < 0 else (lo, mid)
    s = float(flow.transforms[0].log_scale.detach())
    assert s == pytest.approx(lo, abs=1e-3) and s < math.log(3.0) - 0.3
    assert len(h.regularization["l2"]) == 400 and h.regularization["l2"][-1] == pytest.approx(
        s**2, abs=1e-3
    )
    assert h.nfe == [7.0] * 400


def test_continuous_flow_reports_its_rnode_penalties_and_solver_cost():
    from pyroflows.transforms import ContinuousFlow

    cnf = ContinuousFlow(
        2, hidden_dims=(8,), regularize=True, solver={"method": "rk4", "step_size": 0.25}
    )
    weights = {"kinetic": 0.1, "jacobian": 0.1}
    h = pf.fit(pf.Flow([cnf], event_shape=(2,)), gaussian(64, 0), steps=3, batch_size=32,
               val_fraction=0.0, regularization=weights, progress=False)  # fmt: skip
    assert sorted(h.regularization) == ["jacobian", "kinetic"]
    assert all(len(v) == 3 and all(map(math.isfinite, v)) for v in h.regularization.values())
    assert h.nfe == [16.0] * 3  # rk4: 4 evaluations per step, 4 steps over [0, 1]


def test_flow_matching_objective_trains_a_continuous_flow():
    from pyroflows.transforms import ContinuousFlow

    flow = pf.Flow([ContinuousFlow(2, hidden_dims=(16,))], event_shape=(2,))
    h = pf.fit(flow, gaussian(400, 0), steps=40, lr=1e-2, eval_every=20, seed=0,
               objective="flow_matching", objective_kwargs={"sigma_min": 0.0}, progress=False)  # fmt: skip
    assert h.steps == 40 and len(h.val_loss) == 2 and all(math.isfinite(v) for v in h.val_loss)
    assert np.mean(h.train_loss[-10:]) < np.mean(h.train_loss[:10])
    with pytest.raises(ValueError, match="objective_kwargs"):
        pf.fit(linear_flow(), gaussian(50, 0), steps=1, objective_kwargs={"a": 1}, progress=False)
