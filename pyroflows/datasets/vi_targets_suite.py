r"""More VI targets with known answers: Gaussians, a mixture, logistic regression, a hierarchical
model with hundreds of latents, constrained sites; and :data:`VI_TARGETS`, the benchmark suite.

Each factory returns a :class:`~pyroflows.datasets.VITarget` whose ``log_z`` is the
log-normaliser of the model's joint density (so :math:`\mathrm{KL}(q\,\|\,p) = \log Z -
\mathrm{ELBO}`) and whose ``reference`` holds posterior (mean, sd) of named sites; ``source`` says
where these numbers come from:

* :func:`gaussian`: a 10-D Gaussian, correlated (:math:`\Sigma_{ij} = 0.9^{|i-j|}`) or badly
  scaled (standard deviations :math:`10^{-1.5}` to :math:`10^{1.5}`); exact (:math:`\log Z = 0`).
* :func:`gaussian_mixture`: two Gaussians in 5-D with weights 0.3 / 0.7 and means
  :math:`\mp 1.25 \cdot \mathbf 1`; exact (:math:`\log Z = 0`).
* :func:`hierarchical`: a non-centred normal hierarchical model with 300 groups (302 latents);
  the group effects integrate out analytically, so :math:`\log Z` and the moments of
  :math:`\mu, \tau` come from 2-D quadrature.
* :func:`constrained`: a simplex site (Dirichlet-multinomial) and a positive one (Gamma-Poisson);
  conjugate, so exact.
* :func:`logistic_regression`: Bayesian logistic regression on scikit-learn's breast-cancer table
  (569 rows, 30 standardised features and an intercept, :math:`w \sim N(0, I)`); the reference
  is importance sampling (see :func:`logistic_regression_reference`), not NUTS.

References:
    [1] A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. Pareto Smoothed Importance
        Sampling. JMLR 25(72), 2024.
    [2] W. H. Wolberg, W. N. Street, O. L. Mangasarian. Breast Cancer Wisconsin (Diagnostic).
        UCI Machine Learning Repository, 1995.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from .._optional import require
from .targets import VITarget, eight_schools, energy_target, funnel

__all__ = [
    "VI_TARGETS",
    "constrained",
    "gaussian",
    "gaussian_mixture",
    "hierarchical",
    "logistic_regression",
    "logistic_regression_reference",
]


def _gaussian_parts(kind: str, dim: int) -> tuple[Tensor, Tensor]:
    """(mean, scale_tril) of :func:`gaussian`, in float64."""
    i = torch.arange(dim, dtype=torch.float64)
    mean = torch.linspace(-1.0, 1.0, dim, dtype=torch.float64)
    if kind == "correlated":
        cov = 0.9 ** (i[:, None] - i[None, :]).abs()
        return mean, torch.linalg.cholesky(cov)
    if kind == "scaled":
        sd = 10.0 ** torch.linspace(-1.5, 1.5, dim, dtype=torch.float64)
        return mean * sd, torch.diag(sd)
    raise ValueError(f"kind must be 'correlated' or 'scaled'; got {kind!r}.")


def gaussian(dim: int = 10, *, kind: str = "correlated") -> VITarget:
    r"""A normalised Gaussian over one site ``x`` of ``dim`` dimensions (:math:`\log Z = 0`).

    ``kind="correlated"``: unit variances, :math:`\Sigma_{ij} = 0.9^{|i-j|}`, mean evenly from
    -1 to 1 (a mean-field guide misses :math:`\tfrac12 \log(\prod \Sigma_{ii} / \det\Sigma)`).
    ``kind="scaled"``: independent, standard deviations :math:`10^{-1.5} \dots 10^{1.5}`
    (a 1000-fold range), means -1 to 1 in units of their sd.

    Example:
        >>> t = gaussian(4, kind="scaled")
        >>> t.log_z, t.latent_dim, [round(s, 3) for s in t.reference["x"][1]]
        (0.0, 4, [0.032, 0.316, 3.162, 31.623])
    """
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2; got {dim!r}.")
    mean64, tril64 = _gaussian_parts(kind, dim)
    mean, tril = mean64.float(), tril64.float()

    def model() -> None:
        pyro.sample("x", dist.MultivariateNormal(mean, scale_tril=tril))

    model.__name__ = f"gaussian_{kind}_{dim}"
    sd = (tril64 @ tril64.T).diagonal().sqrt()
    ref = {"x": (tuple(mean64.tolist()), tuple(sd.tolist()))}
    return VITarget(f"gauss_{kind}{dim}", model, 0.0, dim, ref, source="exact (a Gaussian)")


def gaussian_mixture(dim: int = 5) -> VITarget:
    r""":math:`0.3\,N(-1.25 \cdot \mathbf 1, I) + 0.7\,N(1.25 \cdot \mathbf 1, I)` over one site
    ``x`` (:math:`\log Z = 0`). The modes are :math:`2.5\sqrt{D}` apart (5.6 sd in 5-D), so a
    guide that covers the heavier one only has :math:`\mathrm{KL} \ge -\log 0.7 = 0.357`.

    Example:
        >>> t = gaussian_mixture()
        >>> t.latent_dim, round(t.reference["x"][0][0], 2), round(t.reference["x"][1][0], 4)
        (5, 0.5, 1.5207)
    """
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1; got {dim!r}.")
    weights = torch.tensor([0.3, 0.7])
    means = torch.stack([torch.full((dim,), -1.25), torch.full((dim,), 1.25)])
    comp = dist.MultivariateNormal(means, scale_tril=torch.eye(dim).expand(2, dim, dim))
    mixture = dist.MixtureSameFamily(dist.Categorical(weights), comp)

    def model() -> None:
        # a proper reference measure N(0, 3^2 I) that the factor cancels (Pyro's autoguides
        # cannot unconstrain a MixtureSameFamily site)
        ref = dist.Normal(torch.zeros(dim), 3.0).to_event(1)
        x = pyro.sample("x", ref)
        pyro.factor("mixture", mixture.log_prob(x) - ref.log_prob(x))

    model.__name__ = f"gaussian_mixture_{dim}"
    m = 0.3 * -1.25 + 0.7 * 1.25
    var = 1.0 + 0.3 * 1.25**2 + 0.7 * 1.25**2 - m**2
    ref = {"x": ((m,) * dim, (math.sqrt(var),) * dim)}
    return VITarget(f"mixture{dim}", model, 0.0, dim, ref, source="exact (a mixture)")


def _hier_data(groups: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    sigma = 1.0 + 4.0 * torch.rand(groups, generator=g, dtype=torch.float64)
    theta = 1.0 + 2.0 * torch.randn(groups, generator=g, dtype=torch.float64)
    return theta + sigma * torch.randn(groups, generator=g, dtype=torch.float64), sigma


def _hier_quadrature(y: Tensor, sigma: Tensor, n: int = 801) -> tuple[float, dict]:
    r""":math:`\log Z` and moments of :math:`\mu, \tau` of :func:`hierarchical` by the
    trapezoid rule on the :math:`(\mu, \tau)` plane (group effects integrated out exactly)."""

    def log_joint(mu: Tensor, tau: Tensor) -> Tensor:
        s = (tau[..., None] ** 2 + sigma**2).sqrt()
        lik = dist.Normal(mu[..., None], s).log_prob(y).sum(-1)
        return dist.Normal(0.0, 5.0).log_prob(mu) + dist.HalfNormal(5.0).log_prob(tau) + lik

    # a coarse pass finds the mass, a fine one integrates it
    lo, hi = (-10.0, 10.0), (1e-6, 15.0)
    for _ in range(2):
        mu = torch.linspace(*lo, n, dtype=torch.float64)
        tau = torch.linspace(*hi, n, dtype=torch.float64)
        lp = torch.cat([log_joint(m, tau)[None] for m in mu])  # (n_mu, n_tau)
        keep = lp > lp.max() - 40.0
        im, it = keep.any(1).nonzero(), keep.any(0).nonzero()
        dm, dt = mu[1] - mu[0], tau[1] - tau[0]
        lo = (float(mu[im.min()] - 2 * dm), float(mu[im.max()] + 2 * dm))
        hi = (max(1e-9, float(tau[it.min()] - 2 * dt)), float(tau[it.max()] + 2 * dt))
    w_mu = torch.ones(n, dtype=torch.float64)
    w_mu[0] = w_mu[-1] = 0.5
    logw = (w_mu[:, None] * w_mu[None, :]).log() + (dm * dt).log()
    log_z = torch.logsumexp((lp + logw).flatten(), 0)
    p = (lp + logw - log_z).exp()
    ref = {}
    for name, grid in (("mu", mu[:, None]), ("tau", tau[None, :])):
        mean = float((p * grid).sum())
        ref[name] = (mean, math.sqrt(float((p * (grid - mean) ** 2).sum())))
    return float(log_z), ref


#: log Z and (mean, sd) of mu and tau of ``hierarchical(300)`` (by ``_hier_quadrature``,
#: 801 x 801 trapezoid grid over the posterior mass; tests/test_targets.py recomputes them).
_HIER_300 = (-810.965306, {"mu": (1.134874, 0.191771), "tau": (1.986564, 0.201769)})


def hierarchical(groups: int = 300) -> VITarget:
    r"""Normal hierarchical model, non-centred, with ``groups`` groups (``groups + 2`` latents):
    :math:`\mu \sim N(0, 5^2)`, :math:`\tau \sim \text{HalfNormal}(5)`,
    :math:`\tilde\theta_j \sim N(0, 1)`, :math:`y_j \sim N(\mu + \tau\tilde\theta_j,
    \sigma_j^2)`, with synthetic data (seed 0: :math:`\sigma_j \sim U(1, 5)`,
    :math:`\theta_j \sim N(1, 2^2)`).

    Integrating :math:`\tilde\theta_j` out gives :math:`y_j \sim N(\mu, \tau^2 + \sigma_j^2)`,
    so :math:`\log Z` and the posterior of :math:`\mu, \tau` follow from quadrature over two
    dimensions (stored for 300 groups, computed otherwise).

    Example:
        >>> t = hierarchical()
        >>> t.latent_dim, round(t.log_z, 3), round(t.reference["tau"][0], 3)
        (302, -810.965, 1.987)
    """
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be an integer >= 1; got {groups!r}.")
    y64, sigma64 = _hier_data(groups)
    log_z, ref = _HIER_300 if groups == 300 else _hier_quadrature(y64, sigma64)
    y, sigma = y64.float(), sigma64.float()

    def model() -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfNormal(5.0))
        with pyro.plate("group", groups):
            tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(mu + tau * tilde, sigma), obs=y)

    model.__name__ = f"hierarchical_{groups}"
    source = "2-D quadrature over (mu, tau), group effects integrated out analytically"
    return VITarget(f"hier{groups}", model, log_z, groups + 2, dict(ref), source=source)


#: data of :func:`constrained`: category counts and Poisson counts
_COUNTS = (3.0, 0.0, 1.0, 0.0)
_POISSON = (0.0, 1.0, 0.0)


def constrained() -> VITarget:
    r"""A simplex site and a positive one, conjugate so everything is exact:
    :math:`p \sim \text{Dirichlet}(\mathbf 1_4)`, counts :math:`(3, 0, 1, 0) \sim
    \text{Multinomial}(4, p)`; :math:`\lambda \sim \text{Gamma}(1, 1)`, :math:`y = (0, 1, 0)`
    i.i.d. Poisson(:math:`\lambda`). Posterior :math:`\text{Dirichlet}(4, 1, 2, 1)` and
    :math:`\text{Gamma}(2, 4)` (skewed in unconstrained space); 4 unconstrained dimensions.

    Example:
        >>> t = constrained()
        >>> t.latent_dim, round(t.log_z, 4), t.reference["lam"]
        (4, -6.3279, (0.5, 0.3535533905932738))
    """
    counts, ys = torch.tensor(_COUNTS), torch.tensor(_POISSON)

    def model() -> None:
        p = pyro.sample("p", dist.Dirichlet(torch.ones(4)))
        pyro.sample("counts", dist.Multinomial(int(sum(_COUNTS)), p), obs=counts)
        lam = pyro.sample("lam", dist.Gamma(1.0, 1.0))
        with pyro.plate("obs", len(_POISSON)):
            pyro.sample("y", dist.Poisson(lam.unsqueeze(-1)), obs=ys)

    model.__name__ = "constrained"
    a = torch.tensor(_COUNTS, dtype=torch.float64) + 1.0
    n = sum(_COUNTS)
    # Dirichlet-multinomial: n! / prod c! * B(1 + c) / B(1)
    log_dm = math.lgamma(n + 1) - sum(math.lgamma(c + 1) for c in _COUNTS)
    log_dm += float(torch.lgamma(a).sum() - torch.lgamma(a.sum())) - (-math.lgamma(4.0))
    # Gamma(1, 1)-Poisson: Gamma(1 + s) / (1 + m)^(1 + s) / prod y!
    s, m = sum(_POISSON), len(_POISSON)
    log_gp = (
        math.lgamma(1 + s) - (1 + s) * math.log(1 + m) - sum(math.lgamma(v + 1) for v in _POISSON)
    )
    a0 = float(a.sum())
    p_mean = tuple((a / a0).tolist())
    p_sd = tuple((a * (a0 - a) / (a0**2 * (a0 + 1))).sqrt().tolist())
    shape, rate = 1 + s, 1 + m
    ref = {"p": (p_mean, p_sd), "lam": (shape / rate, math.sqrt(shape) / rate)}
    source = "exact (conjugate: Dirichlet-multinomial and Gamma-Poisson)"
    return VITarget("constrained", model, log_dm + log_gp, 4, ref, source=source)


def _breast_cancer() -> tuple[Tensor, Tensor]:
    """Standardised features (569, 30) and labels of scikit-learn's breast-cancer table."""
    load = require("sklearn.datasets", "pyroflows.datasets.logistic_regression").load_breast_cancer
    data = load()
    x = torch.as_tensor(data.data, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    return x, torch.as_tensor(data.target, dtype=torch.float64)


def _logistic_log_joint(w: Tensor, x: Tensor, y: Tensor) -> Tensor:
    logits = w[..., 1:] @ x.T + w[..., :1]
    lik = dist.Bernoulli(logits=logits).log_prob(y).sum(-1)
    return dist.Normal(0.0, 1.0).log_prob(w).sum(-1) + lik


def logistic_regression_reference(
    num_samples: int = 200_000, *, seed: int = 0, df: float = 10.0
) -> dict:
    r"""Reference posterior of :func:`logistic_regression` by importance sampling.

    The proposal is a multivariate Student-t (``df`` degrees of freedom) at the posterior mode
    (L-BFGS) with the inverse Hessian there as scale matrix (a Laplace approximation with heavy
    tails); ``num_samples`` draws are weighted by posterior / proposal. With PSIS k-hat well
    below 0.5 the weighted moments and :math:`\log Z = \log \bar w` are accurate [1]; their
    Monte Carlo standard errors are returned too.

    Returns:
        ``{"log_z", "log_z_se", "mean", "sd", "k_hat", "ess"}`` (``mean``/``sd`` tensors of 31).

    Example:
        >>> ref = logistic_regression_reference(2000)   # the stored reference used 200 000
        >>> sorted(ref), ref["mean"].shape
        (['ess', 'k_hat', 'log_z', 'log_z_se', 'mean', 'sd'], torch.Size([31]))
        >>> abs(ref["log_z"] - logistic_regression().log_z) < 4 * ref["log_z_se"]
        True
    """
    from ..diagnostics.arviz import _psis

    x, y = _breast_cancer()
    w = torch.zeros(31, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = -_logistic_log_joint(w, x, y)
        loss.backward()
        return loss

    opt.step(closure)
    mode = w.detach()
    hess = torch.autograd.functional.hessian(lambda v: -_logistic_log_joint(v, x, y), mode)
    proposal = dist.MultivariateStudentT(df, mode, scale_tril=torch.linalg.cholesky(hess.inverse()))
    g = torch.Generator().manual_seed(seed)
    torch_state = torch.get_rng_state()
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=g)))
    draws = proposal.sample((num_samples,))
    torch.set_rng_state(torch_state)
    log_w = torch.cat(
        [_logistic_log_joint(d, x, y) - proposal.log_prob(d) for d in draws.split(10_000)]
    )
    log_z = float(torch.logsumexp(log_w, 0) - math.log(num_samples))
    wts = (log_w - log_w.max()).exp()
    log_z_se = float(wts.std() / wts.mean() / math.sqrt(num_samples))
    k_hat = _psis(log_w)[0]
    p = wts / wts.sum()
    mean = (p[:, None] * draws).sum(0)
    sd = (p[:, None] * (draws - mean) ** 2).sum(0).sqrt()
    return {
        "log_z": log_z,
        "log_z_se": log_z_se,
        "mean": mean,
        "sd": sd,
        "k_hat": k_hat,
        "ess": float(1.0 / (p**2).sum()),
    }


#: ``logistic_regression_reference()`` (200 000 draws, seed 0); see that function.
_LOGREG_REF: dict = {
    "log_z": -55.2268,
    "log_z_se": 0.0114,
    "k_hat": 0.51,
    "ess": 7369,
    "mean": (
        0.2047,
        -0.4612,
        -0.4720,
        -0.4769,
        -0.5645,
        -0.2468,
        0.5884,
        -0.9412,
        -1.0739,
        0.1075,
        0.4453,
        -1.4345,
        0.3138,
        -0.7840,
        -1.1911,
        -0.4193,
        0.7126,
        0.3048,
        -0.3191,
        0.3033,
        0.8162,
        -1.1311,
        -1.4931,
        -0.9076,
        -1.1105,
        -0.7300,
        -0.0082,
        -0.9783,
        -1.0442,
        -1.0596,
        -0.5367,
    ),
    "sd": (
        0.4092,
        0.8921,
        0.5594,
        0.9044,
        0.9138,
        0.6197,
        0.8049,
        0.8212,
        0.8246,
        0.5085,
        0.6752,
        0.7841,
        0.4991,
        0.7855,
        0.9203,
        0.4617,
        0.6817,
        0.6206,
        0.6722,
        0.5311,
        0.6936,
        0.9171,
        0.6484,
        0.9153,
        0.9381,
        0.6234,
        0.7745,
        0.7715,
        0.7954,
        0.5476,
        0.7063,
    ),
}


def logistic_regression() -> VITarget:
    r"""Bayesian logistic regression on scikit-learn's breast-cancer table [2] (needs the
    ``data`` extra): 569 rows, 30 standardised features and an intercept,
    :math:`w \sim N(0, I_{31})` (site ``w``, intercept first), labels Bernoulli.

    ``log_z`` and the reference (mean, sd) of ``w`` are the importance-sampling estimates of
    :func:`logistic_regression_reference` (200 000 draws, seed 0), stored.

    Example:
        >>> import pyro
        >>> t = logistic_regression()
        >>> t.name, t.latent_dim, round(t.log_z, 2)
        ('logreg', 31, -55.23)
        >>> trace = pyro.poutine.trace(t.model).get_trace()
        >>> trace.nodes["w"]["value"].shape, trace.nodes["y"]["value"].shape
        (torch.Size([31]), torch.Size([569]))
    """
    x64, y64 = _breast_cancer()
    x, y = x64.float(), y64.float()

    def model() -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(31), 1.0).to_event(1))
        logits = w[..., 1:] @ x.T + w[..., :1]
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)

    model.__name__ = "logistic_regression"
    ref = _LOGREG_REF
    source = (
        "importance sampling from a Student-t(10) Laplace proposal, 200 000 draws "
        f"(k-hat {ref['k_hat']:.2f}): pyroflows.datasets.logistic_regression_reference()"
    )
    reference = {"w": (tuple(ref["mean"]), tuple(ref["sd"]))}
    return VITarget("logreg", model, ref["log_z"], 31, reference, source=source)


#: The benchmark suite: name -> factory of a :class:`VITarget` with a known ``log_z`` or
#: reference (used by ``benchmarks/vi_targets.py``).
VI_TARGETS: dict[str, Callable[[], VITarget]] = {
    "U1": lambda: energy_target("U1"),
    "U2": lambda: energy_target("U2"),
    "U3": lambda: energy_target("U3"),
    "U4": lambda: energy_target("U4"),
    "funnel10": lambda: funnel(10),
    "eight_schools": lambda: eight_schools(),
    "gauss_correlated10": lambda: gaussian(10, kind="correlated"),
    "gauss_scaled10": lambda: gaussian(10, kind="scaled"),
    "mixture5": lambda: gaussian_mixture(5),
    "logreg": logistic_regression,
    "hier300": lambda: hierarchical(300),
    "constrained": constrained,
}
