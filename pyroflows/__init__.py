"""pyroflows: normalizing flows for Pyro.

Flows are ``nn.Module``s; calling one (with a context for conditional flows) returns a Pyro
distribution over the data. Transforms follow Pyro's direction convention: ``_call`` maps base ->
data (sampling) and ``_inverse`` maps data -> base (density).
"""

from . import datasets, nn, transforms
from .diagnostics import (
    CheckReport,
    OODDetector,
    PSISDiagnostic,
    bits_per_dim,
    bits_per_dim_loss,
    check_flow,
    inverse_stability,
    ood_benchmark,
    psis_diagnostic,
    save_image_grid,
    to_inference_data,
)
from .flows import (
    CNF,
    FLOWS,
    IAF,
    MAF,
    NICE,
    NSF,
    ContextMixture,
    Flow,
    FlowDistribution,
    Glow,
    Planar,
    RealNVP,
    load,
    save,
)
from .infer import AutoFlow, History, fit, fit_svi
from .transforms.base import NonFiniteError, validation
from .transforms.dequantize import dequantize
from .transforms.ode import SolverError

__version__ = "0.1.0"

__all__ = [
    "CNF",
    "FLOWS",
    "IAF",
    "MAF",
    "NICE",
    "NSF",
    "AutoFlow",
    "CheckReport",
    "ContextMixture",
    "Flow",
    "FlowDistribution",
    "Glow",
    "History",
    "NonFiniteError",
    "OODDetector",
    "PSISDiagnostic",
    "Planar",
    "RealNVP",
    "SolverError",
    "bits_per_dim",
    "bits_per_dim_loss",
    "check_flow",
    "datasets",
    "dequantize",
    "fit",
    "fit_svi",
    "inverse_stability",
    "load",
    "nn",
    "ood_benchmark",
    "psis_diagnostic",
    "save",
    "save_image_grid",
    "to_inference_data",
    "transforms",
    "validation",
]
