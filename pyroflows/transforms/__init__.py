"""Pyro ``TransformModule`` bijections; ``_call`` is base -> data, ``_inverse`` data -> base."""

from .autoregressive import (
    ConditionalMaskedAutoregressive,
    MaskedAutoregressive,
    conditional_iaf,
    conditional_maf,
    conditional_spline_autoregressive,
    iaf,
    maf,
    spline_autoregressive,
)
from .base import (
    ConditionalFlowTransform,
    ConditionedTransform,
    FlowTransform,
    NonFiniteError,
    is_validation_enabled,
    validation,
)
from .continuous import (
    ConditionalContinuousFlow,
    ContinuousFlow,
    ODESolver,
    SolverError,
    conditional_continuous_flow,
    continuous_flow,
)
from .coupling import (
    ConditionalCoupling,
    Coupling,
    additive_coupling,
    affine_coupling,
    conditional_additive_coupling,
    conditional_affine_coupling,
    conditional_spline_coupling,
    spline_coupling,
)
from .dequantize import Logit, dequantize, num_levels
from .elementwise import (
    TRANSFORMERS,
    affine_on_side,
    get_transformer,
    rational_quadratic_spline,
    spline,
)
from .image import (
    ConditionalImageCoupling,
    ImageCoupling,
    Reshape,
    Squeeze,
    conditional_image_coupling,
    depth_to_space,
    image_coupling,
    space_to_depth,
)
from .linear import ActNorm, ElementwiseAffine, LULinear, Permute, Reverse, actnorm, lu_linear
from .multiscale import (
    ChannelSlice,
    ConditionalChannelSlice,
    glow_transforms,
    realnvp_image_transforms,
)
from .planar import (
    ConditionalPlanarTransform,
    PlanarTransform,
    conditional_planar,
    deprecated_name,
    planar,
)
from .standardize import Standardize

__all__ = [
    "TRANSFORMERS",
    "ActNorm",
    "ChannelSlice",
    "ConditionalChannelSlice",
    "ConditionalContinuousFlow",
    "ConditionalCoupling",
    "ConditionalFlowTransform",
    "ConditionalImageCoupling",
    "ConditionalMaskedAutoregressive",
    "ConditionalPlanarTransform",
    "ConditionedTransform",
    "ContinuousFlow",
    "Coupling",
    "ElementwiseAffine",
    "FlowTransform",
    "ImageCoupling",
    "LULinear",
    "Logit",
    "MaskedAutoregressive",
    "NonFiniteError",
    "ODESolver",
    "Permute",
    "PlanarTransform",
    "Reshape",
    "Reverse",
    "SolverError",
    "Squeeze",
    "Standardize",
    "actnorm",
    "additive_coupling",
    "affine_coupling",
    "affine_on_side",
    "conditional_additive_coupling",
    "conditional_affine_coupling",
    "conditional_continuous_flow",
    "conditional_iaf",
    "conditional_image_coupling",
    "conditional_maf",
    "conditional_planar",
    "conditional_spline_autoregressive",
    "conditional_spline_coupling",
    "continuous_flow",
    "depth_to_space",
    "dequantize",
    "get_transformer",
    "glow_transforms",
    "iaf",
    "image_coupling",
    "is_validation_enabled",
    "lu_linear",
    "maf",
    "num_levels",
    "planar",
    "rational_quadratic_spline",
    "realnvp_image_transforms",
    "space_to_depth",
    "spline",
    "spline_autoregressive",
    "spline_coupling",
    "validation",
]


def __getattr__(name: str) -> type:  # Planar, ConditionalPlanar: renamed, with a warning
    return deprecated_name(__name__, name)
