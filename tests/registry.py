"""One registry of every transform and flow; it drives the generic property tests.

Adding a transform or a flow is one line: ``id: Entry(factory, flags...)``. The factory takes
no arguments and returns a fresh object; ``shape`` is the event shape; ``context_dim`` > 0 makes
it conditional.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

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
TIGHT = T.ODESolver(rtol=1e-8, atol=1e-8)  # continuous flows: round trips to 1e-6
REGISTRY: dict[str, Entry] = {
    # --- transforms -------------------------------------------------------------------------
    "affine_coupling": Entry(lambda: T.Coupling(3, hidden_dims=H)),
    "affine_coupling_swap": Entry(lambda: T.Coupling(4, hidden_dims=H, swap=True), shape=(4,)),
    "additive_coupling": Entry(lambda: T.Coupling(3, hidden_dims=H, transformer="additive")),
    "cond_affine_coupling": Entry(
        lambda: T.ConditionalCoupling(3, context_dim=2, hidden_dims=H), context_dim=2
    ),
    "maf": Entry(
        lambda: T.MaskedAutoregressive(3, hidden_dims=H, fast="density"), autoregressive=True
    ),
    "iaf": Entry(
        lambda: T.MaskedAutoregressive(3, hidden_dims=H, fast="sample"), autoregressive=True
    ),
    "maf_additive": Entry(
        lambda: T.MaskedAutoregressive(3, hidden_dims=H, transformer="additive", order=[2, 0, 1]),
        autoregressive=True,
    ),
    "cond_maf": Entry(
        lambda: T.ConditionalMaskedAutoregressive(3, context_dim=2, hidden_dims=H),
        context_dim=2,
        autoregressive=True,
    ),
    "cond_iaf": Entry(
        lambda: T.ConditionalMaskedAutoregressive(3, context_dim=2, hidden_dims=H, fast="sample"),
        context_dim=2,
        autoregressive=True,
    ),
    # one variable: its conditioner output may depend on the context only (issue 10 item 1)
    "cond_maf_1d": Entry(
        lambda: T.ConditionalMaskedAutoregressive(1, context_dim=1, hidden_dims=H),
        shape=(1,),
        context_dim=1,
        autoregressive=True,
    ),
    "planar": Entry(lambda: T.PlanarTransform(3), tol=1e-5),
    "cond_planar": Entry(
        lambda: T.ConditionalPlanarTransform(3, context_dim=2, hidden_dims=H),
        context_dim=2,
        tol=1e-5,
    ),
    "actnorm": Entry(lambda: T.ActNorm(3)),
    "elementwise_affine": Entry(lambda: T.ElementwiseAffine(3)),
    "standardize": Entry(  # fixed buffers: data = mean + std * base
        lambda: T.Standardize(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 3.0]))
    ),
    "lu_linear": Entry(lambda: T.LULinear(3)),
    "permute": Entry(lambda: T.Permute([2, 0, 1])),
    "reverse": Entry(lambda: T.Reverse(3)),
    # continuous flows: tight solver tolerances so float64 checks see the exact map
    "cnf": Entry(lambda: T.ContinuousFlow(3, hidden_dims=H, solver=TIGHT), tol=1e-6, fast=False),
    "cond_cnf": Entry(
        lambda: T.ConditionalContinuousFlow(3, context_dim=2, hidden_dims=H, solver=TIGHT),
        context_dim=2,
        tol=1e-6,
        fast=False,
    ),
    # --- image transforms: shape is the base-side event shape --------------------------------
    # (image flows use logit=None here: the generic tests score real-valued data; the logit
    # forms are checked on [0, 1] data in tests/test_image.py)
    "squeeze": Entry(lambda: T.Squeeze((2, 4, 4)), shape=(8, 2, 2)),
    "reshape": Entry(lambda: T.Reshape((2, 4, 4), data_shape=(8, 2, 2)), shape=(2, 4, 4)),
    "logit": Entry(lambda: T.Logit((2, 4, 4), alpha=0.05), shape=(2, 4, 4)),
    "actnorm_image": Entry(lambda: T.ActNorm(2, event_shape=(2, 4, 4)), shape=(2, 4, 4)),
    "lu_linear_image": Entry(lambda: T.LULinear(3, event_shape=(3, 2, 2)), shape=(3, 2, 2)),
    "image_coupling": Entry(
        lambda: T.ImageCoupling((3, 4, 4), hidden_channels=(8,)), shape=(3, 4, 4)
    ),
    "image_coupling_swap_additive": Entry(
        lambda: T.ImageCoupling((3, 4, 4), hidden_channels=(8,), swap=True, transformer="additive"),
        shape=(3, 4, 4),
    ),
    "image_checkerboard": Entry(
        lambda: T.ImageCoupling((2, 4, 4), hidden_channels=(8,), mask="checkerboard"),
        shape=(2, 4, 4),
    ),
    "image_checkerboard_swap": Entry(
        lambda: T.ImageCoupling((1, 4, 4), hidden_channels=(8, 8), mask="checkerboard", swap=True),
        shape=(1, 4, 4),
    ),
    "cond_image_coupling": Entry(
        lambda: T.ConditionalImageCoupling((2, 4, 4), context_dim=2, hidden_channels=(8,)),
        shape=(2, 4, 4),
        context_dim=2,
    ),
    "cond_split_prior": Entry(  # Glow's learned prior of a factored-out half
        lambda: T.ConditionalImageCoupling((4, 2, 2), context_dim=2, hidden_channels=(), swap=True),
        shape=(4, 2, 2),
        context_dim=2,
    ),
    "channel_slice": Entry(
        lambda: T.ChannelSlice(
            (4, 2, 2),
            start=1,
            transforms=[
                T.ImageCoupling((3, 2, 2), hidden_channels=(8,)),
                T.LULinear(3, event_shape=(3, 2, 2)),
            ],
        ),
        shape=(4, 2, 2),
    ),
    "cond_channel_slice": Entry(
        lambda: T.ConditionalChannelSlice(
            (4, 2, 2),
            start=2,
            transforms=[
                T.ConditionalImageCoupling(
                    (2, 2, 2), context_dim=2, hidden_channels=(8,), mask="checkerboard"
                )
            ],
        ),
        shape=(4, 2, 2),
        context_dim=2,
    ),
    # --- flows --------------------------------------------------------------------------------
    "MAF": Entry(lambda: pf.MAF(3, num_layers=2, hidden_dims=H), is_flow=True),
    "IAF": Entry(lambda: pf.IAF(3, num_layers=2, hidden_dims=H), is_flow=True),
    "MAF_base_side": Entry(
        lambda: pf.MAF(3, num_layers=2, hidden_dims=H, invert_affine=False), is_flow=True
    ),
    "affine_coupling_data_side": Entry(
        lambda: T.Coupling(4, hidden_dims=H, invert_affine=True), shape=(4,)
    ),
    "RealNVP": Entry(lambda: pf.RealNVP(3, num_layers=2, hidden_dims=H), is_flow=True),
    "NICE": Entry(lambda: pf.NICE(3, num_layers=2, hidden_dims=H), is_flow=True),
    "Glow": Entry(lambda: pf.Glow(3, num_layers=2, hidden_dims=H), is_flow=True),
    "Planar": Entry(lambda: pf.Planar(3, num_layers=4), is_flow=True, tol=1e-5),
    "MAF_diag_base": Entry(
        lambda: pf.MAF(3, num_layers=2, hidden_dims=H, base="diag"), is_flow=True
    ),
    "cond_MAF": Entry(
        lambda: pf.MAF(3, num_layers=2, hidden_dims=H, context_dim=2), is_flow=True, context_dim=2
    ),
    "cond_IAF": Entry(
        lambda: pf.IAF(3, num_layers=2, hidden_dims=H, context_dim=2), is_flow=True, context_dim=2
    ),
    "cond_IAF_1d": Entry(
        lambda: pf.IAF(1, num_layers=2, hidden_dims=H, context_dim=1),
        shape=(1,),
        is_flow=True,
        context_dim=1,
    ),
    "cond_RealNVP": Entry(
        lambda: pf.RealNVP(3, num_layers=2, hidden_dims=H, context_dim=2),
        is_flow=True,
        context_dim=2,
    ),
    "cond_Glow": Entry(
        lambda: pf.Glow(3, num_layers=2, hidden_dims=H, context_dim=2), is_flow=True, context_dim=2
    ),
    "cond_Planar": Entry(
        lambda: pf.Planar(3, num_layers=2, hidden_dims=H, context_dim=2),
        is_flow=True,
        context_dim=2,
        tol=1e-5,
    ),
    "Glow_image": Entry(
        lambda: pf.Glow(
            shape=(1, 4, 4), levels=2, steps_per_level=1, hidden_channels=8, logit=None
        ),
        shape=(1, 4, 4),
        is_flow=True,
        tol=1e-5,
    ),
    "Glow_image_additive": Entry(
        lambda: pf.Glow(
            shape=(1, 4, 4),
            levels=2,
            steps_per_level=2,
            hidden_channels=(8,),
            coupling="additive",
            learned_prior=False,
            logit=None,
        ),
        shape=(1, 4, 4),
        is_flow=True,
    ),
    "RealNVP_image": Entry(
        lambda: pf.RealNVP(
            shape=(1, 4, 4), levels=2, steps_per_level=1, hidden_channels=8, logit=None
        ),
        shape=(1, 4, 4),
        is_flow=True,
        tol=1e-5,
    ),
    "cond_Glow_image": Entry(
        lambda: pf.Glow(
            shape=(1, 4, 4),
            levels=2,
            steps_per_level=1,
            hidden_channels=(8,),
            context_dim=2,
            learned_prior=False,
            logit=None,
        ),
        shape=(1, 4, 4),
        is_flow=True,
        context_dim=2,
        tol=1e-5,
    ),
    "CNF": Entry(
        lambda: pf.CNF(3, hidden_dims=H, solver=TIGHT), is_flow=True, tol=1e-6, fast=False
    ),
    "cond_CNF": Entry(
        lambda: pf.CNF(3, hidden_dims=H, context_dim=2, solver=TIGHT),
        is_flow=True,
        context_dim=2,
        tol=1e-6,
        fast=False,
    ),
    # --- neural spline flows (rational-quadratic spline transformer) ----------------------------
    "spline_coupling": Entry(
        lambda: T.Coupling(3, hidden_dims=H, transformer="spline", bins=4, bound=2.0)
    ),
    "spline_coupling_swap": Entry(
        lambda: T.Coupling(4, hidden_dims=H, transformer="spline", swap=True), shape=(4,)
    ),
    "cond_spline_coupling": Entry(
        lambda: T.ConditionalCoupling(
            3, context_dim=2, hidden_dims=H, transformer="spline", bins=4, bound=2.0
        ),
        context_dim=2,
    ),
    "cond_spline_coupling_1d": Entry(
        lambda: T.ConditionalCoupling(
            1, context_dim=2, hidden_dims=H, transformer="spline", bins=4
        ),  # inside +-5
        shape=(1,),
        context_dim=2,
    ),
    "spline_maf": Entry(
        lambda: T.MaskedAutoregressive(3, hidden_dims=H, transformer="spline", bins=4, bound=2.0),
        autoregressive=True,
    ),
    "spline_maf_base_side": Entry(
        lambda: T.MaskedAutoregressive(
            3, hidden_dims=H, transformer="spline", bins=4, bound=2.0, invert_spline=False
        ),
        autoregressive=True,
    ),
    "spline_coupling_base_side": Entry(
        lambda: T.Coupling(3, hidden_dims=H, transformer="spline", bound=2.0, invert_spline=False)
    ),
    "spline_iaf": Entry(
        lambda: T.MaskedAutoregressive(
            3, hidden_dims=H, fast="sample", transformer="spline", bound=2.0
        ),
        autoregressive=True,
    ),
    "cond_spline_maf": Entry(
        lambda: T.ConditionalMaskedAutoregressive(
            3, context_dim=2, hidden_dims=H, transformer="spline", bound=2.0
        ),
        context_dim=2,
        autoregressive=True,
    ),
    "spline_image_coupling": Entry(
        lambda: T.ImageCoupling(
            (2, 4, 4), hidden_channels=(), transformer="spline", bins=4, bound=2.0
        ),
        shape=(2, 4, 4),
    ),
    "spline_image_checkerboard": Entry(
        lambda: T.ImageCoupling(
            (1, 4, 4), hidden_channels=(8,), mask="checkerboard", transformer="spline"
        ),
        shape=(1, 4, 4),
    ),
    "cond_spline_image_coupling": Entry(
        lambda: T.ConditionalImageCoupling(
            (2, 4, 4), context_dim=2, hidden_channels=(), transformer="spline", bins=4, bound=2.0
        ),
        shape=(2, 4, 4),
        context_dim=2,
    ),
    "NSF": Entry(lambda: pf.NSF(3, num_layers=2, hidden_dims=H, bins=4, bound=2.0), is_flow=True),
    "NSF_density": Entry(
        lambda: pf.NSF(3, num_layers=2, hidden_dims=H, bound=2.0, fast="density"), is_flow=True
    ),
    "NSF_base_side": Entry(
        lambda: pf.NSF(3, num_layers=2, hidden_dims=H, bound=2.0, invert_spline=False),
        is_flow=True,
    ),
    "NSF_sample": Entry(
        lambda: pf.NSF(3, num_layers=2, hidden_dims=H, bound=2.0, fast="sample"), is_flow=True
    ),
    "cond_NSF": Entry(
        lambda: pf.NSF(3, num_layers=2, hidden_dims=H, context_dim=2, bound=2.0),
        is_flow=True,
        context_dim=2,
    ),
    "cond_NSF_1d": Entry(
        lambda: pf.NSF(1, num_layers=2, hidden_dims=H, context_dim=2, bound=2.0),
        shape=(1,),
        is_flow=True,
        context_dim=2,
    ),
    "cond_NSF_sample": Entry(
        lambda: pf.NSF(3, num_layers=2, hidden_dims=H, context_dim=2, bound=2.0, fast="sample"),
        is_flow=True,
        context_dim=2,
    ),
}
