r"""Analytic targets for variational inference, as Pyro models with known facts.

* The four 2-D energies of Rezende & Mohamed [1], :math:`p(z) \propto e^{-U_k(z)}`.
* Neal's funnel [2] in :math:`D` dimensions (normalised, so :math:`\log Z = 0`).
* Eight schools [3] in centred and non-centred form (reference posterior moments).

Each factory returns a :class:`VITarget`: a callable Pyro model plus what is known about it, so
that a guide's ELBO can be turned into a KL divergence,
:math:`\mathrm{KL}(q \,\|\, p) = \log Z - \mathrm{ELBO}`.

How the normaliser of the energies works
----------------------------------------
The joint density of an energy model is exactly :math:`e^{-U(z)}`, so
:math:`\log Z = \log \int e^{-U(z)}\,dz` is its log-normaliser (``VITarget.log_z``, by grid
quadrature; ``log Z(U1) = 1.877502`` on the plane [1]). A flat prior over the plane would give
that joint directly, but Pyro's ``ImproperUniform`` cannot be sampled, which breaks every Pyro
initialisation strategy (``init_to_median``, ``init_to_feasible``), ``AutoNormal`` and NUTS.
The models therefore sample ``z1`` and ``z2`` from a proper *reference measure* :math:`r(z)`
(a standard normal) and add :math:`-U(z) - \log r(z)` with ``pyro.factor``: the product is
:math:`e^{-U(z)}` again, every Pyro tool works, and tempering the whole model (annealing by
``poutine.scale``) still gives :math:`e^{-\beta U(z)}`.

:math:`U_2, U_3, U_4` depend on :math:`z_1` only through bounded terms, so :math:`e^{-U}` is
*not integrable* over the plane; as in the figures of [1] they are restricted to
:math:`z_1 \in (-4, 4)`: their reference measure for ``z1`` is ``Uniform(-4, 4)`` (guides reach
it through Pyro's sigmoid bijection), with :math:`z_2` free.

References:
    [1] D. J. Rezende, S. Mohamed. Variational Inference with Normalizing Flows. ICML 2015.
    [2] R. M. Neal. Slice sampling. Annals of Statistics 31(3), 2003.
    [3] D. B. Rubin. Estimation in parallel randomized experiments. J. Educational Statistics
        6(4), 1981; A. Gelman et al. Bayesian Data Analysis, 3rd ed., section 5.5.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

__all__ = [
    "EIGHT_SCHOOLS_SIGMA",
    "EIGHT_SCHOOLS_Y",
    "ENERGIES",
    "VITarget",
    "eight_schools",
    "energy",
    "energy_target",
    "funnel",
    "log_density",
]

#: Estimated treatment effects of the eight schools [3] (the observations).
EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
#: Standard errors of the eight schools' estimated treatment effects [3] (known).
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)

#: Box of U2-U4 along z1 (the energies are not integrable over the plane).
_BOX = 4.0


def _w1(z: Tensor) -> Tensor:
    return torch.sin(0.5 * math.pi * z[..., 0])


def _w2(z: Tensor) -> Tensor:
    return 3.0 * torch.exp(-0.5 * ((z[..., 0] - 1.0) / 0.6) ** 2)


def _w3(z: Tensor) -> Tensor:
    return 3.0 * torch.sigmoid((z[..., 0] - 1.0) / 0.3)


def _sq(a: Tensor, s: float) -> Tensor:
    return -0.5 * (a / s) ** 2


def _u1(z: Tensor) -> Tensor:
    ring = -_sq(z.norm(dim=-1) - 2.0, 0.4)
    return ring - torch.logaddexp(_sq(z[..., 0] - 2.0, 0.6), _sq(z[..., 0] + 2.0, 0.6))


def _u2(z: Tensor) -> Tensor:
    return -_sq(z[..., 1] - _w1(z), 0.4)


def _u3(z: Tensor) -> Tensor:
    d = z[..., 1] - _w1(z)
    return -torch.logaddexp(_sq(d, 0.35), _sq(d + _w2(z), 0.35))


def _u4(z: Tensor) -> Tensor:
    d = z[..., 1] - _w1(z)
    return -torch.logaddexp(_sq(d, 0.4), _sq(d + _w3(z), 0.35))


#: name -> (energy U(z), log Z, z1 box or None). log Z by trapezoid quadrature on a 4001^2 grid
#: (U1 over [-5, 5]^2; U2-U4 over (-4, 4) x [-8, 8]); U2's is exactly log(8 * 0.4 * sqrt(2 pi)).
ENERGIES: dict[str, tuple[Callable[[Tensor], Tensor], float, float | None]] = {
    "U1": (_u1, 1.877502, None),
    "U2": (_u2, 2.082089, _BOX),
    "U3": (_u3, 2.641705, _BOX),
    "U4": (_u4, 2.710698, _BOX),
}


def _lookup(name: str) -> tuple[Callable[[Tensor], Tensor], float, float | None]:
    if name not in ENERGIES:
        raise ValueError(f"unknown energy {name!r}; choose one of {sorted(ENERGIES)}.")
    return ENERGIES[name]


def _check_plane(z: Tensor) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"z must be a torch.Tensor; got {type(z).__name__}.")
    if z.shape[-1:] != (2,):
        raise ValueError(f"z must have shape (..., 2); got {tuple(z.shape)}.")


def energy(z: Tensor, name: str = "U1") -> Tensor:
    r"""The energy :math:`U(z)` of one of the 2-D targets of [1] (``"U1"`` ... ``"U4"``).

    Args:
        z: points of shape ``(..., 2)``.
        name: which energy.

    Returns:
        :math:`U(z)`, shape ``z.shape[:-1]`` (defined on the whole plane; see :func:`log_density`
        for the box of U2-U4).

    Example:
        >>> float(energy(torch.tensor([2.0, 0.0]), "U1"))   # on the ring, at a mode
        -0.0000...
        >>> energy(torch.zeros(5, 2), "U3").shape
        torch.Size([5])
    """
    _check_plane(z)
    return _lookup(name)[0](z)


def log_density(z: Tensor, name: str = "U1", *, normalized: bool = True) -> Tensor:
    r"""Log-density of an energy target on the plane, for plots and checks.

    Args:
        z: points of shape ``(..., 2)``.
        name: ``"U1"`` ... ``"U4"``.
        normalized: subtract :math:`\log Z` (a proper density) or return :math:`-U(z)`.

    Returns:
        :math:`-U(z) - \log Z` (or :math:`-U(z)`); ``-inf`` outside the box of U2-U4.

    Example:
        >>> g = torch.linspace(-5, 5, 401)
        >>> grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)
        >>> mass = log_density(grid.double(), "U1").exp().sum() * (g[1] - g[0]) ** 2
        >>> round(float(mass), 4)
        1.0
    """
    fn, log_z, box = _lookup(name)
    _check_plane(z)
    lp = -fn(z)
    if normalized:
        lp = lp - log_z
    if box is not None:
        lp = lp.masked_fill(z[..., 0].abs() >= box, -math.inf)
    return lp


@dataclass(frozen=True)
class VITarget:
    """A Pyro model with what is known about its posterior; calling it runs the model.

    Attributes:
        name: short label.
        model: the Pyro model (no arguments).
        log_z: log-normaliser of the model's joint density (``None`` if unknown); then
            ``KL(q || p) = log_z - ELBO``.
        latent_dim: number of unconstrained latent dimensions.
        reference: known posterior (mean, sd) of sites, e.g. ``{"mu": (4.41, 3.31)}``; for a
            vector site, a tuple of means and a tuple of sds.
        source: where ``log_z`` and ``reference`` come from.

    Example:
        >>> t = funnel(4)
        >>> t.log_z, t.latent_dim
        (0.0, 4)
    """

    name: str
    model: Callable[[], Any]
    log_z: float | None
    latent_dim: int
    reference: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    source: str = ""

    def __call__(self) -> Any:
        return self.model()


def energy_target(name: str = "U1") -> VITarget:
    r"""Pyro model of :math:`p(z) \propto e^{-U(z)}` for ``"U1"`` ... ``"U4"`` of [1].

    Latent sites ``z1`` and ``z2`` are drawn from a reference measure that ``pyro.factor``
    cancels, so the model's joint density is :math:`e^{-U(z)}` (see the module notes; ``z1`` is
    restricted to ``(-4, 4)`` for U2-U4); the deterministic site ``z`` holds the point as a
    vector of shape ``(2,)``.

    Example:
        >>> from pyro import poutine
        >>> t = energy_target("U1")
        >>> tr = poutine.trace(poutine.condition(t.model, {"z1": torch.tensor(2.0),
        ...                                                "z2": torch.tensor(0.0)})).get_trace()
        >>> float(tr.log_prob_sum()), t.log_z
        (0.0..., 1.877502)
    """
    fn, log_z, box = _lookup(name)

    def model() -> Tensor:
        ref1 = dist.Normal(0.0, 1.0) if box is None else dist.Uniform(-box, box)
        ref2 = dist.Normal(0.0, 1.0)
        z1 = pyro.sample("z1", ref1)
        z2 = pyro.sample("z2", ref2)
        z = pyro.deterministic("z", torch.stack([z1, z2], -1), event_dim=1)
        pyro.factor("energy", -fn(z) - ref1.log_prob(z1) - ref2.log_prob(z2))
        return z

    model.__name__ = f"energy_{name}"
    return VITarget(name, model, log_z, 2, source="grid quadrature (see ENERGIES)")


def funnel(dim: int = 10) -> VITarget:
    r"""Neal's funnel [2] in ``dim`` dimensions: :math:`v \sim N(0, 3^2)`,
    :math:`x_i \mid v \sim N(0, e^{v})` for :math:`i < D` (sites ``v`` and ``x``).

    The model is normalised (no data), so :math:`\log Z = 0` and :math:`\mathrm{KL} = -\mathrm{ELBO}`.

    Example:
        >>> t = funnel(10)
        >>> tr = pyro.poutine.trace(t.model).get_trace()
        >>> tr.nodes["x"]["value"].shape, t.reference["v"]
        (torch.Size([9]), (0.0, 3.0))
    """
    if not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2 (v plus at least one x); got {dim!r}.")

    def model() -> None:
        v = pyro.sample("v", dist.Normal(0.0, 3.0))
        scale = torch.exp(0.5 * v).unsqueeze(-1)  # broadcasts over vectorised draws of v
        pyro.sample("x", dist.Normal(scale.new_zeros(dim - 1), scale).to_event(1))

    model.__name__ = f"funnel_{dim}"
    ref = {"v": (0.0, 3.0)}
    return VITarget(f"funnel{dim}", model, 0.0, dim, ref, source="exact (a normalised model)")


def eight_schools(*, centered: bool = False) -> VITarget:
    r"""Eight schools [3]: :math:`\mu \sim N(0, 5^2)`, :math:`\tau \sim \text{HalfCauchy}(5)`,
    :math:`\theta_j \sim N(\mu, \tau^2)`, :math:`y_j \sim N(\theta_j, \sigma_j^2)`.

    The non-centred form samples ``theta_tilde`` :math:`\sim N(0, 1)` and records
    :math:`\theta = \mu + \tau \tilde\theta` as a deterministic site. Both have sites ``mu``,
    ``tau`` and ``theta`` in a plate named ``school``. ``reference`` holds posterior
    (mean, sd) of ``mu`` (4.41, 3.31) and ``tau`` (3.60, 3.20); ``log_z`` is unknown.

    Example:
        >>> t = eight_schools()
        >>> tr = pyro.poutine.trace(t.model).get_trace()
        >>> tr.nodes["theta_tilde"]["value"].shape, tr.nodes["theta"]["value"].shape
        (torch.Size([8]), torch.Size([8]))
        >>> t.latent_dim, t.reference["tau"]
        (10, (3.6, 3.2))
    """
    y = torch.tensor(EIGHT_SCHOOLS_Y)
    sigma = torch.tensor(EIGHT_SCHOOLS_SIGMA)

    def model() -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("school", len(EIGHT_SCHOOLS_Y)):
            if centered:
                theta = pyro.sample("theta", dist.Normal(mu, tau))
            else:
                tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
                theta = pyro.deterministic("theta", mu + tau * tilde, event_dim=0)
            pyro.sample("y", dist.Normal(theta, sigma), obs=y)

    kind = "centered" if centered else "noncentered"
    model.__name__ = f"eight_schools_{kind}"
    ref = {"mu": (4.41, 3.31), "tau": (3.60, 3.20)}
    source = "posterior moments of long MCMC runs (the values the issue gives)"
    return VITarget(f"eight_schools_{kind}", model, None, 10, ref, source=source)
