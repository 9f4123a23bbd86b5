"""One registry of every transform and flow; it drives the generic property tests.

Adding a transform or a flow is one line: ``id: Entry(factory, flags...)``. The factory takes
no arguments and returns a fresh object; ``shape`` is the event shape; ``context_dim`` > 0 makes
it conditional.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyroflows as pf
from pyroflows import transforms as T


@dataclass(frozen=True)
class Entry:
    factory: Callable[[], object]
    shape: tuple[int, ...] = (3,)
    context_dim: int = 0
    is_flow: bool = False  # a pf.Flow (else a single FlowTransform)
    has_inverse: bool = True  # exact inverse (numerical inverses still count)
    autoregressive: bool = False  # triangular Jacobian in the autoregressive order
    tol: float = 1e-6  # float64 tolerance of round trip and log-det checks
    fast: bool = True  # cheap enough for every batch-shape/dtype combination


H = (8, 8)
REGISTRY: dict[str, Entry] = {
    # --- transforms -------------------------------------------------------------------------
    "affine_coupling": Entry(lambda: T.Coupling(3, H)),
    "affine_coupling_swap": Entry(lambda: T.Coupling(4, H, swap=True), shape=(4,)),
    "additive_coupling": Entry(lambda: T.Coupling(3, H, transformer="additive")),
    "cond_affine_coupling": Entry(lambda: T.ConditionalCoupling(3, 2, H), context_dim=2),
    "maf": Entry(lambda: T.MaskedAutoregressive(3, H, fast="density"), autoregressive=True),
    "iaf": Entry(lambda: T.MaskedAutoregressive(3, H, fast="sample"), autoregressive=True),
    "maf_additive": Entry(
        lambda: T.MaskedAutoregressive(3, H, transformer="additive", order=[2, 0, 1]),
        autoregressive=True,
    ),
    "cond_maf": Entry(
        lambda: T.ConditionalMaskedAutoregressive(3, 2, H), context_dim=2, autoregressive=True
    ),
    "cond_iaf": Entry(
        lambda: T.ConditionalMaskedAutoregressive(3, 2, H, fast="sample"),
        context_dim=2,
        autoregressive=True,
    ),
    "planar": Entry(lambda: T.Planar(3), tol=1e-5),
    "cond_planar": Entry(lambda: T.ConditionalPlanar(3, 2, H), context_dim=2, tol=1e-5),
    "actnorm": Entry(lambda: T.ActNorm(3)),
    "elementwise_affine": Entry(lambda: T.ElementwiseAffine(3)),
    "lu_linear": Entry(lambda: T.LULinear(3)),
    "permute": Entry(lambda: T.Permute([2, 0, 1])),
    "reverse": Entry(lambda: T.Reverse(3)),
    # --- flows --------------------------------------------------------------------------------
    "MAF": Entry(lambda: pf.MAF(3, 2, H), is_flow=True),
    "IAF": Entry(lambda: pf.IAF(3, 2, H), is_flow=True),
    "RealNVP": Entry(lambda: pf.RealNVP(3, 2, H), is_flow=True),
    "NICE": Entry(lambda: pf.NICE(3, 2, H), is_flow=True),
    "Glow": Entry(lambda: pf.Glow(3, 2, H), is_flow=True),
    "Planar": Entry(lambda: pf.Planar(3, 4), is_flow=True, tol=1e-5),
    "MAF_diag_base": Entry(lambda: pf.MAF(3, 2, H, base="diag"), is_flow=True),
    "cond_MAF": Entry(lambda: pf.MAF(3, 2, H, context_dim=2), is_flow=True, context_dim=2),
    "cond_IAF": Entry(lambda: pf.IAF(3, 2, H, context_dim=2), is_flow=True, context_dim=2),
    "cond_RealNVP": Entry(lambda: pf.RealNVP(3, 2, H, context_dim=2), is_flow=True, context_dim=2),
    "cond_Glow": Entry(lambda: pf.Glow(3, 2, H, context_dim=2), is_flow=True, context_dim=2),
    "cond_Planar": Entry(
        lambda: pf.Planar(3, 2, H, context_dim=2), is_flow=True, context_dim=2, tol=1e-5
    ),
}
