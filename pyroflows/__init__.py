"""pyroflows: normalizing flows for Pyro.

Flows are ``nn.Module``s; calling one (with a context for conditional flows) returns a Pyro
distribution over the data. Transforms follow Pyro's direction convention: ``_call`` maps base ->
data (sampling) and ``_inverse`` maps data -> base (density).
"""

from . import nn, transforms
from .diagnostics import CheckReport, check_flow
from .flows import FLOWS, IAF, MAF, NICE, Flow, FlowDistribution, Glow, Planar, RealNVP, load, save
from .transforms.base import NonFiniteError, validation

__version__ = "0.1.0"

__all__ = [
    "FLOWS",
    "IAF",
    "MAF",
    "NICE",
    "CheckReport",
    "Flow",
    "FlowDistribution",
    "Glow",
    "NonFiniteError",
    "Planar",
    "RealNVP",
    "check_flow",
    "load",
    "nn",
    "save",
    "transforms",
    "validation",
]
