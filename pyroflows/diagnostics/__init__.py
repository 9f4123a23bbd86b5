"""Diagnostics: numerical self-checks of flows, and (later) PSIS, bits/dim and OOD scores."""

from .checks import CheckReport, check_flow, jacobian_log_det, roundtrip_errors
from .ood import OODDetector, StabilityReport, inverse_stability

__all__ = [
    "CheckReport",
    "OODDetector",
    "StabilityReport",
    "check_flow",
    "inverse_stability",
    "jacobian_log_det",
    "roundtrip_errors",
]
