"""Conditional flows use their context (issue 10 item 1: MADE ignored it for the first variable)."""

from __future__ import annotations

import pytest
import torch
from conftest import perturb

import pyroflows as pf
from pyroflows.nn import MADE


@pytest.mark.parametrize("flow_cls", [pf.MAF, pf.IAF])
def test_one_dimensional_conditional_flow_depends_on_its_context(flow_cls):
    flow = flow_cls(1, context_dim=1, hidden_dims=(16, 16))
    perturb(flow)
    x = torch.zeros(3, 1)
    with torch.no_grad():
        lp = flow.log_prob(x, torch.tensor([[-2.0], [0.0], [2.0]]))
    assert lp[0] != lp[1] and lp[1] != lp[2], lp


def test_conditional_made_is_autoregressive_and_starts_at_zero():
    made = MADE(  # a smooth activation: a zero derivative then means no connection
        4, (12, 12), num_params=2, context_dim=3, order=[2, 0, 3, 1], activation=torch.nn.Tanh
    )
    x, c = torch.randn(4), torch.randn(3)
    assert (made(x, c) == 0).all()  # zero last layer: an identity transform at initialisation
    perturb(made)
    jac = torch.autograd.functional.jacobian(lambda v: made(v, c), x)  # (params, out, in)
    position = made.degrees  # 1-based place of each variable in the order
    allowed = position[None, :] < position[:, None]  # output i may see input j iff j precedes i
    assert (jac.abs().amax(0)[~allowed] == 0).all()
    assert (jac.abs().amax(0)[allowed] > 0).all()  # and it does see all of them
    jc = torch.autograd.functional.jacobian(lambda v: made(x, v), c)  # (params, out, context)
    assert (jc.abs().amax(-1) > 0).all()  # every output, the first variable's included


def test_conditional_maf_learns_a_one_dimensional_conditional_density():
    """y = sin(x) + N(0, 0.3^2): the test NLL nears the true 0.22 (no unconditional density gets
    below ~1), and shuffling the contexts ruins it."""
    g = torch.Generator().manual_seed(0)
    x = 6 * torch.rand(1024, 1, generator=g) - 3
    y = torch.sin(x) + 0.3 * torch.randn(1024, 1, generator=g)
    flow = pf.MAF(1, num_layers=2, context_dim=1, hidden_dims=(32, 32))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        loss = -flow.log_prob(y[:768], x[:768]).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        nll = -flow.log_prob(y[768:], x[768:]).mean()
        shuffled = -flow.log_prob(y[768:], x[768:][torch.randperm(256, generator=g)]).mean()
    assert nll < 0.5 and shuffled > nll + 1.0, (float(nll), float(shuffled))
