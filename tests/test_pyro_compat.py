"""pyroflows transforms inside Pyro's own machinery: iterated, AutoNormalizingFlow, conditionals."""

from __future__ import annotations

from functools import partial

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import iterated
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormalizingFlow
from pyro.optim import Adam

from pyroflows import transforms as T


def model():
    z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    pyro.sample("obs", dist.Normal(z.sum(), 0.5), obs=torch.tensor(1.0))


@pytest.mark.parametrize("helper", [T.iaf, T.maf, T.affine_coupling, T.additive_coupling, T.planar])
def test_auto_normalizing_flow_with_iterated_helpers(helper):
    guide = AutoNormalizingFlow(model, partial(iterated, 2, helper))
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step() for _ in range(5)]
    assert all(torch.isfinite(torch.tensor(losses)))
    names = list(pyro.get_param_store().keys())
    assert any("transform" in n for n in names), names


def test_pyro_conditional_transformed_distribution():
    t = T.conditional_affine_coupling(3, 2, hidden_dims=(8,))
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    cond = dist.ConditionalTransformedDistribution(base, [t])
    ctx = torch.randn(4, 2)
    x = cond.condition(ctx).rsample()
    assert x.shape == (4, 3)
    assert cond.condition(ctx).log_prob(x).shape == (4,)


def test_inverse_of_a_transform_is_usable_as_a_pyro_transform():
    maf = T.maf(2, hidden_dims=(8,))
    d = dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1), [maf.inv])
    assert d.log_prob(d.sample((3,))).shape == (3,)
