r"""Exploding inverses: the numerical stability of a flow's inverse on given inputs.

Invertibility in exact arithmetic does not guarantee a stable numerical
inverse away from the training data (Behrmann et al. [1]). :func:`inverse_stability` measures the
reconstruction error of ``data -> base -> data`` on the inputs you care about (no cache: real
inverses) and flags the points whose error exceeds a tolerance.

References:
    [1] J. Behrmann, P. Vicol, K.-C. Wang, R. Grosse, J.-H. Jacobsen. Understanding and
        Mitigating Exploding Inverses in Invertible Neural Networks. AISTATS 2021.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import _forward, _inverse, steps_of

__all__ = ["StabilityReport", "inverse_stability"]


@dataclass
class StabilityReport:
    """Reconstruction errors of ``data -> base -> data`` per point (see :func:`inverse_stability`).

    Attributes:
        errors: max abs reconstruction error of each point (``inf`` where it is not finite).
        tolerance: the error above which a point counts as unstable.

    Example:
        >>> report = StabilityReport(torch.tensor([1e-7, 0.5, float("inf")]), tolerance=1e-3)
        >>> report.unstable
        tensor([False,  True,  True])
        >>> print(report)
        inverse stability on 3 points: max reconstruction error inf; 2 above tolerance 0.001
    """

    errors: Tensor
    tolerance: float

    @property
    def unstable(self) -> Tensor:
        """Boolean mask of points whose reconstruction error exceeds the tolerance."""
        return ~(self.errors <= self.tolerance)

    @property
    def max_error(self) -> float:
        return float(self.errors.max())

    def __str__(self) -> str:
        n_bad = int(self.unstable.sum())
        return (
            f"inverse stability on {self.errors.numel()} points: max reconstruction error "
            f"{self.max_error:.2e}; {n_bad} above tolerance {self.tolerance:g}"
        )


def inverse_stability(
    flow, x: Tensor, *, context: Tensor | None = None, tolerance: float = 1e-3
) -> StabilityReport:
    r"""Measure :math:`\max_i |f(f^{-1}(x)) - x|` per data point, with real (uncached) inverses.

    Run it on the data you will score, including anything unusual: large errors mean the flow's
    inverse is numerically unstable there and its log-densities should not be trusted.

    Example:
        >>> import torch, pyroflows as pf
        >>> flow = pf.Glow(3, num_layers=2, hidden_dims=(8,))
        >>> inverse_stability(flow, torch.randn(5, 3)).max_error < 1e-4
        True
    """
    steps = steps_of(flow, context)
    n = len(steps[-1][0].output_shape)
    with torch.no_grad():
        z, _ = _inverse(steps, x)
        x2, _ = _forward(steps, z)
    err = (x2 - x).abs().flatten(x.dim() - n).amax(-1)
    err = torch.where(torch.isfinite(err), err, torch.full_like(err, float("inf")))
    return StabilityReport(err, tolerance)
