"""Large-N SVI: models whose pyro.plate subsamples (subsample_size), with fit_svi's ELBOs."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyroflows as pf
from pyroflows.infer.svi import TraceSTL_ELBO

N, M = 60, 6
X = torch.linspace(-2.0, 3.0, N)


def model(x, subsample_size=None):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x), subsample_size=subsample_size) as idx:
        pyro.sample("obs", dist.Normal(z, 1.0), obs=x[idx])


def point_guide(x, subsample_size=None):  # the guide's draw is fixed: only subsampling varies
    pyro.sample("z", dist.Delta(pyro.param("loc", torch.tensor(0.7))))


@pytest.mark.parametrize("elbo", [pyro.infer.Trace_ELBO, TraceSTL_ELBO])
def test_subsampled_elbo_is_unbiased_for_the_full_data_elbo(elbo):
    """With the guide's draw fixed, the mean over random subsamples of the loss equals the
    full-data loss (Pyro scales the plate's log-likelihood by N / subsample_size)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    loss = elbo().differentiable_loss
    full = float(loss(model, point_guide, X).detach())
    draws = torch.tensor([float(loss(model, point_guide, X, M).detach()) for _ in range(3000)])
    se = float(draws.std()) / math.sqrt(len(draws))
    assert abs(float(draws.mean()) - full) < 4 * se
    assert float(draws.std()) > 0  # the subsamples do differ


@pytest.mark.slow
def test_fit_svi_with_subsampled_plate_finds_the_posterior():
    pyro.clear_param_store()
    guide = pf.AutoFlow(model, flow=pf.MAF, num_layers=1, hidden_dims=(8,))
    pf.fit_svi(
        model,
        guide,
        X,
        M,
        steps=300,
        lr=2e-2,
        seed=0,
        progress=False,
        num_particles=4,
        final_check=False,  # PSIS of a subsampled model is noise: check on the full data
    )
    with torch.no_grad():
        draws = torch.stack([guide(X)["z"] for _ in range(2000)])
    # conjugate posterior of z: N(sum(x) / (N + 1), 1 / (N + 1))
    post_mean, post_sd = float(X.sum()) / (N + 1), 1 / math.sqrt(N + 1)
    assert abs(float(draws.mean()) - post_mean) < 0.1
    assert 0.5 * post_sd < float(draws.std()) < 2 * post_sd


@pytest.mark.slow
def test_amortised_flow_guide_recipe_of_docs_scaling():
    """The recipe of docs/scaling.md: a conditional flow q(z_i | x_i) under a subsampled plate."""
    n, d, latent = 500, 2, 1
    torch.manual_seed(0)
    z_true = torch.randn(n, latent)
    x = torch.cat([z_true, z_true**2], 1) + 0.1 * torch.randn(n, d)

    def local_model(x, subsample_size=64):
        with pyro.plate("data", len(x), subsample_size=subsample_size) as idx:
            z = pyro.sample("z_local", dist.Normal(0.0, 1.0).expand([latent]).to_event(1))
            mean = torch.cat([z, z**2], -1)
            pyro.sample("obs", dist.Normal(mean, 0.1).to_event(1), obs=x[idx])

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.flow = pf.MAF(latent, context_dim=d, num_layers=2, hidden_dims=(32,))

        def forward(self, x, subsample_size=64):
            pyro.module("encoder", self)
            with pyro.plate("data", len(x), subsample_size=subsample_size) as idx:
                pyro.sample("z_local", self.flow(x[idx]))

    pyro.clear_param_store()
    guide = Encoder()
    pf.fit_svi(local_model, guide, x, steps=300, lr=1e-2, seed=0, final_check=False,
               progress=False)  # fmt: skip
    with torch.no_grad():
        q = guide.flow(x).sample()[:, 0]
    # an untrained encoder (identity-initialised flow) gives q independent of x: about 0
    assert torch.corrcoef(torch.stack([q, z_true[:, 0]]))[0, 1] > 0.7
