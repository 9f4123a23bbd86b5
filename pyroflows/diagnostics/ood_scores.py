r"""Building blocks of out-of-distribution detection: detection metrics, compressed lengths and
input perturbations (used by :class:`~pyroflows.diagnostics.OODDetector`).

* :func:`auroc`, :func:`aupr`, :func:`tpr_at_fpr`, :func:`ood_metrics`: how well a score separates
  OOD inputs (the positives, larger scores) from in-distribution ones, computed here without
  scikit-learn. The AUROC is the Mann-Whitney statistic with ties counted as one half [1].
* :func:`compressed_bits`: the length in bits of a lossless standard-library compression of each
  input (the complexity estimate :math:`L(x)` of Serra et al. [2]).
* :func:`perturb_inputs`: the input mutations of Ren et al. [3], used to train a background model
  that sees the low-level statistics of the data but not its semantics.
* :func:`negative_log_likelihood`: per-input NLL of a flow, for integer images an
  importance-weighted estimate over dequantisation draws [4]; :func:`train_copy`: a fresh flow
  of the same configuration trained on other data or from another seed (backgrounds, ensembles).

References:
    [1] J. A. Hanley, B. J. McNeil. The meaning and use of the area under a receiver operating
        characteristic (ROC) curve. Radiology 143(1), 1982.
    [2] J. Serra, D. Alvarez, V. Gomez, O. Slizovskaia, J. F. Nunez, J. Luque. Input Complexity
        and Out-of-distribution Detection with Likelihood-based Generative Models. ICLR 2020.
    [3] J. Ren, P. J. Liu, E. Fertig, J. Snoek, R. Poplin, M. A. DePristo, J. V. Dillon,
        B. Lakshminarayanan. Likelihood Ratios for Out-of-Distribution Detection. NeurIPS 2019.
    [4] J. Ho, X. Chen, A. Srinivas, Y. Duan, P. Abbeel. Flow++: Improving Flow-Based Generative
        Models with Variational Dequantization and Architecture Design. ICML 2019.
"""

from __future__ import annotations

import bz2
import lzma
import math
import zlib
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from ..transforms.dequantize import dequantize

__all__ = [
    "COMPRESSORS",
    "aupr",
    "auroc",
    "compressed_bits",
    "negative_log_likelihood",
    "ood_metrics",
    "perturb_inputs",
    "tpr_at_fpr",
]


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no header or checksum
    return c.compress(data) + c.flush()


def _raw_lzma(data: bytes) -> bytes:
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


#: Standard-library compressors for :func:`compressed_bits` (name -> ``bytes -> bytes``).
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": _raw_deflate,
    "bz2": lambda data: bz2.compress(data, 9),
    "lzma": _raw_lzma,
}


def _pair(in_scores, ood_scores) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for name, s in (("in_scores", in_scores), ("ood_scores", ood_scores)):
        a = np.asarray(s.detach().cpu() if isinstance(s, Tensor) else s, dtype=np.float64)
        a = a.reshape(-1)
        if a.size == 0:
            raise ValueError(f"{name} is empty; pass at least one score per group")
        out.append(np.where(np.isnan(a), np.inf, a))  # a NaN score: as unusual as it gets
    return out[0], out[1]


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    starts = np.r_[0, np.flatnonzero(sorted_v[1:] != sorted_v[:-1]) + 1]
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(in_scores, ood_scores) -> float:
    r"""Area under the ROC curve of a score that should be larger on OOD inputs.

    The Mann-Whitney form :math:`P(s_{\text{ood}} > s_{\text{in}}) + \tfrac12
    P(s_{\text{ood}} = s_{\text{in}})`, from mid-ranks; 0.5 is chance, 1 a perfect separation,
    below 0.5 a score that points the wrong way. NaN scores count as ``+inf``.

    Example:
        >>> auroc([0.1, 0.4, 0.35, 0.8], [0.35, 0.9, 0.5])   # one tie: (1.5 + 4 + 3) / 12
        0.7083333333333334
        >>> auroc([1, 2], [3, 4]), auroc([3, 4], [1, 2]), auroc([1, 1], [1])
        (1.0, 0.0, 0.5)
    """
    a, b = _pair(in_scores, ood_scores)
    ranks = _midranks(np.concatenate([a, b]))
    n0, n1 = a.size, b.size
    u = ranks[n0:].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n0 * n1))


def aupr(in_scores, ood_scores) -> float:
    r"""Area under the precision-recall curve with OOD inputs as positives (average precision).

    :math:`\sum_k (R_k - R_{k-1}) P_k` over the distinct thresholds, largest first; tied scores
    enter together. Chance level is the share of OOD inputs.

    Example:
        >>> aupr([0.1, 0.4, 0.35, 0.8], [0.35, 0.9, 0.5])   # (1/3)(1 + 2/3 + 3/6)
        0.7222222222222223
    """
    a, b = _pair(in_scores, ood_scores)
    s = np.concatenate([a, b])
    y = np.r_[np.zeros(a.size), np.ones(b.size)]
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # end of each tie group
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / b.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def tpr_at_fpr(in_scores, ood_scores, fpr: float = 0.05) -> float:
    """Share of OOD inputs flagged at the threshold that flags at most ``fpr`` of in-distribution
    inputs (inputs are flagged when their score is strictly above the threshold).

    Example:
        >>> tpr_at_fpr(range(100), [50, 96, 200, 300], fpr=0.05)   # threshold 94: 3 of 4 above
        0.75
    """
    if not 0.0 <= float(fpr) < 1.0:
        raise ValueError(f"fpr must be in [0, 1); got {fpr}")
    a, b = _pair(in_scores, ood_scores)
    a = np.sort(a)
    # smallest in-distribution score t with mean(a > t) <= fpr
    k = int(np.ceil(a.size * (1.0 - float(fpr)))) - 1
    t = a[max(k, 0)]
    return float(np.mean(b > t))


def ood_metrics(in_scores, ood_scores, *, fpr: float = 0.05) -> dict[str, float]:
    """AUROC, AUPR (OOD as positives) and the true-positive rate at ``fpr`` false positives.

    Example:
        >>> ood_metrics([0.0, 1.0, 2.0], [1.5, 3.0])
        {'auroc': 0.8333333333333334, 'aupr': 0.8333333333333333, 'tpr_at_5fpr': 0.5}
    """
    key = f"tpr_at_{100 * float(fpr):g}fpr"
    return {
        "auroc": auroc(in_scores, ood_scores),
        "aupr": aupr(in_scores, ood_scores),
        key: tpr_at_fpr(in_scores, ood_scores, fpr),
    }


def _quantise(x: Tensor, levels: int | None, precision: float | None) -> np.ndarray:
    """Integer codes of each row of ``x`` as a numpy array (rows, features)."""
    flat = x.detach().cpu().reshape(x.shape[0], -1)
    if levels is not None:
        q = flat.round().to(torch.int64)
        if (q < 0).any() or (q >= levels).any() or not torch.equal(q.to(flat.dtype), flat):
            raise ValueError(
                f"with levels={levels} the inputs must be integer levels 0..{levels - 1}; "
                "pass precision=... instead for continuous data"
            )
        return q.numpy().astype(np.uint8 if levels <= 256 else np.uint16)
    if precision is None or not float(precision) > 0:
        raise ValueError(
            f"precision must be a positive number for continuous data; got {precision}"
        )
    if not torch.isfinite(flat).all():
        raise ValueError("inputs must be finite to be quantised and compressed")
    q = torch.round(flat.double() / float(precision)).to(torch.int64)
    # zig-zag and 16-bit codes when they fit: small magnitudes give bytes a compressor can model
    z = torch.where(q >= 0, 2 * q, -2 * q - 1)
    return z.numpy().astype(np.uint16 if int(z.max()) < 2**16 else np.uint32)


def compressed_bits(
    x: Tensor,
    *,
    levels: int | None = None,
    precision: float | None = None,
    compressor: str = "zlib",
) -> Tensor:
    r"""Lossless compressed length :math:`L(x)` in bits of each input (row) of ``x``.

    Integer images (``levels`` given) are compressed as their bytes (one per value, row-major).
    Continuous rows are first quantised to ``precision`` (a stated bin width) and stored as
    zig-zag integer codes. ``compressor`` is ``"zlib"`` (raw deflate, the default: no header, so
    short inputs are not dominated by overhead), ``"bz2"`` or ``"lzma"`` (raw LZMA2).

    Args:
        x: ``(N, ...)`` inputs.
        levels: number of integer levels of image data (values ``0 .. levels-1``).
        precision: quantisation step for continuous data (needed when ``levels`` is not given).
        compressor: one of ``COMPRESSORS`` (``zlib``, ``bz2``, ``lzma``).

    Returns:
        A float64 tensor of ``N`` lengths in bits (8 times the compressed byte count).

    Example:
        >>> blank = torch.zeros(1, 1, 8, 8, dtype=torch.long)
        >>> noise = torch.randint(0, 17, (1, 1, 8, 8), generator=torch.Generator().manual_seed(0))
        >>> compressed_bits(torch.cat([blank, noise]), levels=17).tolist()
        [48.0, 392.0]
    """
    if compressor not in COMPRESSORS:
        raise ValueError(f"compressor must be one of {tuple(COMPRESSORS)}; got {compressor!r}")
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise ValueError("x must be a tensor of shape (N, ...)")
    codes = _quantise(x, levels, precision)
    fn = COMPRESSORS[compressor]
    return torch.tensor([8.0 * len(fn(row.tobytes())) for row in codes], dtype=torch.float64)


def perturb_inputs(
    x: Tensor,
    rate: float,
    *,
    levels: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Mutate each value of ``x`` independently with probability ``rate`` (Ren et al. [3]).

    Integer images (``levels`` given): a mutated value becomes a uniform random level in
    ``0 .. levels-1``. Tables (``(N, D)``, no ``levels``): a mutated entry becomes the entry of
    the same column in a uniformly drawn row, i.e. a draw from the column's empirical marginal,
    so the marginals stay and the dependencies between columns are partly destroyed. The input
    is not modified.

    Example:
        >>> x = torch.zeros(1000, 1, 8, 8, dtype=torch.long)
        >>> y = perturb_inputs(x, 0.2, levels=17, generator=torch.Generator().manual_seed(0))
        >>> y.dtype, round(float((y != 0).float().mean()), 2)   # 0.2 * 16 / 17 = 0.19
        (torch.int64, 0.19)
    """
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"the mutation rate must be in [0, 1]; got {rate}")
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty tensor of shape (N, ...)")
    mask = torch.rand(x.shape, generator=generator) < float(rate)
    if levels is not None:
        new = torch.randint(0, int(levels), x.shape, generator=generator).to(x.dtype)
    else:
        if x.dim() != 2:
            raise ValueError(
                f"tables must have shape (N, D); got {tuple(x.shape)} (images: levels=)"
            )
        rows = torch.randint(0, x.shape[0], x.shape, generator=generator)
        new = torch.gather(x, 0, rows.to(x.device))
    return torch.where(mask.to(x.device), new.to(x.device), x)


def _dtype_device(flow) -> tuple[torch.dtype, torch.device | None]:
    ref = next(iter(flow.parameters()), None) if hasattr(flow, "parameters") else None
    if ref is None and hasattr(flow, "buffers"):
        ref = next(iter(flow.buffers()), None)
    return (ref.dtype, ref.device) if ref is not None else (torch.get_default_dtype(), None)


def negative_log_likelihood(
    flow,
    x: Tensor,
    context: Tensor | None = None,
    *,
    batch_size: int = 1024,
    levels: int | None = None,
    seed: int = 0,
    samples: int = 1,
) -> Tensor:
    r"""Negative log-likelihood in nats per row (float64, NaN as ``inf``), without gradients.

    For integer images (``levels``) it estimates
    :math:`-\log P(x)` of the integer image from ``samples`` dequantisation draws
    :math:`u_s \sim U[0, 1)^D` by importance weighting [4]:
    :math:`-\log \frac1S \sum_s p((x + u_s)/K) + D \log K`, an upper bound that tightens as
    :math:`S` grows (:math:`S = 1` is the bound of :func:`~pyroflows.bits_per_dim`, times
    :math:`D \log 2`). The noise comes from a fixed seed, so every flow sees the same draws.

    Example:
        >>> import pyroflows as pf
        >>> flow = pf.Flow([], event_shape=(1,))   # N(0, 1) on y = (x + u) / 2
        >>> x = torch.zeros(1, 1, dtype=torch.long)  # exact: -log(Phi(0.5) - Phi(0)) = 1.65
        >>> [round(float(negative_log_likelihood(flow, x, levels=2, samples=s)), 2)
        ...  for s in (1, 1000)]   # one draw: a noisy bound (its mean is 1.654); 1000: exact
        [1.64, 1.65]
    """
    out = []
    generator = torch.Generator().manual_seed(int(seed))
    dtype, device = _dtype_device(flow)
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            c = None if context is None else context[i : i + batch_size]
            if levels is not None:
                lps = []
                for _ in range(int(samples)):
                    y = dequantize(xb, levels=levels, generator=generator, dtype=dtype)
                    y = y if device is None else y.to(device)
                    lps.append(flow.log_prob(y, c).cpu().double())
                lp = torch.logsumexp(torch.stack(lps), 0) - math.log(len(lps))
                out.append(xb[0].numel() * math.log(levels) - lp)
            else:
                out.append(-flow.log_prob(xb, c).cpu().double())
    nll = torch.cat(out)
    return torch.where(torch.isnan(nll), torch.full_like(nll, math.inf), nll)


def train_copy(
    flow,
    data: Tensor,
    *,
    context: Tensor | None = None,
    levels: int | None = None,
    fit_kwargs: Mapping | None = None,
    seed: int = 0,
    what: str = "this option",
    hint: str = "train the flows yourself and pass them instead",
):
    """A fresh flow of ``flow``'s class and configuration (from ``flow.config``), trained with
    :func:`~pyroflows.fit` on ``data`` (1000 steps, no progress bar and the bits/dim objective
    when ``levels`` is set, unless ``fit_kwargs`` say otherwise; seed ``seed``), in eval mode.
    Used for perturbed backgrounds and ensembles; ``what`` names the option in the error raised
    when ``flow`` has no configuration, ``hint`` says what to do instead."""
    from ..flows import FLOWS
    from ..infer import fit
    from .bits import bits_per_dim_loss

    config = getattr(flow, "config", None)
    if not config or config.get("class") not in FLOWS:
        raise ValueError(
            f"{what} rebuilds the flow from its .config, but this flow has no configuration "
            f"(it was built from a list of transforms); {hint}"
        )
    kwargs = dict(config)
    copy = FLOWS[kwargs.pop("class")](**kwargs)
    dtype, device = _dtype_device(flow)
    copy = copy.to(dtype=dtype) if device is None else copy.to(device, dtype)
    options = {"steps": 1000, "progress": False}
    if levels is not None:
        options["objective"] = bits_per_dim_loss(levels=levels)
    options.update(fit_kwargs or {})
    options["seed"] = seed
    fit(copy, data, context=context, **options)
    return copy.eval()


class OODReport:
    """A table of detection metrics, one row per (OOD set, method); ``str()`` gives markdown.

    Attributes:
        rows: one dict per row with keys ``dataset``, ``method``, ``auroc``, ``aupr``,
            ``tpr_at_5fpr`` (for the default ``fpr``).

    Example:
        >>> report = OODReport([
        ...     {"dataset": "noise", "method": "likelihood", "auroc": 0.61, "aupr": 0.58},
        ...     {"dataset": "noise", "method": "typicality", "auroc": 0.93, "aupr": 0.9},
        ... ])
        >>> report.best(), report.auroc("noise", "likelihood")
        ('typicality', 0.61)
        >>> print(report)
        | OOD set | method | auroc | aupr |
        |---|---|---:|---:|
        | noise | likelihood | 0.610 | 0.580 |
        | noise | typicality | 0.930 | 0.900 |
    """

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def best(self, dataset: str | None = None) -> str:
        """The method with the highest AUROC (on ``dataset``, or averaged over all sets)."""
        scores: dict[str, list[float]] = {}
        for r in self.rows:
            if dataset is None or r["dataset"] == dataset:
                scores.setdefault(r["method"], []).append(r["auroc"])
        if not scores:
            raise ValueError(f"no rows for dataset {dataset!r}")
        return max(scores, key=lambda m: sum(scores[m]) / len(scores[m]))

    def auroc(self, dataset: str, method: str) -> float:
        """The AUROC of one method on one OOD set."""
        for r in self.rows:
            if r["dataset"] == dataset and r["method"] == method:
                return r["auroc"]
        raise KeyError(f"no row for dataset {dataset!r} and method {method!r}")

    def __str__(self) -> str:
        if not self.rows:
            return "(no rows)"
        keys = [k for k in self.rows[0] if k not in ("dataset", "method")]
        head = ["OOD set", "method", *keys]
        lines = [
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---", "---"] + ["---:"] * len(keys)) + "|",
        ]
        for r in self.rows:
            cells = [str(r["dataset"]), str(r["method"])] + [f"{r[k]:.3f}" for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    __repr__ = __str__
