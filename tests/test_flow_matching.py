"""Flow matching: the regression target, the time convention, minibatch OT pairing, and that a
flow-matching CNF is a full distribution with the ODE likelihood."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import pyroflows as pf
from pyroflows.datasets import toy
from pyroflows.infer.flow_matching import flow_matching_loss, ot_pair


@pytest.mark.parametrize(("sigma_min", "t1"), [(0.0, 1.0), (0.1, 1.0), (0.0, 2.0)])
def test_zero_field_loss_is_the_second_moment_of_the_target_velocity(sigma_min, t1):
    """With f = 0 the loss is E||x1 - (1 - sigma_min) x0||^2 / (t1 - t0)^2, x0 ~ N(0, I)."""
    torch.manual_seed(0)
    flow = pf.CNF(2, hidden_dims=(8,), t1=t1)  # zero-initialised last layer: f = 0
    n = 20000
    x1 = torch.randn(n, 2, dtype=torch.float64) * 0.5 + torch.tensor(
        [2.0, -1.0], dtype=torch.float64
    )
    flow = flow.double()
    loss = flow_matching_loss(flow, x1, sigma_min=sigma_min)
    shrink = 1 - sigma_min
    m2 = x1.pow(2).sum(-1).mean()
    expected = (m2 + shrink**2 * 2) / t1**2
    # variance of one term: 4 shrink^2 ||x1||^2 (cross term) + 2 D shrink^4 (chi-square)
    se = math.sqrt(float(4 * shrink**2 * m2 + 4 * shrink**4) / n) / t1**2
    assert abs(float(loss.detach()) - float(expected)) < 4 * se


@pytest.mark.parametrize(("power", "mean"), [(1.0, 1 / 2), (2.0, 2 / 3), (0.5, 1 / 3)])
def test_time_power_sets_the_distribution_of_path_times(power, mean):
    """s = 1 - (1 - u)^k has mean k / (k + 1); the field sees t0 + s (t1 - t0)."""
    torch.manual_seed(6)
    flow = pf.CNF(2, hidden_dims=(8,), t0=1.0, t1=3.0)
    times = []
    flow.transform.vector_field.register_forward_pre_hook(lambda m, args: times.append(args[0]))
    flow_matching_loss(flow, torch.randn(40000, 2), time_power=power)
    s = (times[0] - 1.0) / 2.0
    assert float(s.min()) >= 0 and float(s.max()) <= 1
    assert abs(float(s.mean()) - mean) < 0.01  # standard error < 0.0015
    with pytest.raises(ValueError, match="time_power"):
        flow_matching_loss(flow, torch.randn(4, 2), time_power=0.0)


def test_ot_pairing_is_the_optimal_assignment():
    torch.manual_seed(1)
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2)
    paired = ot_pair(x0, x1)
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, x0.tolist()))

    def cost(p):
        return float((p - x1).pow(2).sum())

    best = min(cost(x0[list(perm)]) for perm in itertools.permutations(range(6)))
    assert cost(paired) == pytest.approx(best, rel=1e-6)


def test_ot_pairing_lowers_the_loss_on_the_same_draws():
    x1 = torch.randn(256, 2) * 0.5  # OT cost ~ 2 (1 - 0.5)^2 = 0.5, independent pairs: 2.5
    flow = pf.CNF(2, hidden_dims=(8,))
    torch.manual_seed(2)
    independent = flow_matching_loss(flow, x1)
    torch.manual_seed(2)  # the same noise and times, re-paired
    paired = flow_matching_loss(flow, x1, ot_pairing=True)
    assert float(paired.detach()) < 0.5 * float(independent.detach())


def _train(flow, x, context=None, steps=300, lr=1e-2, **kwargs):
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = flow_matching_loss(flow, x, context, **kwargs)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_fm_cnf_learns_a_gaussian_in_the_sampling_direction_with_exact_likelihood():
    """Trained with t0 at the base and t1 at the data, base -> data sampling reaches the data,
    and log_prob (an ODE solve) matches the true density."""
    torch.manual_seed(3)
    mean, std = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.5])
    target = torch.distributions.Normal(mean, std)
    flow = pf.CNF(2, hidden_dims=(32, 32), solver={"rtol": 1e-5, "atol": 1e-5})
    history = pf.fit(
        flow,
        target.sample((4096,)),
        steps=600,
        batch_size=256,
        lr=5e-3,
        lr_schedule="cosine",
        objective="flow_matching",
        val_fraction=0.0,
        progress=False,
        seed=0,
    )
    assert history.train_loss[-1] < 0.7 * history.train_loss[0]
    flow.eval()
    samples = flow.sample((2000,))
    assert (samples.mean(0) - mean).abs().max() < 0.15
    assert (samples.std(0) / std - 1).abs().max() < 0.1
    test = target.sample((1000,))
    with torch.no_grad():
        lp = flow.log_prob(test)
    truth = target.log_prob(test).sum(-1)
    assert float((truth - lp).mean()) < 0.05  # estimates KL(target || flow) >= 0
    assert float((lp - truth).abs().mean()) < 0.3


def test_conditional_fm_loss_decreases_and_uses_the_context():
    torch.manual_seed(4)
    c = torch.randint(0, 2, (512, 1)).float()
    x = torch.randn(512, 2) * 0.3 + (4 * c - 2)  # two clusters selected by the context
    flow = pf.CNF(2, hidden_dims=(32,), context_dim=1)
    losses = _train(flow, x, c, steps=150)
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:5]) / 5
    with torch.no_grad():
        near = flow.sample((200,), torch.ones(1)).mean(0)
        far = flow.sample((200,), torch.zeros(1)).mean(0)
    assert (near > 1).all() and (far < -1).all()


def test_augmented_cnf_trains_with_flow_matching():
    torch.manual_seed(5)
    flow = pf.CNF(2, hidden_dims=(16,), augment_dim=2)
    x = torch.randn(256, 2) + 3
    losses = _train(flow, x, steps=60)
    assert losses[-1] < losses[0]
    assert flow.transform.vector_field.layers[0].linear.weight.grad.shape == (16, 4)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda f, x: flow_matching_loss(pf.MAF(2, num_layers=1, hidden_dims=(8,)), x),
            TypeError,
            "continuous flow",
        ),
        (lambda f, x: flow_matching_loss(f, x[:, :1]), ValueError, r"shape \(\.\.\., 2\)"),
        (lambda f, x: flow_matching_loss(f, x, sigma_min=1.0), ValueError, "sigma_min"),
        (lambda f, x: flow_matching_loss(f, x, torch.ones(4, 1)), ValueError, "unconditional"),
        (
            lambda f, x: flow_matching_loss(pf.CNF(2, hidden_dims=(8,), context_dim=1), x),
            ValueError,
            "pass a context",
        ),
        (
            lambda f, x: flow_matching_loss(
                pf.CNF(2, hidden_dims=(8,), context_dim=1), x, torch.ones(4, 1), ot_pairing=True
            ),
            ValueError,
            "ot_pairing",
        ),
        (lambda f, x: ot_pair(x, x[:2]), ValueError, "same shape"),
    ],
)
def test_flow_matching_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(pf.CNF(2, hidden_dims=(8,)), torch.randn(4, 2))


#: Flow-matching steps per toy set (3 x 128 network, batches of 1024, cosine learning rate, the
#: default time_power=2): the issue's 0.15-nat margin on all three sets. On this CPU the runs
#: take about 1, 2 and 3 minutes and end near +0.02, +0.11 and +0.06 nats (docs/benchmarks.md,
#: "Continuous flows").
STEPS = {"8gaussians": 10_000, "checkerboard": 20_000, "rings": 30_000}
MARGIN = 0.15


def fm_toy_nll(name: str, steps: int) -> float:
    """Test NLL of a flow-matching CNF trained on toy data set ``name``."""
    torch.manual_seed(0)
    make = toy.TOY_DATASETS[name]
    train, test = make(200_000, seed=0), make(5000, seed=1)
    flow = pf.CNF(2, hidden_dims=(128, 128, 128), solver={"rtol": 1e-5, "atol": 1e-5})
    pf.fit(
        flow,
        train,
        steps=steps,
        batch_size=1024,
        lr=2e-3,
        lr_schedule="cosine",
        objective="flow_matching",
        val_fraction=0.0,
        progress=False,
        seed=0,
    )
    flow.eval()
    with torch.no_grad():
        return float(-flow.log_prob(test).mean())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STEPS))
def test_fm_cnf_reaches_near_optimal_nll_on_toy_data(name):
    nll = fm_toy_nll(name, STEPS[name])
    assert nll < toy.OPTIMAL_NLL[name] + MARGIN, (name, nll, nll - toy.OPTIMAL_NLL[name])
