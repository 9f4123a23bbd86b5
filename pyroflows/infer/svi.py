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

import inspect
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, Trace_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_if_enumerated, check_model_guide_match, check_site_shape
from torch import Tensor, nn

from ..flows import FlowDistribution
from ..transforms.base import FlowTransform
from .config import LOOP_OPTIONS, loop_config, unexpected_keyword, whole_number
from .distributed import svi_task
from .engine import History, Run

__all__ = ["TraceSTL_ELBO", "anneal_beta", "fit_svi"]

_T = TypeVar("_T")


def vectorised_or_loop(
    vectorised: Callable[[], _T],
    looped: Callable[[], _T],
    *,
    count: int,
    what: str,
    stacklevel: int = 2,
) -> _T:
    """Run ``vectorised()``; if the model cannot run vectorised (it raises), run ``looped()``
    instead and warn why. An error that ``looped()`` raises too is a genuine one and propagates.
    ``stacklevel`` is that of a warning issued by the caller itself.

    Shared by :func:`fit_svi` (particles) and :func:`~pyroflows.psis_diagnostic` /
    :func:`~pyroflows.to_inference_data` (draws), so the fallback and its message are one.

    Example:
        >>> import warnings
        >>> def vectorised():
        ...     raise RuntimeError("shape mismatch")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     vectorised_or_loop(vectorised, lambda: "looped", count=4, what="draws")
        'looped'
        >>> "does not run vectorised over 4 draws (RuntimeError: shape mismatch)" in str(
        ...     caught[0].message)
        True
    """
    try:
        return vectorised()
    except Exception as exc:
        result = looped()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        warnings.warn(
            f"the model does not run vectorised over {count} {what} "
            f"({type(exc).__name__}: {first}); looping over them instead, which is slower. "
            "Index latent variables from the right (z[..., 0], X @ w[..., None]) and use "
            "pyro.plate to vectorise.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
        return result


#: Largest event size whose flow sites get the inverse-free STL score (a D x D Jacobian per draw);
#: larger ones are scored by replaying the guide (which inverts the flow).
STL_JACOBIAN_MAX_DIM = 1024


def _flow_forward(transforms: Sequence[Any], x: Tensor) -> tuple[Tensor, Tensor]:
    """Base -> data through ``transforms`` without touching their cache slots: ``(y, log_det)``."""
    total: Tensor | float = 0.0
    for t in transforms:
        if isinstance(t, FlowTransform):
            y, ld = t.forward_and_log_det(x, None)
        elif isinstance(getattr(t, "parent", None), FlowTransform):
            y, ld = t.parent.forward_and_log_det(x, t.context)
        else:
            y = t(x)
            ld = t.log_abs_det_jacobian(x, y)
        if ld.dim() == y.dim():  # an elementwise log-det (event_dim 0 transform)
            ld = ld.sum(-1)
        total = total + ld
        x = y
    return x, total  # type: ignore[return-value]


def _fast_flow_site(site: dict) -> FlowDistribution | None:
    """The site's flow if its STL score can be had without inverting the flow."""
    fn = site["fn"]
    if (
        type(fn) is FlowDistribution
        and fn.temperature == 1.0
        and len(fn.event_shape) == 1
        and fn.event_shape[0] <= STL_JACOBIAN_MAX_DIM
        and fn.base_dist.event_shape == fn.event_shape
    ):
        return fn
    return None


def _base_of_sample(fn: FlowDistribution, value: Tensor) -> Tensor:
    """The base draw behind a sample of ``fn``, read back from the transforms' caches (no
    network pass for a sample the flow just drew)."""
    x = value
    for t in reversed(fn.transforms):
        x = t.inv(x)
    return x


def _stl_flow_score(fn: FlowDistribution, value: Tensor, base: Tensor) -> Tensor:
    r""":math:`\log q_\phi(\bar z)` at the sample :math:`\bar z = T_\phi(\bar\varepsilon)` with
    the gradient of the score term, computed by forward passes only (no inverse).

    With :math:`\varepsilon(\phi) = T_\phi^{-1}(\bar z)`, the implicit function theorem gives
    :math:`\partial_\phi \varepsilon = -J^{-1} \partial_\phi T_\phi(\bar\varepsilon)` with
    :math:`J = \partial T / \partial \varepsilon` at :math:`\bar\varepsilon`. So
    :math:`\tilde\varepsilon = \bar\varepsilon - J^{-1}\big(T_\phi(\bar\varepsilon) -
    \overline{T_\phi(\bar\varepsilon)}\big)` equals :math:`\bar\varepsilon` in value and
    :math:`\varepsilon(\phi)` to first order, and
    :math:`\log p_0(\tilde\varepsilon) - \log|\det J_{T_\phi}(\tilde\varepsilon)|` has the
    value and the gradient of :math:`\log q_\phi(\bar z)`. :math:`J` (one batched pass of
    :math:`D` copies) and the solve are constants of the graph. ``value`` is the sample and
    ``base`` its base draw (a fixed base: ``value`` is :math:`T_\phi(\bar\varepsilon)` already).
    """
    eps = base.detach()
    dim = eps.shape[-1]
    with torch.enable_grad():
        y = value if not base.requires_grad else _flow_forward(fn.transforms, eps)[0]
        residual = y - y.detach()  # zero in value; carries d T_phi(eps) / d phi
        copies = eps.expand(dim, *eps.shape).clone().requires_grad_(True)
        out = _flow_forward(fn.transforms, copies)[0]
        eye = torch.eye(dim, dtype=out.dtype, device=out.device)
        eye = eye.reshape(dim, *([1] * (eps.dim() - 1)), dim)
        (rows,) = torch.autograd.grad((out * eye).sum(), copies)
        jac = rows.movedim(0, -2)  # jac[..., i, j] = d y_i / d eps_j
        shift = torch.linalg.solve(jac, residual.unsqueeze(-1)).squeeze(-1)
        eps_t = eps - shift
        log_det = _flow_forward(fn.transforms, eps_t)[1]
        return fn.base_dist.log_prob(eps_t) - log_det


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

    Flow sites (a :class:`~pyroflows.FlowDistribution` over vectors, as in
    :class:`~pyroflows.AutoFlow`) are not replayed, because the density direction of an IAF is
    :math:`D` sequential passes: their score comes from forward passes only. The base draw
    :math:`\bar\varepsilon` is read back from the transforms' cache slots, and by the implicit
    function theorem :math:`\tilde\varepsilon = \bar\varepsilon - J^{-1}(T_\phi(\bar\varepsilon)
    - \overline{T_\phi(\bar\varepsilon)})`, with :math:`J` the (constant) Jacobian of the flow
    at :math:`\bar\varepsilon`, has the value and the first derivative in :math:`\phi` of
    :math:`T_\phi^{-1}(\bar z)`; so :math:`\log p_0(\tilde\varepsilon) - \log|\det
    J_{T_\phi}(\tilde\varepsilon)|` has the value and gradient of
    :math:`\log q_\phi(\bar z)`. Cost: one batched forward pass of :math:`D` copies of each
    draw for :math:`J`, a :math:`D \times D` solve, one more forward pass (up to
    ``STL_JACOBIAN_MAX_DIM`` = 1024 dimensions; larger flows are replayed).

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
        # flow sites: their base draws, read from the caches before scoring consumes them
        flows = {}
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and not site["is_observed"] and site["fn"].has_rsample:
                fn = _fast_flow_site(site)
                if fn is not None:
                    flows[name] = (fn, _base_of_sample(fn, site["value"]))
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

        rescored.compute_log_prob(site_filter=lambda n, s: pathwise(n, s) and n not in flows)
        score = 0.0
        for site in rescored.nodes.values():
            if "log_prob_sum" in site:
                score = score + site["log_prob_sum"]
        for name, (fn, base) in flows.items():
            site = guide_trace.nodes[name]
            log_q = _stl_flow_score(fn, site["value"], base)
            score = score + scale_and_mask(log_q, site["scale"], site["mask"]).sum()
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
    desc = "fit_svi"
    has_validation = False

    def __init__(self, model, guide, args, kwargs, elbo: ELBO, anneal: int) -> None:
        self.model, self.guide, self.target = model, guide, guide
        self.args, self.kwargs = args, kwargs
        self.elbo, self.anneal = elbo, anneal
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


#: ``fit_svi``'s defaults of loop options whose ``fit`` default differs
#: (:class:`~pyroflows.infer.LoopConfig` holds the rest).
SVI_DEFAULTS: dict[str, Any] = {"lr": 3e-3}

#: ``fit_svi``'s own keywords (the others are the loop's, then the model's and guide's).
SVI_OPTIONS = ("loss", "num_particles", "anneal", "final_check", "num_check_samples")


def _check_model_keywords(model: Callable, kwargs: dict[str, Any]) -> None:
    """Refuse a keyword that is neither a loop option nor one the model can take (a misspelt
    option such as ``stpes=``), with the closest option; a model whose signature cannot be read,
    or that takes ``**kwargs``, receives them all."""
    try:
        params = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    for name in kwargs:
        if name not in params or params[name].kind is inspect.Parameter.POSITIONAL_ONLY:
            raise unexpected_keyword("fit_svi", name, [*LOOP_OPTIONS, *SVI_OPTIONS, *params])


def fit_svi(
    model: Callable,
    guide: Callable,
    *args: Any,
    loss: str | ELBO | None = None,
    num_particles: int = 1,
    anneal: int = 0,
    final_check: bool = True,
    num_check_samples: int = 1000,
    distributed: bool | None = None,
    **kwargs: Any,
) -> History:
    """Fit ``guide`` (any Pyro guide, e.g. :class:`pyroflows.AutoFlow` or Pyro's autoguides) and
    the model's parameters by maximising the ELBO; ``*args`` and the keywords that are not
    options go to model and guide.

    The returned guide is the last iterate. At a constant learning rate that iterate still
    moves with the noise of the one-particle gradient, so :class:`~pyroflows.AutoFlow` trains by
    default with ``lr_schedule="tail"`` (constant, then a cosine decay to 0 over the last
    quarter of the steps): in ``benchmarks/vi_targets.py`` (docs/benchmarks.md, issue 13,
    rounds 3-4) it took eight schools' mean error after 4000 steps from 0.116 to 0.017
    reference sds and lowered the KL on every target of the suite (the constrained model 0.189
    -> 0.102 nats, logistic regression 2.83 -> 2.38), median of 3 seeds. Pyro's guides keep a
    constant rate by default (their numbers there were measured so); pass ``lr_schedule="tail"``
    for them too. ``"cosine"`` (the decay over the whole run) also settles the last iterate,
    but slows a fit still far from converged (logistic regression: 2.83 -> 4.08).

    Args:
        num_particles: samples per ELBO estimate (vectorised over particles when > 1 and the
            model allows it; otherwise a loop over particles).
        loss: ``"elbo"`` (Pyro's ``Trace_ELBO``), ``"stl"`` (:class:`TraceSTL_ELBO`, the
            sticking-the-landing gradient), or any Pyro ``ELBO`` instance. Default: the
            guide's ``default_loss`` attribute where it has one (``"stl"`` for
            :class:`~pyroflows.AutoFlow`, chosen by the defaults sweep of
            ``benchmarks/vi_targets.py``, docs/benchmarks.md), else ``"elbo"`` (Pyro's own
            guides).
        anneal: temper the model's log-density (every model site, latent and observed; never
            the guide) by :math:`\\beta` rising linearly from 0.01 to 1 over the first
            ``anneal`` steps (:func:`anneal_beta`), via ``pyro.poutine.scale``.
        final_check: after training, judge the guide by PSIS (:func:`~pyroflows.psis_diagnostic`
            from ``num_check_samples`` draws, one vectorised pass where the model allows it) and
            look for a stalled fit; warn (``RuntimeWarning``) and say so in
            ``history.message`` when :math:`\\hat k > 0.7` (the guide misses posterior mass,
            e.g. heavy tails that a training loss does not show), when rollbacks halved the
            learning rate three times or more, or when the ELBO of the last tenth of the steps
            is no better than that of the first tenth. The global RNG state is left as it was.
        num_check_samples: guide draws of the final check (>= 2; k-hat wants a few hundred).
        **kwargs: the training loop's options, documented in
            :class:`~pyroflows.infer.LoopConfig` and shared with :func:`~pyroflows.infer.fit`:
            ``steps`` (default 1000), ``lr`` (default 3e-3), ``optimizer``, ``lr_schedule``
            (default: the guide's ``default_lr_schedule`` attribute where it has one,
            ``"tail"`` for :class:`~pyroflows.AutoFlow`, else ``None``; pass
            ``lr_schedule=None`` for a constant rate), ``warmup``, ``weight_decay``, ``clip_grad``, ``progress``, ``seed``,
            ``checkpoint``, ``checkpoint_every``, ``resume``, ``callbacks`` (``cb(step,
            history, guide)``); ``eval_every`` and ``patience`` are ``fit``'s (there is no
            validation loss here). The other keywords go to the model and the guide; one the
            model cannot take raises a ``TypeError`` naming the closest option.
        distributed: data-parallel over a ``torch.distributed`` process group (``None``: when
            one is initialised; ``True``: initialise it from torchrun's variables): gradients
            are averaged over the processes, losses all-reduced, checkpoints written by rank 0;
            every process draws the same guide noise, and a subsampled ``pyro.plate``
            (``subsample_size`` per process) takes its share of one seeded global subsample. With
            ``seed`` given, subsample indices are a function of (seed, step, plate), also in one
            process. See docs/scaling.md.

    Returns:
        :class:`~pyroflows.infer.History`: ``train_loss`` is the negative ELBO estimate per
        step (``history.elbo`` the ELBO), ``beta`` the inverse temperatures when annealing
        (while :math:`\\beta < 1` the recorded loss is the tempered one). ``history.final_check``
        holds the :class:`~pyroflows.PSISDiagnostic` of the final check (``None`` when it was
        off, the fit diverged or the check could not run; ``history.message`` then says why).

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model(x):
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> guide = AutoNormal(model)
        >>> history = fit_svi(model, guide, torch.ones(3), steps=100, lr=0.1, seed=0,
        ...                   progress=False)
        >>> history.steps, history.final_check.verdict, history.message
        (100, 'good', '')
    """
    options = {k: kwargs.pop(k) for k in LOOP_OPTIONS if k in kwargs}
    options.setdefault("lr_schedule", getattr(guide, "default_lr_schedule", None))
    cfg = loop_config("fit_svi", options, own=SVI_OPTIONS, defaults=SVI_DEFAULTS)
    for name in ("eval_every", "patience"):
        if getattr(cfg, name) is not None:
            raise TypeError(
                f"fit_svi has no validation loss, so it takes no {name} (an option of fit)"
            )
    _check_model_keywords(model, kwargs)
    num_particles = whole_number("num_particles", num_particles, 1)
    anneal = whole_number("anneal", anneal, 0)
    if final_check and (
        isinstance(num_check_samples, bool)
        or not isinstance(num_check_samples, int)
        or num_check_samples < 2
    ):
        raise ValueError(
            f"num_check_samples must be an integer >= 2 (1000 is the default); "
            f"got {num_check_samples!r}. Pass final_check=False to skip the final check."
        )
    if loss is None:
        loss = getattr(guide, "default_loss", "elbo")
    if isinstance(loss, ELBO):
        elbo = loss
    elif loss in ("elbo", "stl"):
        cls = TraceSTL_ELBO if loss == "stl" else Trace_ELBO
        elbo = cls(num_particles=num_particles, vectorize_particles=num_particles > 1)
    else:
        raise ValueError(f"loss must be 'elbo', 'stl' or a pyro ELBO; got {loss!r}")
    run = Run(cfg, seed_fixes="the initial parameters and the ELBO's random draws")
    if isinstance(loss, ELBO) or num_particles == 1:
        task = _SVITask(model, guide, args, kwargs, elbo, anneal)
    else:
        looped = type(elbo)(num_particles=num_particles, vectorize_particles=False)
        task = vectorised_or_loop(
            lambda: _SVITask(model, guide, args, kwargs, elbo, anneal),
            lambda: _SVITask(model, guide, args, kwargs, looped, anneal),
            count=num_particles,
            what="particles",
            stacklevel=2,
        )
    task = svi_task(task, distributed, cfg.seed)  # issue 15 hook: torch.distributed, subsamples
    history = run.train(task)
    if final_check and not history.diverged:
        _final_check(history, model, guide, args, kwargs, num_check_samples)
    return history


#: Rollbacks (each halves the learning rate) from which a finished fit is reported as stalled.
STALL_ROLLBACKS = 3


def _stall(history: History) -> str:
    """Why the fit looks stalled ("" when it does not)."""
    reasons = []
    if history.rollbacks >= STALL_ROLLBACKS:
        reasons.append(
            f"{history.rollbacks} rolled-back steps halved the learning rate to "
            f"{history.final_lr:.3g}"
        )
    losses = [v for v in history.train_loss if math.isfinite(v)]
    if len(losses) >= 50:
        w = len(losses) // 10
        first, last = statistics.median(losses[:w]), statistics.median(losses[-w:])
        if not last < first:
            reasons.append(
                f"the ELBO did not improve (median {-first:.4g} over the first {w} steps, "
                f"{-last:.4g} over the last {w})"
            )
    return "; ".join(reasons)


def _final_check(
    history: History, model: Callable, guide: Callable, args: tuple, kwargs: dict, n: int
) -> None:
    """PSIS k-hat of the fitted guide and a stall check, into ``history`` (warns on trouble)."""
    from ..diagnostics.arviz import psis_diagnostic  # diagnostics import infer, not the reverse

    problems = []
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # fit_svi already said it loops
            diag = psis_diagnostic(model, guide, *args, num_samples=n, **kwargs)
    except Exception as exc:  # the fit stands; only its check failed
        problems.append(
            f"the final check could not run ({type(exc).__name__}: {exc}); "
            "pass final_check=False to skip it"
        )
    else:
        history.final_check = diag
        if diag.k_hat > 0.7:
            problems.append(
                f"the fitted guide is unreliable: {diag}. Its importance weights have a heavy "
                "tail (the guide misses posterior mass); train longer or with a lower lr, try "
                "the other loss (loss='stl' or 'elbo'), more particles or another flow, and "
                "check with "
                "pf.psis_diagnostic(..., num_samples=10000)"
            )
    stall = _stall(history)
    if stall:
        problems.append(f"the fit stalled: {stall}")
    if problems:
        text = "; ".join(problems)
        history.message = f"{history.message}; {text}" if history.message else text
        warnings.warn(text, RuntimeWarning, stacklevel=3)
