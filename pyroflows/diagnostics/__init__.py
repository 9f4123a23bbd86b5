"""Diagnostics: numerical self-checks of flows, and (later) PSIS, bits/dim and OOD scores."""

from .arviz import PSISDiagnostic, psis_diagnostic, to_inference_data
from .bits import bits_per_dim, bits_per_dim_loss
from .checks import CheckReport, check_flow, jacobian_log_det, roundtrip_errors
from .images import image_grid, save_image_grid
from .ood import OODDetector, StabilityReport, inverse_stability

__all__ = [
    "CheckReport",
    "OODDetector",
    "PSISDiagnostic",
    "StabilityReport",
    "bits_per_dim",
    "bits_per_dim_loss",
    "check_flow",
    "image_grid",
    "inverse_stability",
    "jacobian_log_det",
    "psis_diagnostic",
    "roundtrip_errors",
    "save_image_grid",
    "to_inference_data",
]
