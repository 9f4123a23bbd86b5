r"""Tools for two known failure modes of flows: out-of-distribution likelihoods and exploding
inverses.

**Out-of-distribution (OOD) likelihoods.** A flow trained on one data set can give *higher*
likelihood to inputs from another (Nalisnick et al. [1]), so thresholding :math:`\log p(x)` alone
is unreliable. :class:`OODDetector` calibrates on held-out in-distribution data and offers

* ``"likelihood"``: the score :math:`-\log p(x)` (the naive baseline, for comparison);
* ``"typicality"``: :math:`|{-\log p(x)} - \hat H|`, the distance to the typical set, where
  :math:`\hat H` is the mean reference NLL [2] — it flags inputs that are *too likely* as well as
  too unlikely;
* ``"ratio"``: :math:`\log p_{\text{background}}(x) - \log p(x)` against a second, more generic
  flow (a likelihood ratio, Schirrmeister et al. [3]), which cancels low-level statistics that
  dominate both likelihoods.

Scores are turned into empirical p-values against the reference scores, so a threshold means a
false-positive rate on in-distribution data.

**Exploding inverses.** Invertibility in exact arithmetic does not guarantee a stable numerical
inverse away from the training data (Behrmann et al. [4]). :func:`inverse_stability` measures the
reconstruction error of ``data -> base -> data`` on the inputs you care about (no cache: real
inverses) and flags the points whose error exceeds a tolerance.

References:
    [1] E. Nalisnick, A. Matsukawa, Y. W. Teh, D. Gorur, B. Lakshminarayanan. Do Deep Generative
        Models Know What They Don't Know? ICLR 2019.
    [2] E. Nalisnick, A. Matsukawa, Y. W. Teh, B. Lakshminarayanan. Detecting Out-of-Distribution
        Inputs to Deep Generative Models Using Typicality. arXiv:1906.02994, 2019.
    [3] R. T. Schirrmeister, Y. Zhou, T. Ball, D. Zhang. Understanding Anomaly Detection with
        Deep Invertible Networks through Hierarchies of Distributions and Features. NeurIPS 2020.
    [4] J. Behrmann, P. Vicol, K.-C. Wang, R. Grosse, J.-H. Jacobsen. Understanding and
        Mitigating Exploding Inverses in Invertible Neural Networks. AISTATS 2021.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import _forward, _inverse, steps_of

__all__ = ["OODDetector", "StabilityReport", "inverse_stability"]

_METHODS = ("likelihood", "typicality", "ratio")


def _nll(flow, x: Tensor, context: Tensor | None, batch_size: int) -> Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            c = None if context is None else context[i : i + batch_size]
            out.append(-flow.log_prob(x[i : i + batch_size], c))
    return torch.cat(out)


class OODDetector:
    """Calibrated out-of-distribution scores for a trained flow.

    Args:
        flow: the trained :class:`~pyroflows.Flow`.
        reference: held-out *in-distribution* data (not the training set, whose likelihoods are
            optimistic).
        method: ``"typicality"`` (default), ``"likelihood"`` or ``"ratio"``.
        background: a second flow for ``method="ratio"`` (e.g. trained on generic data, or a
            smaller flow on the same data).
        context: context rows of ``reference`` for conditional flows.
        batch_size: evaluation batch size.

    Example:
        >>> import torch, pyroflows as pf
        >>> _ = torch.manual_seed(0)
        >>> flow = pf.RealNVP(10, num_layers=2, hidden_dims=(8,))  # N(0, I) at initialisation
        >>> det = OODDetector(flow, torch.randn(20000, 10))
        >>> x = torch.stack([torch.zeros(10), torch.ones(10), 6 * torch.ones(10)])
        >>> det.p_values(x).round(decimals=2)   # the mode is atypical too, not only the tail
        tensor([0.0300, 1.0000, 0.0000])
        >>> det.is_ood(x, alpha=0.05).tolist()
        [True, False, True]
    """

    def __init__(
        self,
        flow,
        reference: Tensor,
        *,
        method: str = "typicality",
        background=None,
        context: Tensor | None = None,
        batch_size: int = 1024,
    ) -> None:
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
        if method == "ratio" and background is None:
            raise ValueError(
                "method='ratio' needs a background flow: OODDetector(..., background=flow2)"
            )
        if not isinstance(reference, Tensor) or reference.dim() < 2 or reference.shape[0] < 10:
            raise ValueError(
                "reference must be a tensor of at least 10 held-out in-distribution rows"
            )
        self.flow, self.method, self.background, self.batch_size = (
            flow,
            method,
            background,
            batch_size,
        )
        nll = _nll(flow, reference, context, batch_size)
        self.entropy = float(nll.mean())  # the typical-set level \hat H
        self.reference_scores, _ = torch.sort(self._score(reference, context, nll))

    def _score(self, x: Tensor, context: Tensor | None, nll: Tensor | None = None) -> Tensor:
        nll = _nll(self.flow, x, context, self.batch_size) if nll is None else nll
        if self.method == "likelihood":
            return nll
        if self.method == "typicality":
            return (nll - self.entropy).abs()
        return nll - _nll(self.background, x, context, self.batch_size)

    def scores(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """OOD scores of ``x``: larger means less like the reference data."""
        return self._score(x, context)

    def p_values(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Fraction of reference points scoring at least as high (small: likely OOD)."""
        s = self.scores(x, context)
        ref = self.reference_scores.to(s)
        n = ref.numel()
        below = torch.searchsorted(ref, s, right=False)
        return (n - below).to(s.dtype) / n

    def is_ood(self, x: Tensor, *, alpha: float = 0.05, context: Tensor | None = None) -> Tensor:
        """Flag points whose p-value is below ``alpha`` (a false-positive rate of about ``alpha``)."""
        return self.p_values(x, context) < alpha


@dataclass
class StabilityReport:
    """Reconstruction errors of ``data -> base -> data`` per point (see :func:`inverse_stability`)."""

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
