"""Diagnostics: numerical self-checks of flows, and (later) PSIS, bits/dim and OOD scores."""

from .checks import CheckReport, check_flow, jacobian_log_det, roundtrip_errors

__all__ = ["CheckReport", "check_flow", "jacobian_log_det", "roundtrip_errors"]
