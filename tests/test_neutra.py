"""NeuTra HMC through ``pf.AutoFlow`` (tutorial 08's path): fit, freeze, NUTS, map back.

``pyro.infer.reparam.NeuTraReparam`` needs an ``AutoContinuous`` guide whose ``get_transform``
and ``get_base_dist`` take no model arguments; these tests run the whole path on small funnels
so that it keeps working.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.infer.reparam import NeuTraReparam

import pyroflows as pf
from pyroflows.datasets import eight_schools, funnel


def _fitted(model, flow=pf.IAF, steps=10):
    guide = pf.AutoFlow(model, flow, num_layers=2, hidden_dims=(8,))
    pf.fit_svi(
        model, guide, steps=steps, num_particles=2, seed=0, progress=False, final_check=False
    )
    return guide


def _nuts(model, warmup=10, samples=6):
    mcmc = MCMC(NUTS(model), warmup_steps=warmup, num_samples=samples, disable_progbar=True)
    mcmc.run()
    return mcmc.get_samples()


@pytest.mark.parametrize("flow", [pf.IAF, pf.RealNVP], ids=["IAF", "RealNVP"])
def test_nuts_through_neutra_on_a_fitted_autoflow(flow):
    model = funnel(2).model
    guide = _fitted(model, flow)
    for p in guide.parameters():
        p.grad = None
    neutra = NeuTraReparam(guide.requires_grad_(False))
    warped = poutine.reparam(model, config=lambda _: neutra)
    latent = _nuts(warped)["v_shared_latent"]
    assert latent.shape == (6, 2) and bool(torch.isfinite(latent).all())
    # batched draws, (chain, draw, D) as the tutorial stacks them, map back site by site
    out = neutra.transform_sample(torch.stack([latent, latent]))
    assert out["v"].shape == (2, 6) and out["x"].shape == (2, 6, 1)
    assert all(bool(torch.isfinite(value).all()) for value in out.values())
    # the map back is the guide's transform followed by the sites' bijections
    torch.testing.assert_close(out["v"][0], guide.get_transform()(latent)[:, 0])
    # sampling took no gradients of the frozen guide's weights
    assert all(p.grad is None and not p.requires_grad for p in guide.parameters())


def test_neutra_potential_is_the_pulled_back_density():
    # what NUTS sees at eps: log p(T(eps)) + log|det J_T(eps)|, and nothing of the base density
    model = funnel(3).model
    guide = _fitted(model)
    neutra = NeuTraReparam(guide.requires_grad_(False))
    warped = poutine.reparam(model, config=lambda _: neutra)
    eps = 2.0 * torch.randn(4, 3)
    for e in eps:
        tr = poutine.trace(poutine.condition(warped, {"v_shared_latent": e})).get_trace()
        z = guide.get_transform()(e)
        jac = torch.autograd.functional.jacobian(lambda u: guide.get_transform()(u), e)
        log_p = (
            dist.Normal(0.0, 3.0).log_prob(z[0])
            + dist.Normal(0.0, (z[0] / 2).exp()).log_prob(z[1:]).sum()
        )
        torch.testing.assert_close(tr.log_prob_sum(), log_p + torch.linalg.slogdet(jac)[1])


def test_neutra_on_a_model_with_a_plate_and_a_positive_site():
    # eight schools: tau > 0 and a plate of 8; the shared latent lives outside the plate
    model = eight_schools().model
    pyro.clear_param_store()
    guide = _fitted(model, steps=5)
    neutra = NeuTraReparam(guide.requires_grad_(False))
    warped = poutine.reparam(model, config=lambda _: neutra)
    latent = _nuts(warped, warmup=5, samples=4)["mu_shared_latent"]
    assert latent.shape == (4, 10)
    # Pyro's rule: batch dimensions of the draws go left of the model's plates
    out = neutra.transform_sample(latent.unsqueeze(-2))
    assert out["theta_tilde"].shape == (4, 8) and bool((out["tau"] > 0).all())
