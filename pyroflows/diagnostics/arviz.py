r"""ArviZ export and PSIS diagnostics of a variational guide (the one module that uses ArviZ).

A guide :math:`q(z)` fitted to a model :math:`p(x, z)` is judged by its log importance weights
:math:`\log w_s = \log p(x, z_s) - \log q(z_s)`, :math:`z_s \sim q`. Following Yao et al. [1],
Pareto-smoothed importance sampling (PSIS [2], computed by :func:`arviz.psislw`) fits a
generalised Pareto distribution to the largest weights; its shape :math:`\hat k` says whether
:math:`q` can be trusted: :math:`\hat k < 0.5` good, :math:`0.5 \le \hat k \le 0.7` ok,
:math:`\hat k > 0.7` unreliable (the weights have too heavy a tail: :math:`q` misses mass of
the posterior). The same weights give the Kish effective sample size of the smoothed weights,
:math:`1 / \sum_s \tilde w_s^2`, the importance-sampling estimate of the log-evidence,
:math:`\log \frac1S \sum_s w_s`, and the ELBO, :math:`\frac1S \sum_s \log w_s`.
:math:`\hat k` flags guides that are too *narrow*; a guide much wider than the posterior has
bounded weights and a small :math:`\hat k` however poor it is, so read the ESS too (a small
fraction of the draws means an inefficient guide).

Draws are taken in one vectorised pass (Pyro's ``vectorized_importance_weights``) when model and
guide support an extra batch dimension left of their plates, as for
``Trace_ELBO(vectorize_particles=True)``; a model that does not (e.g. ``X @ w`` with a latent
vector ``w``) is run once per draw instead, with the same warning :func:`~pyroflows.fit_svi`
gives for particles (slower, same result). Model and guide must have static structure. ArviZ is
imported on first use.

References:
    [1] Y. Yao, A. Vehtari, D. Simpson, A. Gelman. Yes, but Did It Work?: Evaluating
        Variational Inference. ICML 2018.
    [2] A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. Pareto Smoothed Importance
        Sampling. JMLR 25(72), 2024.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.infer.importance import vectorized_importance_weights
from pyro.infer.util import plate_log_prob_sum
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from ..infer.svi import vectorised_or_loop

__all__ = ["PSISDiagnostic", "psis_diagnostic", "to_inference_data"]

_PARTICLES = "num_particles_vectorized"  # the plate Pyro's vectorized_importance_weights adds


def _arviz() -> Any:
    with warnings.catch_warnings():  # arviz 0.2x announces its 1.0 refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


@dataclass(frozen=True)
class PSISDiagnostic:
    """How well a guide matches the posterior, from PSIS-smoothed importance weights [1].

    Attributes:
        k_hat: Pareto shape of the weights' tail (``-inf`` when all weights are equal, i.e.
            the guide is exact; ``inf`` when fewer than 21 draws leave no tail to fit).
        ess: Kish effective sample size of the smoothed, normalised weights (at most
            ``num_samples``).
        log_evidence: importance-sampling estimate of :math:`\\log p(x)`.
        elbo: Monte Carlo ELBO, the mean log weight (a lower bound of ``log_evidence``).
        num_samples: number of guide draws used.

    Example:
        >>> PSISDiagnostic(k_hat=0.62, ess=80.0, log_evidence=-3.1, elbo=-3.4,
        ...                num_samples=1000).verdict
        'ok'
    """

    k_hat: float
    ess: float
    log_evidence: float
    elbo: float
    num_samples: int

    @property
    def verdict(self) -> str:
        """``"good"`` (k < 0.5), ``"ok"`` (0.5 <= k <= 0.7) or ``"unreliable"`` [1]."""
        if self.k_hat < 0.5:
            return "good"
        return "ok" if self.k_hat <= 0.7 else "unreliable"

    def __str__(self) -> str:
        return (
            f"PSIS k-hat {self.k_hat:.3f} ({self.verdict}), ESS {self.ess:.1f} of "
            f"{self.num_samples}, log-evidence {self.log_evidence:.4f}, ELBO {self.elbo:.4f}"
        )


def _max_plate_nesting(*traces: Any) -> int:
    dims = [
        -frame.dim
        for trace in traces
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return max(dims, default=0)


def _draw_vectorised(
    model: Callable, guide: Callable, args: tuple, kwargs: dict, num_samples: int, nesting: int
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    log_w, model_tr, guide_tr = vectorized_importance_weights(
        model, guide, *args, num_samples=num_samples, max_plate_nesting=nesting, **kwargs
    )
    log_p = plate_log_prob_sum(model_tr, guide_tr.plate_to_symbol[_PARTICLES])
    values = {n: s["value"] for n, s in model_tr.nodes.items() if s["type"] == "sample"}
    return log_w, log_p, values


def _draw_looped(
    model: Callable, guide: Callable, args: tuple, kwargs: dict, num_samples: int
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    log_w, log_p, values = [], [], {}
    for _ in range(num_samples):
        guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
        lp = model_tr.log_prob_sum()
        log_p.append(lp)
        log_w.append(lp - guide_tr.log_prob_sum())
        for name, site in model_tr.nodes.items():  # latent and deterministic sites, per draw
            if site["type"] == "sample" and (
                not site["is_observed"] or site["infer"].get("_deterministic")
            ):
                values.setdefault(name, []).append(site["value"])
    stacked = {n: torch.stack(v) for n, v in values.items()}
    return torch.stack(log_w), torch.stack(log_p), stacked


@torch.no_grad()
def _draw(
    model: Callable, guide: Callable, args: tuple, kwargs: dict, num_samples: int
) -> tuple[Tensor, Tensor, dict[str, Tensor], Any]:
    """Guide draws: ``(log_w, log_p, site name -> values of the draws, one-draw model trace)``.

    One vectorised pass when the model allows it, else a loop over the draws (with the warning
    :func:`~pyroflows.fit_svi` gives for particles).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2; got {num_samples!r}.")
    guide_one = poutine.trace(guide).get_trace(*args, **kwargs)
    model_one = poutine.trace(poutine.replay(model, trace=guide_one)).get_trace(*args, **kwargs)
    nesting = _max_plate_nesting(guide_one, model_one)
    log_w, log_p, values = vectorised_or_loop(
        lambda: _draw_vectorised(model, guide, args, kwargs, num_samples, nesting),
        lambda: _draw_looped(model, guide, args, kwargs, num_samples),
        count=num_samples,
        what="draws",
        stacklevel=4,  # _draw, torch.no_grad's wrapper, psis_diagnostic/to_inference_data, user
    )
    if bool(torch.isnan(log_w).any()) or bool((log_w == math.inf).any()):
        raise ValueError(
            "log p(x, z) - log q(z) is NaN or +inf for some guide draws; check that the guide's "
            "samples lie in the model's support and that neither density overflows."
        )
    if not bool(torch.isfinite(log_w).any()):
        raise ValueError("every guide draw has zero model density (log weight -inf).")
    return log_w, log_p, values, model_one


def _psis(log_w: Tensor) -> tuple[float, float]:
    """PSIS k-hat and the Kish ESS of the smoothed weights (ArviZ's ``psislw``)."""
    lw = log_w.detach().double().cpu().numpy()
    if np.all(lw == lw[0]):  # an exact guide: bounded weights, no tail
        return -math.inf, float(lw.size)
    smoothed, k = _arviz().psislw(lw, reff=1.0)
    w = np.exp(np.asarray(smoothed) - np.logaddexp.reduce(smoothed))
    return float(k), float(1.0 / np.sum(w**2))


def _summary(log_w: Tensor) -> PSISDiagnostic:
    k, ess = _psis(log_w)
    lw = log_w.double()
    n = lw.numel()
    log_z = float(torch.logsumexp(lw, 0) - math.log(n))
    return PSISDiagnostic(k, ess, log_z, float(lw.mean()), n)


def _psis_resample(log_w: Tensor, n: int) -> np.ndarray:
    """``n`` draw indices taken with replacement in proportion to the PSIS-smoothed weights,
    sorted so that repeats of a draw are adjacent (draw order is random, so this only groups
    duplicates; ``az.ess`` then counts them as the correlated draws they are)."""
    lw = log_w.detach().double().cpu().numpy()
    smoothed, _ = _arviz().psislw(lw, reff=1.0)
    w = torch.as_tensor(np.exp(np.asarray(smoothed) - np.logaddexp.reduce(smoothed)))
    return torch.multinomial(w, n, replacement=True).sort().values.numpy()


def psis_diagnostic(
    model: Callable, guide: Callable, *args: Any, num_samples: int = 1000, **kwargs: Any
) -> PSISDiagnostic:
    r"""PSIS diagnostic of ``guide`` for ``model`` [1] from ``num_samples`` guide draws.

    Args:
        model: the Pyro model.
        guide: a fitted guide (any Pyro guide with static structure).
        *args: the model's arguments.
        num_samples: guide draws (k-hat needs a few hundred at least; 1000+ is better).
        **kwargs: the model's keyword arguments.

    Returns:
        A :class:`PSISDiagnostic` with ``k_hat``, ``ess``, ``log_evidence``, ``elbo``.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     m = pyro.sample("m", dist.Normal(0.0, 1.0))
        ...     pyro.sample("y", dist.Normal(m, 1.0), obs=torch.tensor(1.0))
        >>> def exact(): pyro.sample("m", dist.Normal(0.5, 0.5 ** 0.5))   # the posterior
        >>> pyro.set_rng_seed(0)
        >>> d = psis_diagnostic(model, exact, num_samples=200)
        >>> d.verdict, round(d.log_evidence, 4), round(d.ess)    # log N(1; 0, 2) = -1.5155
        ('good', -1.5155, 200)
    """
    log_w = _draw(model, guide, args, kwargs, num_samples)[0]
    return _summary(log_w)


def _dims(name: str, site: dict, shape: tuple[int, ...]) -> list[str]:
    """Dimension names of a site: its plates' names where they apply, else ``name_dim_i``."""
    # pyro.deterministic makes every dim an event dim: align its plates from the right
    deterministic = site["infer"].get("_deterministic")
    batch = len(shape) if deterministic else len(shape) - site["fn"].event_dim
    dims = [f"{name}_dim_{i}" for i in range(len(shape))]
    for frame in site["cond_indep_stack"]:
        pos = batch + frame.dim
        if frame.vectorized and 0 <= pos < len(shape) and shape[pos] == frame.size:
            dims[pos] = frame.name
    return dims


def _per_draw(value: Tensor, n: int, shape: tuple[int, ...], name: str) -> np.ndarray:
    size = math.prod(shape)
    if value.numel() == n * size:
        value = value.reshape(n, *shape)
    elif value.numel() == size:  # the same for every draw
        value = value.reshape(shape).expand(n, *shape)
    else:
        raise ValueError(
            f"site {name!r} has shape {tuple(value.shape)} in the vectorised run, which does not "
            f"match {n} draws of shape {shape}; the model must be vectorisable over draws."
        )
    return value.detach().cpu().numpy()[None]  # (chain=1, draw, ...)


def to_inference_data(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 1000,
    resample: str | None = None,
    **kwargs: Any,
) -> Any:
    r"""Draw ``num_samples`` posterior samples from ``guide`` into an :class:`arviz.InferenceData`.

    Groups:
        * ``posterior``: every latent and deterministic site of the model, in constrained space,
          dims ``(chain=1, draw, ...)``; a site's plate dimensions take the plate's name.
        * ``sample_stats``: ``log_weight`` (:math:`\log p(x, z) - \log q(z)`), ``lp``
          (:math:`\log p(x, z)`) and ``log_q`` per draw.
        * ``observed_data``: the model's observed sites.

    ``posterior.attrs`` and ``sample_stats.attrs`` hold ``psis_k_hat``, ``psis_ess``,
    ``log_evidence`` and ``elbo`` (see :func:`psis_diagnostic`), and ``resample``.

    Which draws to use: the raw draws (``resample=None``) are draws from the *guide* q; their
    ``az.summary`` ESS counts guide draws and says nothing about how well q matches the
    posterior. ``resample="psis"`` replaces them by ``num_samples`` draws taken with
    replacement in proportion to the Pareto-smoothed importance weights
    :math:`\tilde w_i \propto p(x, z_i) / q(z_i)` of [2] (sampling-importance-resampling): they
    target the posterior itself (when :math:`\hat k < 0.7`; above it no reweighting can be
    trusted), and repeated draws are kept next to each other, so ``az.summary``'s ESS sees the
    duplicates and falls to the order of the PSIS ESS instead of ``num_samples``. Report
    posterior summaries from the resampled draws; use the raw ones to look at the guide.

    Args:
        model: the Pyro model.
        guide: a fitted guide (any Pyro guide with static structure).
        *args: the model's arguments.
        num_samples: guide draws (one chain).
        resample: ``None`` (the guide's draws) or ``"psis"`` (importance-resampled draws).
        **kwargs: the model's keyword arguments.

    Returns:
        The ``arviz.InferenceData``.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     s = pyro.sample("s", dist.HalfNormal(1.0))
        ...     with pyro.plate("group", 3):
        ...         pyro.sample("y", dist.Normal(0.0, s), obs=torch.tensor([0.5, -1.0, 2.0]))
        >>> pyro.set_rng_seed(0)
        >>> guide = pyro.infer.autoguide.AutoNormal(model)
        >>> idata = to_inference_data(model, guide, num_samples=100)
        >>> idata.posterior["s"].dims, idata.observed_data["y"].dims
        (('chain', 'draw'), ('group',))
        >>> bool((idata.posterior["s"] > 0).all()), sorted(idata.sample_stats.data_vars)
        (True, ['log_q', 'log_weight', 'lp'])
        >>> "psis_k_hat" in idata.posterior.attrs
        True
    """
    if resample not in (None, "psis"):
        raise ValueError(f"resample must be None or 'psis'; got {resample!r}")
    log_w, log_p, values, model_one = _draw(model, guide, args, kwargs, num_samples)
    summary = _summary(log_w)
    index = None if resample is None else _psis_resample(log_w, num_samples)
    posterior: dict[str, np.ndarray] = {}
    observed: dict[str, np.ndarray] = {}
    dims: dict[str, list[str]] = {}
    for name, site in model_one.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["infer"].get("is_auxiliary"):
            continue
        shape = tuple(site["value"].shape)
        deterministic = bool(site["infer"].get("_deterministic"))
        dims[name] = _dims(name, site, shape)
        if site["is_observed"] and not deterministic:
            observed[name] = site["value"].detach().cpu().numpy()
            continue
        posterior[name] = _per_draw(values[name], num_samples, shape, name)
        if index is not None:
            posterior[name] = posterior[name][:, index]
    if index is not None:
        log_w, log_p = log_w[torch.as_tensor(index)], log_p[torch.as_tensor(index)]
    as_np = lambda t: t.detach().double().cpu().numpy()[None]  # noqa: E731
    stats = {"log_weight": as_np(log_w), "lp": as_np(log_p), "log_q": as_np(log_p - log_w)}
    idata = _arviz().from_dict(
        posterior=posterior, sample_stats=stats, observed_data=observed or None, dims=dims
    )
    attrs = {
        "psis_k_hat": summary.k_hat,
        "psis_ess": summary.ess,
        "log_evidence": summary.log_evidence,
        "elbo": summary.elbo,
        "inference_library": "pyro+pyroflows",
        "resample": resample or "none",
    }
    idata.posterior.attrs.update(attrs)
    idata.sample_stats.attrs.update(attrs)
    return idata
