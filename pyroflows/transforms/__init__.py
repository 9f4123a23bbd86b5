"""Pyro ``TransformModule`` bijections; ``_call`` is base -> data, ``_inverse`` data -> base."""

from .autoregressive import (
    ConditionalMaskedAutoregressive,
    MaskedAutoregressive,
    conditional_iaf,
    conditional_maf,
    iaf,
    maf,
)
from .base import (
    ConditionalFlowTransform,
    ConditionedTransform,
    FlowTransform,
    NonFiniteError,
    is_validation_enabled,
    validation,
)
from .coupling import (
    ConditionalCoupling,
    Coupling,
    additive_coupling,
    affine_coupling,
    conditional_additive_coupling,
    conditional_affine_coupling,
)
from .linear import ActNorm, ElementwiseAffine, LULinear, Permute, Reverse, actnorm, lu_linear
from .planar import ConditionalPlanar, Planar, conditional_planar, planar

__all__ = [
    "ActNorm",
    "ConditionalCoupling",
    "ConditionalFlowTransform",
    "ConditionalMaskedAutoregressive",
    "ConditionalPlanar",
    "ConditionedTransform",
    "Coupling",
    "ElementwiseAffine",
    "FlowTransform",
    "LULinear",
    "MaskedAutoregressive",
    "NonFiniteError",
    "Permute",
    "Planar",
    "Reverse",
    "actnorm",
    "additive_coupling",
    "affine_coupling",
    "conditional_additive_coupling",
    "conditional_affine_coupling",
    "conditional_iaf",
    "conditional_maf",
    "conditional_planar",
    "iaf",
    "is_validation_enabled",
    "lu_linear",
    "maf",
    "planar",
    "validation",
]
