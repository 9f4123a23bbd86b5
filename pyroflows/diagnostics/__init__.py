"""Diagnostics: numerical self-checks of flows, and (later) PSIS, bits/dim and OOD scores."""

from .arviz import PSISDiagnostic, psis_diagnostic, to_inference_data
from .bits import bits_per_dim, bits_per_dim_loss
from .checks import CheckReport, check_flow, jacobian_log_det, roundtrip_errors
from .images import image_grid, save_image_grid
from .ood import OODDetector, StabilityReport, inverse_stability, ood_benchmark
from .ood_scores import (
    OODReport,
    aupr,
    auroc,
    compressed_bits,
    ood_metrics,
    perturb_inputs,
    tpr_at_fpr,
)

__all__ = [
    "CheckReport",
    "OODDetector",
    "OODReport",
    "PSISDiagnostic",
    "StabilityReport",
    "aupr",
    "auroc",
    "bits_per_dim",
    "bits_per_dim_loss",
    "check_flow",
    "compressed_bits",
    "image_grid",
    "inverse_stability",
    "jacobian_log_det",
    "ood_benchmark",
    "ood_metrics",
    "perturb_inputs",
    "psis_diagnostic",
    "roundtrip_errors",
    "save_image_grid",
    "to_inference_data",
    "tpr_at_fpr",
]
