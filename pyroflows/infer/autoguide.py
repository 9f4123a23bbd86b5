r"""``AutoFlow``: a Pyro autoguide whose posterior is a pyroflows normalizing flow.

Like Pyro's :class:`~pyro.infer.autoguide.AutoContinuous` guides, ``AutoFlow`` maps every latent
site of the model to unconstrained space, concatenates them into one vector of size :math:`D`,
and fits a single joint distribution over it [1]. The posterior is

.. math:: z = \mu + L f(\varepsilon), \qquad \varepsilon \sim p_0,

where :math:`f` is the flow's bijection (any pyroflows family: IAF, MAF, RealNVP, NICE, Glow,
Planar, ...), :math:`p_0` its base distribution (a standard normal for the presets) and
:math:`\mu` and the lower-triangular :math:`L = \operatorname{diag}(\sigma)\,U` (positive
:math:`\sigma`, unit lower-triangular :math:`U`: ``AutoMultivariateNormal``'s parametrisation)
are learnable, initialised at the ``init_loc_fn`` location and at ``init_scale`` times the
identity. The presets start at the identity (Glow at a rotation, which leaves :math:`N(0, I)`
unchanged; Planar at a small random map): a preset with a ``zero_init`` option is built with
``zero_init=True`` whatever its own default (zero-initialised last conditioner layers), unless
``flow_kwargs`` says otherwise. So the guide starts at, and contains,
``AutoMultivariateNormal``: :math:`N(\mu, L L^\top)`, whose parameters learn at that guide's
rate, while the flow works in standardised, decorrelated coordinates and only adds to it.
With ``affine="diagonal"`` (the default above ``TRIL_MAX_DIM`` latent dimensions, where a dense
:math:`L` costs more than the flow) :math:`L = \operatorname{diag}(\sigma)`, which contains
``AutoDiagonalNormal``. The affine map sits on the latent side of the flow rather than on its
base side because there it survives any rotation or permutation inside the flow. (Pyro's
``AutoNormalizingFlow`` has none: its flow starts from a fixed :math:`N(0, I)`.)

Sampling and scoring take one pass: the guide draws :math:`z` and every transform keeps its
input, output and log-determinant in its cache slot, so when ``Trace_ELBO`` scores the guide's
sample the density is read back instead of inverting the flow (an IAF guide never runs its
sequential inverse; with ``fit_svi(..., loss="stl")`` neither, as
:class:`~pyroflows.infer.TraceSTL_ELBO` scores flow sites by forward passes from the cached base
draw). ``get_base_dist``/``get_transform`` expose :math:`p_0` and
:math:`\varepsilon \mapsto z` for :class:`~pyro.infer.reparam.NeuTraReparam` [2], so HMC runs in
the flow's base space.

References:
    [1] A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. M. Blei. Automatic Differentiation
        Variational Inference. JMLR 18(14), 2017.
    [2] M. Hoffman, P. Sountsov, J. V. Dillon, I. Langmore, D. Tran, S. Vasudevan. NeuTra-lizing
        Bad Geometry in Hamiltonian Monte Carlo Using Neural Transport. 2019.
    [3] D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling. Improved
        Variational Inference with Inverse Autoregressive Flow. NeurIPS 2016.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import LowerCholeskyAffine
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.nn import PyroParam
from torch import Tensor, nn
from torch.distributions import biject_to
from torch.distributions.transforms import AffineTransform, ComposeTransform, Transform

from ..flows import IAF, Flow, FlowDistribution

__all__ = ["AutoFlow"]

FlowSpec = type[Flow] | Callable[..., Flow]
AFFINES = ("auto", "tril", "diagonal")
#: ``affine="auto"`` is ``"tril"`` up to this many latent dimensions and ``"diagonal"`` above:
#: a dense :math:`L` has :math:`D(D+1)/2` parameters and costs :math:`D^2` per draw, as much as
#: the default IAF's five (64, 64) MADE nets (about :math:`10^3 D`) at :math:`D \approx 1000`.
TRIL_MAX_DIM = 1000


class AutoFlow(AutoContinuous):
    r"""Autoguide over all latent sites (in unconstrained space) with a normalizing-flow posterior.

    Args:
        model: a Pyro model with static structure and continuous latent sites.
        flow: a pyroflows :class:`~pyroflows.Flow` class (``pf.IAF``, ``pf.MAF``,
            ``pf.RealNVP``, ``pf.NICE``, ``pf.Glow``, ``pf.Planar``, ...), built as
            ``flow(latent_dim, **flow_kwargs)``, or a factory ``latent_dim -> Flow`` called the
            same way. Fast sampling matters most in a guide; every family works because scoring
            reads the cache (see the module notes). The default IAF follows [3]. A flow that
            takes ``zero_init`` gets ``zero_init=True`` (the identity start) unless
            ``flow_kwargs`` sets it.
        init_loc_fn: per-site initialisation of :math:`\mu` (see Pyro's
            :mod:`~pyro.infer.autoguide.initialization`).
        init_scale: initial :math:`\sigma` (> 0) of every unconstrained coordinate. The default
            1.0 starts the guide at the scale of Pyro's flow guides (a standard normal base);
            0.1, the scale of Pyro's Gaussian autoguides, trained slowly and unstably in the
            defaults sweep of ``benchmarks/vi_targets.py`` (docs/benchmarks.md).
        affine: the affine map :math:`z = \mu + L f(\varepsilon)` on the latent side of the
            flow: ``"tril"`` (a lower-triangular :math:`L = \operatorname{diag}(\sigma) U`, as
            in ``AutoMultivariateNormal``: the guide contains that guide), ``"diagonal"``
            (:math:`L = \operatorname{diag}(\sigma)`, the guide of pyroflows 0.1 and of
            guides saved by it), or ``"auto"`` (default): ``"tril"`` up to
            ``TRIL_MAX_DIM`` (1000) latent dimensions, ``"diagonal"`` above.
        **flow_kwargs: passed to ``flow``, e.g. ``num_layers=3, hidden_dims=(32, 32)``.

    Attributes:
        loc: :math:`\mu`, shape ``(latent_dim,)`` (created when the guide first sees the model).
        scale: :math:`\sigma` (a ``PyroParam`` constrained positive).
        scale_tril: :math:`U`, shape ``(latent_dim, latent_dim)`` (a ``PyroParam`` constrained
            unit lower-triangular), when the affine map is ``"tril"``.
        affine: ``"tril"`` or ``"diagonal"``, the map in use (``"auto"`` resolved when the
            guide first sees the model).
        flow: the :class:`~pyroflows.Flow` module; its parameters are registered with Pyro's
            parameter store whenever the guide runs, so ``SVI`` optimises them.
        quantile_samples: draws used by :meth:`median` and :meth:`quantiles` (Monte Carlo).
        default_loss: the loss :func:`~pyroflows.fit_svi` uses for this guide when given none:
            ``"stl"`` (sticking the landing: in the defaults sweep, at equal steps, a lower KL
            than ``"elbo"`` on U2, the funnel, a correlated Gaussian and a mixture, a larger
            mean error on eight schools, at 2-4 times the cost of a step; docs/benchmarks.md).
        default_lr_schedule: the learning-rate schedule :func:`~pyroflows.fit_svi` uses for
            this guide when given none: ``"tail"`` (constant, then a cosine decay to 0 over the
            last quarter of the steps; in the defaults sweep it cut eight schools' mean error
            from 0.116 to 0.017 reference sds and the constrained model's KL from 0.189 to
            0.102 without a loss elsewhere; docs/benchmarks.md, round 3).

    Example:
        >>> import pyro, pyro.distributions as dist, pyroflows as pf
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> pyro.clear_param_store()  # as with any Pyro guide: no stale values of the same names
        >>> def model():
        ...     a = pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.LogNormal(a, 0.5))
        >>> guide = pf.AutoFlow(model, pf.IAF, num_layers=2, hidden_dims=(16,))
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        >>> loss = svi.step()
        >>> guide.latent_dim, sorted(guide())
        (2, ['a', 'b'])
        >>> bool(guide()["b"] > 0)      # constrained space
        True
    """

    scale_constraint = constraints.softplus_positive
    scale_tril_constraint = constraints.unit_lower_cholesky
    quantile_samples: int = 1000
    default_loss: str = "stl"
    default_lr_schedule: str | None = "tail"
    #: (layout, state) of a guide read by :func:`pyroflows.load`, put in place at setup.
    _saved: tuple[dict, dict] | None = None

    def __init__(
        self,
        model: Callable[..., Any],
        flow: FlowSpec = IAF,
        *,
        init_loc_fn: Callable[[dict], Tensor] = init_to_median,
        init_scale: float = 1.0,
        affine: str = "auto",
        **flow_kwargs: Any,
    ) -> None:
        if isinstance(flow, Flow):
            raise TypeError(
                "flow must be a Flow class or a factory, not a built Flow: the latent dimension "
                "is only known once the guide has seen the model. Use e.g. flow=pf.IAF with "
                "num_layers=... as keywords, or flow=lambda dim: pf.IAF(dim, num_layers=3)."
            )
        if not callable(flow):
            raise TypeError(
                f"flow must be a pyroflows Flow class or a callable latent_dim -> Flow; "
                f"got {type(flow).__name__}."
            )
        if not callable(init_loc_fn):
            raise TypeError(
                f"init_loc_fn must be callable (e.g. pyro.infer.autoguide.init_to_median); "
                f"got {type(init_loc_fn).__name__}."
            )
        if (
            isinstance(init_scale, bool)
            or not isinstance(init_scale, (int, float))
            or not (math.isfinite(init_scale) and init_scale > 0)
        ):
            raise ValueError(f"init_scale must be a finite number > 0; got {init_scale!r}.")
        if not isinstance(affine, str) or affine not in AFFINES:
            raise ValueError(
                f"affine must be one of {', '.join(map(repr, AFFINES))} (a lower-triangular or a "
                f"diagonal scale; 'auto' picks by latent dimension); got {affine!r}."
            )
        self._affine_option = affine
        self.affine = affine
        self._flow_spec = flow
        self._flow_kwargs = dict(flow_kwargs)
        self._init_scale = float(init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn)

    # ---- construction --------------------------------------------------------------------
    def _build_flow(self, dim: int) -> Flow:
        kwargs = dict(self._flow_kwargs)
        if "zero_init" not in kwargs and _takes_zero_init(self._flow_spec):
            kwargs["zero_init"] = True  # the identity start, whatever the family's default
        flow = self._flow_spec(dim, **kwargs)
        name = getattr(self._flow_spec, "__name__", repr(self._flow_spec))
        if not isinstance(flow, Flow):
            raise TypeError(f"flow factory {name} returned {type(flow).__name__}, not a pf.Flow.")
        if flow.context_dim:
            raise ValueError(
                f"{name} built a conditional flow (context_dim={flow.context_dim}); a guide over "
                "the model's latents needs an unconditional flow: drop context_dim."
            )
        if tuple(flow.event_shape) != (dim,):
            raise ValueError(
                f"{name} built a flow with event_shape {tuple(flow.event_shape)}; the model has "
                f"{dim} unconstrained latent dimensions, so it must be ({dim},)."
            )
        return flow

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        if self._saved is not None:  # a guide from pyroflows.load: same latent sites?
            self._check_saved_layout(self._saved[0])
        loc = self._init_loc()
        self.loc = nn.Parameter(loc)
        self.scale = PyroParam(torch.full_like(loc, self._init_scale), self.scale_constraint)
        self.affine = self._affine_option
        if self.affine == "auto":
            self.affine = "tril" if self.latent_dim <= TRIL_MAX_DIM else "diagonal"
        if self.affine == "tril":
            self.scale_tril = PyroParam(
                torch.eye(self.latent_dim, dtype=loc.dtype, device=loc.device),
                self.scale_tril_constraint,
            )
        self.flow = self._build_flow(self.latent_dim).to(dtype=loc.dtype, device=loc.device)
        if self._saved is not None:
            self._restore_saved()

    def _require_setup(self) -> None:
        if self.prototype_trace is None:
            raise RuntimeError(
                "AutoFlow has not seen the model yet; call the guide once with the model's "
                "arguments (guide(*args)) or take one SVI step first."
            )

    # ---- the posterior -------------------------------------------------------------------
    def _affine(self) -> AffineTransform | LowerCholeskyAffine:
        # cache_size=1: scoring the sample z returns the cached f(eps) object, so the flow's own
        # slots are hit on the way back
        if self.affine == "tril":
            tril = self.scale[..., None] * self.scale_tril
            return LowerCholeskyAffine(self.loc, tril, cache_size=1)
        return AffineTransform(self.loc, self.scale, event_dim=1, cache_size=1)

    def get_base_dist(self) -> dist.TorchDistribution:
        """The flow's base distribution :math:`p_0` (standard normal for the presets)."""
        self._require_setup()
        return self.flow.base_dist()

    def get_transform(self, *args: Any, **kwargs: Any) -> Transform:
        r"""The map :math:`\varepsilon \mapsto \mu + L f(\varepsilon)` (base -> latent)."""
        self._require_setup()
        return ComposeTransform([*self.flow.transforms, self._affine()])

    def get_posterior(self, *args: Any, **kwargs: Any) -> FlowDistribution:
        """The posterior over the unconstrained latent vector; its ``rsample`` is one pass."""
        self._require_setup()
        flow = self.flow
        return FlowDistribution(flow.base_dist(), [*flow.transforms, self._affine()])

    # ---- point summaries (Monte Carlo: a flow has no closed-form quantiles) --------------
    @torch.no_grad()
    def quantiles(self, quantiles: Sequence[float] | Tensor, *args: Any, **kwargs: Any) -> dict:
        """Posterior quantiles of each latent site, estimated from ``quantile_samples`` draws.

        Quantiles are taken per unconstrained coordinate and mapped to the site's support, which
        is exact for elementwise supports (real, positive, intervals).

        Example:
            >>> import pyro, pyro.distributions as dist, pyroflows as pf
            >>> guide = pf.AutoFlow(lambda: pyro.sample("s", dist.LogNormal(0.0, 1.0)),
            ...                     init_scale=1.0, num_layers=1, hidden_dims=(4,))
            >>> q = guide.quantiles([0.25, 0.75])["s"]
            >>> q.shape, bool(q[0] < q[1])
            (torch.Size([2]), True)
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        q = torch.as_tensor(quantiles, dtype=self.loc.dtype, device=self.loc.device)
        if q.dim() != 1 or not bool(((q >= 0) & (q <= 1)).all()):
            raise ValueError(f"quantiles must be a list of numbers in [0, 1]; got {quantiles!r}.")
        draws = self.get_posterior(*args, **kwargs).rsample((int(self.quantile_samples),))
        latents = torch.quantile(draws, q, dim=0)
        out: dict[str, list[Tensor]] = {}
        for latent in latents:
            for site, value in self._unpack_latent(latent):
                out.setdefault(site["name"], []).append(biject_to(site["fn"].support)(value))
        return {k: torch.stack(v) for k, v in out.items()}

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict:
        """Posterior median of each latent site (Monte Carlo; see :meth:`quantiles`).

        Example:
            >>> import pyro, pyro.distributions as dist, pyroflows as pf
            >>> guide = pf.AutoFlow(lambda: pyro.sample("m", dist.Normal(3.0, 1.0)),
            ...                     init_loc_fn=pyro.infer.autoguide.init_to_mean, init_scale=0.1)
            >>> round(float(guide.median()["m"]), 1)     # starts at N(3, 0.1^2)
            3.0
        """
        return {k: v[0] for k, v in self.quantiles([0.5], *args, **kwargs).items()}

    # ---- saving and loading (pyroflows.save / pyroflows.load) ----------------------------
    def save(self, path: str | Path, /, **metadata: Any) -> None:
        r"""Save the guide: its flow (configuration and weights), :math:`\mu`, :math:`\sigma`,
        :math:`U` (``affine="tril"``) and the model's latent-site layout, with JSON-able
        ``metadata``.

        Reload with ``pf.load(path, model=model)`` (see :func:`pyroflows.load`): the model is
        not saved, and the loaded guide checks that it has the same latent sites.

        Example:
            >>> import os, tempfile, pyro, pyro.distributions as dist, pyroflows as pf
            >>> def model():
            ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
            >>> pyro.clear_param_store()
            >>> guide = pf.AutoFlow(model, num_layers=1, hidden_dims=(4,))
            >>> _ = guide()                          # the guide sees the model
            >>> path = os.path.join(tempfile.mkdtemp(), "guide.pt")
            >>> guide.save(path, note="demo")
            >>> again = pf.load(path, model=model)
            >>> _ = again()                          # sees the model: saved values put in place
            >>> _ = pyro.set_rng_seed(0); m = again.median()["s"]   # Monte Carlo: same seed
            >>> _ = pyro.set_rng_seed(0); bool(guide.median()["s"] == m), again.metadata
            (True, {'note': 'demo'})
        """
        from ..flows import save

        save(self, path, **metadata)

    def _site_layout(self) -> list[list[Any]]:
        """``[name, unconstrained shape, support kind]`` of each latent site, in packing order."""
        return [
            [name, list(self._unconstrained_shapes[name]), _support_kind(site["fn"].support)]
            for name, site in self.prototype_trace.iter_stochastic_nodes()
        ]

    def _saved_parts(self) -> tuple[dict | None, dict, dict]:
        """(flow configuration, layout, state dict) for :func:`pyroflows.save`."""
        if self.prototype_trace is None:
            raise ValueError(
                "AutoFlow has not seen the model yet, so it holds nothing to save; call the guide "
                "once with the model's arguments (guide(*args)) or take an SVI step first."
            )
        layout = {
            "latent_dim": int(self.latent_dim),
            "sites": self._site_layout(),
            "quantile_samples": int(self.quantile_samples),
            "affine": self.affine,
        }
        return self.flow.config, layout, self.state_dict()

    @classmethod
    def _from_saved(
        cls, model: Callable[..., Any], flow: Flow, layout: dict, state: dict
    ) -> AutoFlow:
        """A guide for ``model`` that puts a saved ``flow``, location and scale in place when it
        first sees the model (after checking the layout)."""
        dim = layout.get("latent_dim")
        sites = layout.get("sites")
        ok_sites = isinstance(sites, list) and all(
            isinstance(s, list)
            and len(s) == 3
            and isinstance(s[0], str)
            and isinstance(s[1], list)
            and all(isinstance(n, int) and n >= 0 for n in s[1])
            and isinstance(s[2], str)
            for s in sites
        )
        if not ok_sites or not isinstance(dim, int):
            raise ValueError("the guide's site layout is malformed")
        if dim != sum(math.prod(s[1]) for s in sites) or (dim,) != tuple(flow.event_shape):
            raise ValueError(
                f"the guide's site layout ({dim} latent dimensions) does not fit its flow "
                f"(event shape {tuple(flow.event_shape)})"
            )
        for key in ("loc", "scale_unconstrained"):
            if key not in state or tuple(state[key].shape) != (dim,):
                raise ValueError(f"the guide's {key!r} is missing or not of shape ({dim},)")
        # guides saved before the lower-triangular affine have a diagonal scale and no "affine"
        affine = "tril" if "scale_tril_unconstrained" in state else "diagonal"
        if layout.get("affine", "diagonal") != affine:
            raise ValueError(
                f"the guide's layout says affine={layout.get('affine')!r} but its state "
                f"{'has' if affine == 'tril' else 'lacks'} a 'scale_tril'"
            )
        if affine == "tril" and tuple(state["scale_tril_unconstrained"].shape) != (dim, dim):
            raise ValueError(f"the guide's 'scale_tril' is not of shape ({dim}, {dim})")

        def saved_flow(latent_dim: int) -> Flow:
            return flow

        saved_flow.__name__ = type(flow).__name__
        guide = cls(model, saved_flow, affine=affine)
        guide._saved = (layout, dict(state))
        samples = layout.get("quantile_samples")
        if isinstance(samples, int) and samples > 0:
            guide.quantile_samples = samples
        return guide

    def _check_saved_layout(self, layout: dict) -> None:
        saved = [(n, tuple(shape), kind) for n, shape, kind in layout["sites"]]
        found = [(n, tuple(shape), kind) for n, shape, kind in self._site_layout()]
        if saved != found:
            self.prototype_trace = None  # stay un-set-up: the next call checks again

            def text(sites: list) -> str:
                return ", ".join(f"{n} {shape} {kind}" for n, shape, kind in sites)

            raise ValueError(
                "the model's latent sites differ from those the guide was saved with: saved "
                f"[{text(saved)}], model [{text(found)}] (name, unconstrained shape, support); "
                "load the guide with the model it was fitted to."
            )

    def _restore_saved(self) -> None:
        _, state = self._saved
        self._saved = None
        full = {**state, **{f"flow.{k}": v for k, v in self.flow.state_dict().items()}}
        try:
            self.load_state_dict(full)
        except RuntimeError as exc:
            raise ValueError(
                f"the saved guide does not fit this AutoFlow: {' '.join(str(exc).split())}"
            ) from exc
        self.flow.train(self.training)
        # Pyro's parameter store keys parameters by name, and a value it already holds under
        # this guide's names (another AutoFlow that ran in this process) would replace the
        # loaded one; drop those so the loaded values are the ones registered.
        store = pyro.get_param_store()
        prefix = self._pyro_name
        for name in list(store.keys()):
            own = (f"{prefix}.loc", f"{prefix}.scale", f"{prefix}.scale_tril")
            if name in own or name.startswith(f"{prefix}.flow$$$"):
                del store[name]


def _takes_zero_init(spec: FlowSpec) -> bool:
    """Whether ``spec`` (a Flow class or factory) has a ``zero_init`` parameter by that name."""
    try:
        return "zero_init" in inspect.signature(spec).parameters
    except (TypeError, ValueError):  # a callable without an inspectable signature
        return False


def _support_kind(support: constraints.Constraint) -> str:
    """The kind of a site's support, without its parameters (``Real``, ``GreaterThan``, ...)."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return type(support).__name__.lstrip("_")
