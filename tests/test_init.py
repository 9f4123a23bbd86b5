"""The last conditioner layer's initialisation (``zero_init``): per family, and in guides."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyroflows as pf
from pyroflows.nn import MADE
from pyroflows.transforms import Coupling, MaskedAutoregressive

#: each preset's default, as measured at the shipped width (docs/benchmarks.md, "The last layer's
#: initialisation, per family"): True is the identity start (zero last layers)
DEFAULT_ZERO_INIT = {
    "MAF": (pf.MAF, True),
    "IAF": (pf.IAF, True),
    "RealNVP": (pf.RealNVP, False),
    "NICE": (pf.NICE, True),
    "NSF": (pf.NSF, True),
}
LOG_N01_AT_ZERO = -math.log(2 * math.pi)  # log N(0; 0, I) in 2-D


def is_identity(flow: pf.Flow, dim: int = 3) -> bool:
    """Whether ``flow`` is the standard normal (its transforms the identity) on random points."""
    x = 2 * torch.randn(7, dim)
    exact = dist.Normal(0.0, 1.0).log_prob(x).sum(-1)
    return torch.allclose(flow.log_prob(x), exact, atol=1e-6)


@pytest.mark.parametrize("family", sorted(DEFAULT_ZERO_INIT))
def test_each_preset_starts_as_measured_and_either_start_can_be_chosen(family):
    cls, default = DEFAULT_ZERO_INIT[family]
    kw = {"num_layers": 2, "hidden_dims": (8,)}
    torch.manual_seed(0)
    assert is_identity(cls(3, **kw)) is default
    assert is_identity(cls(3, zero_init=True, **kw))
    assert not is_identity(cls(3, zero_init=False, **kw))


def test_realnvp_starts_at_a_random_map_but_its_guide_at_the_identity():
    torch.manual_seed(0)
    flow = pf.RealNVP(2, num_layers=2, hidden_dims=(8,))
    lp = flow.log_prob(torch.zeros(2)).item()
    assert abs(lp - LOG_N01_AT_ZERO) > 1e-3  # -1.8379 is N(0, I): not what the density starts at

    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    pyro.clear_param_store()
    guide = pf.AutoFlow(model, pf.RealNVP, num_layers=2, hidden_dims=(8,))
    guide()  # builds the flow
    assert guide.flow.config["zero_init"] is True
    assert guide.flow.log_prob(torch.zeros(2)).item() == pytest.approx(LOG_N01_AT_ZERO, abs=1e-6)
    assert is_identity(guide.flow, 2)


@pytest.mark.parametrize("family", ["MAF", "NSF"])
def test_a_guide_can_still_ask_for_a_random_start(family):
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    pyro.clear_param_store()
    cls = DEFAULT_ZERO_INIT[family][0]
    guide = pf.AutoFlow(model, cls, num_layers=2, hidden_dims=(8,), zero_init=False)
    guide()
    assert guide.flow.config["zero_init"] is False and not is_identity(guide.flow)


def test_a_random_start_keeps_made_autoregressive_and_couplings_invertible():
    torch.manual_seed(0)
    made = MADE(3, (16,), num_params=2, order=[2, 0, 1], zero_init=False)
    x = torch.randn(3)
    out = made(x)
    assert (out != 0).all()
    jac = torch.autograd.functional.jacobian(lambda v: made(v)[0], x)  # d mu_i / d x_j
    degrees = made.degrees
    allowed = degrees[None, :] < degrees[:, None]  # input j precedes output i in the order
    assert (jac[~allowed] == 0).all() and (jac[allowed] != 0).any()

    t = MaskedAutoregressive(3, hidden_dims=(16,), zero_init=False)
    assert (t.conditioner(x) != 0).any()
    c = Coupling(4, hidden_dims=(16,), zero_init=False)
    x = torch.randn(5, 4)
    y = c(x)
    assert torch.equal(y[:, :2], x[:, :2]) and not torch.allclose(y[:, 2:], x[:, 2:])
    c.clear_cache()
    torch.testing.assert_close(c.inv(y), x)
