r"""Stochastic variational inference: :func:`fit_svi`, the sticking-the-landing ELBO, annealing.

``fit_svi`` maximises the evidence lower bound

.. math:: \mathrm{ELBO}(\phi) = \mathbb{E}_{q_\phi(z)}\big[\log p(x, z) - \log q_\phi(z)\big]

with Pyro's ``Trace_ELBO`` or :class:`TraceSTL_ELBO`, through the same training loop as
:func:`~pyroflows.infer.fit` (rollback on divergence, checkpoints with exact resume, progress
bar, callbacks).

References:
    [1] G. Roeder, Y. Wu, D. Duvenaud. Sticking the Landing: Simple, Lower-Variance Gradient
        Estimators for Variational Inference. NeurIPS 2017.
    [2] D. J. Rezende, S. Mohamed. Variational Inference with Normalizing Flows. ICML 2015.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyro
from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_if_enumerated, check_model_guide_match, check_site_shape
from torch import Tensor, nn

from .engine import History, LoopConfig, load_checkpoint, train

__all__ = ["TraceSTL_ELBO", "anneal_beta", "fit_svi"]


class TraceSTL_ELBO(Trace_ELBO):  # noqa: N801 - Pyro's naming (Trace_ELBO, RenyiELBO)
    r"""``Trace_ELBO`` with the sticking-the-landing gradient [1]: the same ELBO value, but the
    gradient drops the score term :math:`\nabla_\phi \log q_\phi(z)|_{z \text{ fixed}}`, keeping
    the pathwise gradient through :math:`z = z_\phi(\epsilon)`:

    .. math:: \hat g = \nabla_\phi \big[\log p(x, z_\phi) - \log q_{\bar\phi}(z_\phi)\big],
              \qquad \bar\phi = \text{stop\_gradient}(\phi).

    At the exact posterior this estimator has zero variance (``Trace_ELBO``'s does not).

    How: the guide is traced and the model replayed as usual; then the guide is replayed once
    more at the *detached* sampled values, which gives :math:`\log q_\phi(\bar z)` whose
    gradient is exactly the score term. The surrogate ELBO gets
    :math:`+ \log q_\phi(\bar z) - \overline{\log q_\phi(\bar z)}` (zero in value), which
    cancels the score term for every reparameterised guide site; non-reparameterised sites keep
    their score-function gradient. This works for any guide (param-store parameters, PyroModules,
    ``nn.Module`` flows) and costs one more guide pass in the density direction. With
    ``num_particles > 1`` and ``vectorize_particles=True`` the replay is vectorised as well.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> def guide():
        ...     pyro.sample("z", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))
        >>> loss = TraceSTL_ELBO().differentiable_loss(model, guide)
        >>> torch.autograd.grad(loss, pyro.param("m").unconstrained())[0]   # exact posterior
        tensor(0.)
    """

    def _get_trace(self, model, guide, args, kwargs):
        if isinstance(poutine.unwrap(guide), poutine.messenger.Messenger):
            raise NotImplementedError("TraceSTL_ELBO does not support GuideMessenger guides")
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace, self.max_plate_nesting)
        detached = poutine.Trace()
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample":
                detached.add_node(
                    name,
                    type="sample",
                    is_observed=site["is_observed"],
                    value=site["value"].detach(),
                    infer=site["infer"],
                )
        rescored = poutine.trace(poutine.replay(guide, trace=detached)).get_trace(*args, **kwargs)
        guide_trace = prune_subsample_sites(guide_trace)
        model_trace = prune_subsample_sites(model_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
            for trace in (model_trace, guide_trace):
                for site in trace.nodes.values():
                    if site["type"] == "sample":
                        check_site_shape(site, self.max_plate_nesting)

        def pathwise(name: str, site: dict) -> bool:
            g = guide_trace.nodes.get(name)
            return (
                g is not None
                and g["type"] == "sample"
                and not g["is_observed"]
                and g["fn"].has_rsample
            )

        rescored.compute_log_prob(site_filter=pathwise)
        score = 0.0
        for site in rescored.nodes.values():
            if "log_prob_sum" in site:
                score = score + site["log_prob_sum"]
        guide_trace.stl_score = score  # type: ignore[attr-defined]
        return model_trace, guide_trace

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss, surrogate = super()._differentiable_loss_particle(model_trace, guide_trace)
        score = getattr(guide_trace, "stl_score", 0.0)
        if isinstance(score, Tensor) and score.requires_grad:
            surrogate = surrogate - (score - score.detach())
        return loss, surrogate


def anneal_beta(step: int, anneal: int) -> float:
    r"""Inverse temperature of step ``step``: :math:`\beta_k = \min(1, 0.01 + 0.99\,k/N)` for
    ``anneal`` :math:`= N > 0` (rising linearly from 0.01 to 1 over the first N steps), else 1.

    Example:
        >>> [anneal_beta(k, 10) for k in (0, 5, 10, 20)]
        [0.01, 0.505, 1.0, 1.0]
    """
    if anneal <= 0:
        return 1.0
    return min(1.0, 0.01 + 0.99 * step / anneal)


class _SVITask:
    """The negative ELBO of ``(model, guide)``; parameters found by tracing ``param`` sites."""

    kind = "svi"
    has_validation = False

    def __init__(self, model, guide, args, kwargs, elbo: ELBO, anneal: int) -> None:
        self.model, self.guide, self.target = model, guide, guide
        self.args, self.kwargs = args, kwargs
        self.elbo, self.anneal = elbo, int(anneal)
        self._params: dict[str, Tensor] = {}
        # one pass to create the parameters (and let the ELBO guess max_plate_nesting)
        self._evaluate(0)
        for owner, mod in (("model", model), ("guide", guide)):
            if isinstance(mod, nn.Module):
                known = {id(p) for p in self._params.values()}
                for n, p in mod.named_parameters():
                    if p.requires_grad and id(p) not in known:
                        self._params[f"{owner}.{n}"] = p
        self._buffers = {}
        if isinstance(guide, nn.Module):
            self._buffers = {f"guide.{n}": b for n, b in guide.named_buffers()}

    def _evaluate(self, step: int) -> tuple[Tensor, float]:
        beta = anneal_beta(step, self.anneal)
        model = poutine.scale(self.model, scale=beta) if beta != 1.0 else self.model
        with poutine.trace(param_only=True) as tr:
            loss = self.elbo.differentiable_loss(model, self.guide, *self.args, **self.kwargs)
        known = {id(p) for p in self._params.values()}
        for name, site in tr.trace.nodes.items():
            if name not in self._params:
                p = site["value"].unconstrained()
                if p.requires_grad and id(p) not in known:  # aliases (e.g. Pyro's IAF) once
                    self._params[name] = p
                    known.add(id(p))
        return loss, beta

    def named_parameters(self) -> list[tuple[str, Tensor]]:
        return list(self._params.items())

    def state(self) -> dict[str, Tensor]:
        return {**self._params, **self._buffers}

    def meta(self) -> dict[str, Any]:
        return {"params": sorted(self._params)}

    def set_training(self, mode: bool) -> None:
        pass

    def loss(self, step: int) -> tuple[Tensor, Tensor, dict[str, Any]]:
        loss, beta = self._evaluate(step)
        return loss, loss, {"beta": beta} if self.anneal else {}

    def validate(self) -> float:  # pragma: no cover - has_validation is False
        raise NotImplementedError


def fit_svi(
    model: Callable,
    guide: Callable,
    *args: Any,
    steps: int = 1000,
    lr: float = 1e-2,
    num_particles: int = 1,
    loss: str | ELBO = "elbo",
    anneal: int = 0,
    progress: bool = True,
    clip_grad: float | None = None,
    seed: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    callbacks: Sequence[Callable] | Callable = (),
    optimizer: Any = "adam",
    lr_schedule: Any = None,
    warmup: int = 0,
    **kwargs: Any,
) -> History:
    """Fit ``guide`` (any Pyro guide, e.g. :class:`pyroflows.AutoFlow` or Pyro's autoguides) and
    the model's parameters by maximising the ELBO; ``*args, **kwargs`` go to model and guide.

    Args:
        steps, lr, optimizer, lr_schedule, warmup, clip_grad: as in :func:`~pyroflows.infer.fit`.
        num_particles: samples per ELBO estimate (vectorised over particles when > 1 and the
            model allows it; otherwise a loop over particles).
        loss: ``"elbo"`` (Pyro's ``Trace_ELBO``), ``"stl"`` (:class:`TraceSTL_ELBO`, the
            sticking-the-landing gradient), or any Pyro ``ELBO`` instance.
        anneal: temper the model's log-density (every model site, latent and observed; never
            the guide) by :math:`\\beta` rising linearly from 0.01 to 1 over the first
            ``anneal`` steps (:func:`anneal_beta`), via ``pyro.poutine.scale``.
        seed, progress, checkpoint, checkpoint_every, resume, callbacks: as in ``fit``;
            callbacks receive ``(step, history, guide)``.

    Returns:
        :class:`~pyroflows.infer.History`: ``train_loss`` is the negative ELBO estimate per
        step (``history.elbo`` the ELBO), ``beta`` the inverse temperatures when annealing
        (while :math:`\\beta < 1` the recorded loss is the tempered one).

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model(x):
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> guide = AutoNormal(model)
        >>> history = fit_svi(model, guide, torch.ones(3), steps=50, seed=0, progress=False)
        >>> history.steps
        50
    """
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=path")
    if num_particles < 1:
        raise ValueError(f"num_particles must be >= 1; got {num_particles}")
    if isinstance(loss, ELBO):
        elbo = loss
    elif loss in ("elbo", "stl"):
        cls = TraceSTL_ELBO if loss == "stl" else Trace_ELBO
        elbo = cls(num_particles=num_particles, vectorize_particles=num_particles > 1)
    else:
        raise ValueError(f"loss must be 'elbo', 'stl' or a pyro ELBO; got {loss!r}")
    ckpt = load_checkpoint(checkpoint) if resume else None
    if seed is not None:
        pyro.set_rng_seed(seed)
    try:
        task = _SVITask(model, guide, args, kwargs, elbo, anneal)
    except Exception as exc:
        if isinstance(loss, ELBO) or num_particles == 1:
            raise
        # the model cannot run vectorised over particles (e.g. Python control flow on sampled
        # values): loop over the particles instead (a genuine error is raised again here)
        elbo = type(elbo)(num_particles=num_particles, vectorize_particles=False)
        task = _SVITask(model, guide, args, kwargs, elbo, anneal)
        warnings.warn(
            f"the model does not run vectorised over {num_particles} particles "
            f"({type(exc).__name__}: {exc}); looping over them instead, which is slower. "
            "Index latent variables from the right (z[..., 0]) and use pyro.plate to vectorise.",
            UserWarning,
            stacklevel=2,
        )
    cfg = LoopConfig(
        steps=int(steps),
        lr=lr,
        optimizer=optimizer,
        lr_schedule=lr_schedule,
        warmup=warmup,
        clip_grad=clip_grad,
        progress=progress,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        callbacks=(callbacks,) if callable(callbacks) else tuple(callbacks),
        seed=0 if seed is None else int(seed),
        desc="fit_svi",
    )
    return train(task, cfg, ckpt)
