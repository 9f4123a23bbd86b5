r"""Tools for two known failure modes of flows: out-of-distribution likelihoods and exploding
inverses.

**Out-of-distribution (OOD) likelihoods.** A flow trained on one data set can give *higher*
likelihood to inputs from another (Nalisnick et al. [1]), so thresholding :math:`\log p(x)` alone
is unreliable. :class:`OODDetector` calibrates on held-out in-distribution data and offers

* ``"likelihood"``: the score :math:`-\log p(x)` (the naive baseline, for comparison);
* ``"typicality"``: :math:`|{-\log p(x)} - \hat H|`, the distance to the typical set, where
  :math:`\hat H` is the mean reference NLL [2] — it flags inputs that are *too likely* as well as
  too unlikely;
* ``"ratio"``: :math:`\log p_{\text{background}}(x) - \log p(x)` against a background flow
  (a likelihood ratio [3, 4]), which cancels low-level statistics that dominate both
  likelihoods; ``background="perturbed"`` trains one on mutated inputs as Ren et al. [4] do;
* ``"complexity"``: :math:`-\log_2 p(x) - L(x)` with :math:`L` a lossless compressor's length
  (Serra et al. [5]), which removes the reward simple inputs get from every likelihood model;
* ``"combined"``: the standardised likelihood and complexity scores added (this library's
  heuristic), which keeps what each catches;
* ``"waic"``: with an ensemble of flows, the mean minus the variance of the members'
  log-likelihoods, negated (Choi et al. [7]);

and, for a batch from one source, a bootstrap-calibrated typicality test [2]
(:meth:`OODDetector.batch_test`). :meth:`OODDetector.compare` and :func:`ood_benchmark` report
every method's AUROC, AUPR and true-positive rate at 5 % false positives, to choose between them.

Every likelihood-based score can use a better estimate of :math:`\log p(x)`: the mean over an
ensemble of flows trained from different seeds (``ensemble=``, [7, 8]) and, for integer images,
an importance-weighted estimate over several dequantisation draws (``dequantization_samples=``,
[6]).

Scores are turned into empirical p-values against the reference scores, so a threshold means a
false-positive rate on in-distribution data.

Exploding inverses (:func:`inverse_stability`) live in :mod:`pyroflows.diagnostics.stability`
and are re-exported here.

References:
    [1] E. Nalisnick, A. Matsukawa, Y. W. Teh, D. Gorur, B. Lakshminarayanan. Do Deep Generative
        Models Know What They Don't Know? ICLR 2019.
    [2] E. Nalisnick, A. Matsukawa, Y. W. Teh, B. Lakshminarayanan. Detecting Out-of-Distribution
        Inputs to Deep Generative Models Using Typicality. arXiv:1906.02994, 2019.
    [3] R. T. Schirrmeister, Y. Zhou, T. Ball, D. Zhang. Understanding Anomaly Detection with
        Deep Invertible Networks through Hierarchies of Distributions and Features. NeurIPS 2020.
    [4] J. Ren, P. J. Liu, E. Fertig, J. Snoek, R. Poplin, M. A. DePristo, J. V. Dillon,
        B. Lakshminarayanan. Likelihood Ratios for Out-of-Distribution Detection. NeurIPS 2019.
    [5] J. Serra, D. Alvarez, V. Gomez, O. Slizovskaia, J. F. Nunez, J. Luque. Input Complexity
        and Out-of-distribution Detection with Likelihood-based Generative Models. ICLR 2020.
    [6] J. Ho, X. Chen, A. Srinivas, Y. Duan, P. Abbeel. Flow++: Improving Flow-Based Generative
        Models with Variational Dequantization and Architecture Design. ICML 2019 (importance
        sampling of the dequantisation noise; Y. Burda, R. Grosse, R. Salakhutdinov, Importance
        Weighted Autoencoders, ICLR 2016, for the bound).
    [7] H. Choi, E. Jang, A. A. Alemi. WAIC, but Why? Generative Ensembles for Robust Anomaly
        Detection. arXiv:1810.01392, 2018.
    [8] B. Lakshminarayanan, A. Pritzel, C. Blundell. Simple and Scalable Predictive Uncertainty
        Estimation using Deep Ensembles. NeurIPS 2017.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .ood_scores import (
    OODReport,
    compressed_bits,
    negative_log_likelihood,
    ood_metrics,
    perturb_inputs,
    train_copy,
)
from .stability import StabilityReport, inverse_stability

__all__ = ["OODDetector", "StabilityReport", "inverse_stability", "ood_benchmark"]

_METHODS = ("likelihood", "typicality", "ratio", "complexity", "combined", "waic")
_COMBINED = ("likelihood", "complexity")


def _check_rows(name: str, x, minimum: int = 1) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] < minimum:
        raise ValueError(f"{name} must be a tensor of shape (N, ...) with at least {minimum} rows")


class OODDetector:
    r"""Calibrated out-of-distribution scores for a trained flow; larger scores mean less like
    the data.

    Methods (``method=``, the default of :meth:`scores`, :meth:`p_values`, :meth:`is_ood`; every
    method can also be asked for by name):

    * ``"likelihood"``: :math:`-\log p(x)`, the naive baseline that fails on simple inputs.
    * ``"typicality"``: :math:`|{-\log p(x)} - \hat H|`, distance to the typical set [2].
    * ``"ratio"``: :math:`\log p_{\text{bg}}(x) - \log p(x)` against a background flow: pass a
      flow you trained on generic data, or ``background="perturbed"`` to build a flow of the same
      class and configuration and train it with :func:`~pyroflows.fit` on ``train_data``
      perturbed with :func:`perturb_inputs` at ``mutation_rate`` (Ren et al. [4]).
    * ``"complexity"``: :math:`-\log_2 P(x) - L(x)`, the code length under the flow minus a
      standard-library compressor's length in bits (:func:`compressed_bits`, Serra et al. [5]);
      continuous data are quantised to ``precision`` and the flow's code length is that of the
      bin, :math:`-\log_2 p(x) - D\log_2(\text{precision})`.
    * ``"combined"``: :math:`z_{\text{likelihood}}(x) + z_{\text{complexity}}(x)`, the two
      scores standardised by their mean and standard deviation on the reference data (a
      heuristic of this library, not from the papers): the complexity term catches simple
      inputs (blank, constant) that the likelihood prefers, the likelihood term keeps the
      semantic shifts that the complexity correction alone loses.
    * ``"waic"``: :math:`\overline{\text{NLL}}(x) + \widehat{\operatorname{Var}}_m[\log p_m(x)]`,
      minus the WAIC of Choi et al. [7] over the ensemble's members :math:`p_m` (unbiased
      variance); needs ``ensemble=``.

    With ``ensemble=`` every other score uses the ensemble's mean negative log-likelihood
    :math:`\frac1M \sum_m -\log p_m(x)` in place of the single flow's [8]; with
    ``dequantization_samples=S`` the negative log-likelihood of an integer image is the
    importance-weighted estimate :math:`-\log \frac1S \sum_s p((x + u_s)/K) + D \log K`
    over :math:`S` noise draws [6] (tighter and less noisy than one draw).

    Which to use: measure it with :meth:`compare` on any OOD examples you have. Without any,
    use ``"combined"``, for integer images with ``dequantization_samples=8``, on the best
    density you can train: every score here is only as good as the flow's likelihood. If the
    training data have class labels, train the flow conditioned on them and detect with
    :meth:`pyroflows.ContextMixture.from_labels` as the flow: on the digits benchmark below
    that raised ``"combined"`` on the unseen classes to 0.974-0.983 AUROC, 0.011-0.025 above
    the same flow's likelihood without labels, and kept 1.000 on every synthetic shift. On the
    8x8 digits benchmark in docs/benchmarks.md (classes 0-4 in), a dense autoregressive spline
    flow on the flattened pixels, ``NSF(64, hidden_dims=(128, 128), fast="density")``, puts
    ``"combined"`` at 1.000 AUROC on every synthetic shift (blank, constant, noise, inverted,
    shifted) and at 0.955-0.975 on the unseen classes 5-9, 0.014-0.031 above a multi-scale
    Glow's likelihood and 0.017-0.023 above ``"combined"`` on that Glow. On the unseen classes
    it is level with the NSF's own likelihood (-0.002 to +0.006), which alone misses blank
    images (0.89-0.98 AUROC); ``"complexity"`` alone loses on the unseen classes. A dense
    ``MAF`` was not consistently better than the Glow there. For images too large for a dense
    flow, use a :class:`~pyroflows.Glow` (there ``"combined"`` was within 0.003 of its
    likelihood or above it on the unseen classes). ``"ratio"`` with ``background="perturbed"``
    is the published alternative for semantic shifts and worth a :meth:`compare`, but it was
    below 0.95 AUROC on blank images in 8 of those 9 runs (Glow, NSF, MAF; three seeds). For a
    batch of inputs known to come from one source, :meth:`batch_test` pools the evidence of
    the whole batch.

    Args:
        flow: the trained :class:`~pyroflows.Flow`.
        reference: held-out *in-distribution* data (not the training set, whose likelihoods are
            optimistic); at least 10 rows.
        method: default method, one of ``"typicality"`` (default, for backward compatibility),
            ``"likelihood"``, ``"ratio"``, ``"complexity"``, ``"combined"``, ``"waic"``.
        background: a second flow, or ``"perturbed"`` (needs ``train_data``); needed for
            ``"ratio"``.
        train_data: the flow's training data (for ``background="perturbed"`` and
            ``ensemble=<number>``).
        mutation_rate: probability that each value is mutated for the background's data
            (Ren et al. use 0.1-0.3; 0.3 did best on the digits).
        background_fit: keyword arguments for the background's :func:`~pyroflows.fit` (defaults:
            1000 steps, no progress bar, ``seed``; the bits/dim objective when ``levels`` is set).
        ensemble: more flows of the same model: a list of flows you trained (e.g. from other
            seeds), or a number ``n`` to build ``n`` copies of ``flow``'s class and configuration
            and train them with :func:`~pyroflows.fit` on ``train_data`` with seeds
            ``s + 1 .. s + n``, ``s`` being ``ensemble_fit``'s ``seed`` if given, else ``seed``
            (default: none).
        ensemble_fit: keyword arguments for those fits (same defaults as ``background_fit``;
            pass the options ``flow`` was trained with, ``seed`` is replaced per member).
        dequantization_samples: noise draws per integer image for its likelihood estimate
            (with ``levels``; default 1, the bits/dim bound).
        levels: number of grey levels when the data are integer images that the flow models
            dequantised to :math:`[0, 1)` (as :func:`~pyroflows.bits_per_dim_loss` trains it);
            scores then use :math:`-\log P(x)` of the integer image.
        precision: quantisation step of continuous data for ``"complexity"`` (default 0.01).
        compressor: ``"zlib"`` (default), ``"bz2"`` or ``"lzma"``, for ``"complexity"``.
        context, train_context: context rows for conditional flows.
        batch_size: evaluation batch size.
        seed: seed of the dequantisation noise, the perturbations and the bootstrap.

    Example:
        >>> import torch, pyroflows as pf
        >>> _ = torch.manual_seed(0)
        >>> flow = pf.RealNVP(10, num_layers=2, hidden_dims=(8,), zero_init=True)  # N(0, I)
        >>> det = OODDetector(flow, torch.randn(20000, 10))
        >>> x = torch.stack([torch.zeros(10), torch.ones(10), 6 * torch.ones(10)])
        >>> det.p_values(x).round(decimals=2)   # the mode is atypical too, not only the tail
        tensor([0.0300, 1.0000, 0.0000])
        >>> det.is_ood(x, alpha=0.05).tolist()
        [True, False, True]
        >>> det.batch_test(torch.randn(50, 10)) > 0.01, det.batch_test(torch.randn(50, 10) * 1.2)
        (True, 0.000999000999000999)
    """

    def __init__(
        self,
        flow,
        reference: Tensor,
        *,
        method: str = "typicality",
        background=None,
        train_data: Tensor | None = None,
        mutation_rate: float = 0.3,
        background_fit: Mapping | None = None,
        ensemble: int | Sequence = (),
        ensemble_fit: Mapping | None = None,
        dequantization_samples: int = 1,
        levels: int | None = None,
        precision: float = 0.01,
        compressor: str = "zlib",
        context: Tensor | None = None,
        train_context: Tensor | None = None,
        batch_size: int = 1024,
        seed: int = 0,
    ) -> None:
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
        if method == "ratio" and background is None:
            raise ValueError(
                "method='ratio' needs a background flow: OODDetector(..., background=flow2), "
                "or background='perturbed' with train_data=... to train one"
            )
        if not isinstance(reference, Tensor) or reference.dim() < 2 or reference.shape[0] < 10:
            raise ValueError(
                "reference must be a tensor of at least 10 held-out in-distribution rows"
            )
        if levels is not None and (int(levels) != levels or not 2 <= int(levels) <= 65536):
            raise ValueError(f"levels must be an integer in [2, 65536]; got {levels}")
        if not float(precision) > 0:
            raise ValueError(f"precision must be positive; got {precision}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be positive; got {batch_size}")
        if int(dequantization_samples) != dequantization_samples or dequantization_samples < 1:
            raise ValueError(
                f"dequantization_samples must be a positive integer; got {dequantization_samples}"
            )
        if isinstance(ensemble, (bool, str)) or not isinstance(ensemble, (int, Sequence)):
            raise TypeError(
                f"ensemble must be a number of flows to train or a list of flows; got {ensemble!r}"
            )
        if isinstance(ensemble, int) and ensemble < 0:
            raise ValueError(f"ensemble must be >= 0; got {ensemble}")
        if method == "waic" and (ensemble if isinstance(ensemble, int) else len(ensemble)) < 1:
            raise ValueError(
                "method='waic' needs an ensemble: OODDetector(..., ensemble=4, train_data=...) "
                "to train four more copies of the flow, or ensemble=[flow2, flow3, ...]"
            )
        self.flow, self.method = flow, method
        self.levels = None if levels is None else int(levels)
        self.precision, self.compressor = float(precision), compressor
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.dequantization_samples = int(dequantization_samples)
        if isinstance(background, str):
            if background != "perturbed":
                raise ValueError(f"background must be a flow or 'perturbed'; got {background!r}")
            background = self._perturbed_background(
                train_data, train_context, mutation_rate, background_fit
            )
        self.background = background
        self.members = [flow, *self._ensemble(ensemble, train_data, train_context, ensemble_fit)]
        self._reference, self._reference_context = reference, context
        self.reference_nll = self._member_nll(reference, context).mean(0)
        self.entropy = float(self.reference_nll.mean())  # the typical-set level \hat H
        self._sorted: dict[str, Tensor] = {}
        self._bootstrap: dict[tuple[int, int], Tensor] = {}

    # construction helpers -------------------------------------------------------------------
    def _perturbed_background(self, train_data, train_context, rate, fit_kwargs):
        _check_rows("train_data (needed by background='perturbed')", train_data, 2)
        generator = torch.Generator().manual_seed(self.seed)
        noisy = perturb_inputs(train_data, rate, levels=self.levels, generator=generator)
        seed = (fit_kwargs or {}).get("seed", self.seed)
        return train_copy(
            self.flow,
            noisy,
            context=train_context,
            levels=self.levels,
            fit_kwargs=fit_kwargs,
            seed=seed,
            what="background='perturbed'",
            hint="train a background flow yourself and pass background=that_flow",
        )

    def _ensemble(self, ensemble, train_data, train_context, fit_kwargs) -> list:
        if not isinstance(ensemble, int):
            return list(ensemble)
        if ensemble == 0:
            return []
        _check_rows("train_data (needed by ensemble=<number>)", train_data, 2)
        base = int((fit_kwargs or {}).get("seed", self.seed))
        return [
            train_copy(
                self.flow,
                train_data,
                context=train_context,
                levels=self.levels,
                fit_kwargs=fit_kwargs,
                seed=base + k,
                what="ensemble=<number>",
                hint="train the other flows yourself and pass ensemble=[flow2, flow3, ...]",
            )
            for k in range(1, ensemble + 1)
        ]

    def _member_nll(self, x: Tensor, context: Tensor | None) -> Tensor:
        """``(members, N)`` negative log-likelihoods of ``x`` under every member of the ensemble."""
        return torch.stack([self._nll(m, x, context) for m in self.members])

    def _nll(self, flow, x: Tensor, context: Tensor | None) -> Tensor:
        return negative_log_likelihood(
            flow,
            x,
            context,
            batch_size=self.batch_size,
            levels=self.levels,
            seed=self.seed,
            samples=self.dequantization_samples,
        )

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this detector can compute (``"ratio"`` only with a background,
        ``"waic"`` only with an ensemble)."""
        skip = {"ratio"} if self.background is None else set()
        skip |= {"waic"} if len(self.members) < 2 else set()
        return tuple(m for m in _METHODS if m not in skip)

    def _check_method(self, method: str | None) -> str:
        method = self.method if method is None else method
        if method not in self.methods:
            extra = {"ratio": " (ratio needs background=...)", "waic": " (waic needs ensemble=...)"}
            extra = extra.get(method, "")
            raise ValueError(f"method must be one of {self.methods}{extra}; got {method!r}")
        return method

    # scores ---------------------------------------------------------------------------------
    def _scores(
        self, x: Tensor, context: Tensor | None, methods: Sequence[str], nll: Tensor | None = None
    ) -> dict[str, Tensor]:
        members = None
        if nll is None or "waic" in methods:
            members = self._member_nll(x, context)
            nll = members.mean(0) if nll is None else nll
        need = set(methods) | ({"likelihood", "complexity"} if "combined" in methods else set())
        out: dict[str, Tensor] = {}
        for m in [m for m in _METHODS if m in need]:
            if m == "likelihood":
                out[m] = nll
            elif m == "typicality":
                out[m] = (nll - self.entropy).abs()
            elif m == "ratio":
                out[m] = nll - self._nll(self.background, x, context)
            elif m == "complexity":
                bits = nll / math.log(2)
                if self.levels is None:
                    bits = bits - x[0].numel() * math.log2(self.precision)
                length = compressed_bits(
                    x, levels=self.levels, precision=self.precision, compressor=self.compressor
                )
                out[m] = bits - length
            elif m == "combined":  # standardised likelihood + standardised complexity
                out[m] = sum((out[k] - self._location(k)) / self._spread(k) for k in _COMBINED)
            else:  # waic: -(mean - variance) of the members' log-likelihoods
                out[m] = members.mean(0) + members.var(0)
            out[m] = torch.where(torch.isnan(out[m]), torch.full_like(out[m], math.inf), out[m])
        return {m: out[m] for m in methods}

    def _location(self, method: str) -> float:
        ref = self._reference_scores(method)
        return float(ref[torch.isfinite(ref)].mean())

    def _spread(self, method: str) -> float:
        ref = self._reference_scores(method)
        sd = float(ref[torch.isfinite(ref)].std())
        return sd if sd > 0 else 1.0

    def scores(
        self, x: Tensor, context: Tensor | None = None, *, method: str | None = None
    ) -> Tensor:
        """OOD scores of ``x`` (float64): larger means less like the reference data."""
        method = self._check_method(method)
        _check_rows("x", x)
        return self._scores(x, context, [method])[method]

    def _reference_scores(self, method: str) -> Tensor:
        if method not in self._sorted:
            s = self._scores(
                self._reference, self._reference_context, [method], self.reference_nll
            )[method]
            self._sorted[method] = torch.sort(s).values
        return self._sorted[method]

    @property
    def reference_scores(self) -> Tensor:
        """Sorted scores of the reference data under the default method."""
        return self._reference_scores(self.method)

    def p_values(
        self, x: Tensor, context: Tensor | None = None, *, method: str | None = None
    ) -> Tensor:
        """Fraction of reference points scoring at least as high (small: likely OOD)."""
        method = self._check_method(method)
        s = self.scores(x, context, method=method)
        ref = self._reference_scores(method).to(s)
        n = ref.numel()
        below = torch.searchsorted(ref, s, right=False)
        return ((n - below).to(s.dtype) / n).to(torch.get_default_dtype())

    def is_ood(
        self,
        x: Tensor,
        *,
        alpha: float = 0.05,
        context: Tensor | None = None,
        method: str | None = None,
    ) -> Tensor:
        """Flag points whose p-value is below ``alpha`` (a false-positive rate of about ``alpha``)."""
        return self.p_values(x, context, method=method) < alpha

    # batch test -----------------------------------------------------------------------------
    def batch_test(
        self, batch: Tensor, *, context: Tensor | None = None, num_bootstrap: int = 1000
    ) -> float:
        r"""p-value that a whole batch comes from the reference distribution (Nalisnick et al. [2]).

        The statistic is :math:`|\frac1M \sum_m -\log p(x_m) - \hat H|`, the distance of the batch's
        mean NLL from the reference mean; its null distribution for batches of size :math:`M`
        is estimated by ``num_bootstrap`` batches drawn with replacement from the reference
        data (cached per size), and the p-value is :math:`(1 + \#\{T_b \ge T\}) / (B + 1)`.
        On in-distribution batches the p-values are uniform; the smallest possible is
        :math:`1/(B+1)`.
        """
        _check_rows("batch", batch)
        if int(num_bootstrap) < 10:
            raise ValueError(f"num_bootstrap must be at least 10; got {num_bootstrap}")
        m, b = batch.shape[0], int(num_bootstrap)
        if (m, b) not in self._bootstrap:
            generator = torch.Generator().manual_seed(self.seed + m)
            idx = torch.randint(0, self.reference_nll.numel(), (b, m), generator=generator)
            self._bootstrap[(m, b)] = (self.reference_nll[idx].mean(1) - self.entropy).abs()
        stat = abs(float(self._member_nll(batch, context).mean()) - self.entropy)
        null = self._bootstrap[(m, b)]
        return (1 + int((null >= stat).sum())) / (b + 1)

    # choosing a method ----------------------------------------------------------------------
    def compare(
        self,
        in_data: Tensor,
        ood_data: Tensor | Mapping[str, Tensor],
        *,
        methods: Sequence[str] | None = None,
        fpr: float = 0.05,
        in_context: Tensor | None = None,
        ood_context: Tensor | Mapping[str, Tensor] | None = None,
    ) -> OODReport:
        """AUROC, AUPR and TPR at ``fpr`` false positives of every method on your own validation
        sets: ``in_data`` held-out in-distribution inputs (ideally not ``reference``) and
        ``ood_data`` one OOD set or a dict ``{name: set}``. Returns an :class:`OODReport`
        (``str()`` is a markdown table; ``.best()`` the method with the highest mean AUROC)."""
        methods = list(self.methods if methods is None else methods)
        for m in methods:
            self._check_method(m)
        _check_rows("in_data", in_data)
        sets = dict(ood_data) if isinstance(ood_data, Mapping) else {"ood": ood_data}
        ctxs = ood_context if isinstance(ood_context, Mapping) else dict.fromkeys(sets, ood_context)
        s_in = self._scores(in_data, in_context, methods)
        rows = []
        for name, x in sets.items():
            _check_rows(f"OOD set {name!r}", x)
            s_out = self._scores(x, ctxs.get(name), methods)
            for m in methods:
                rows.append(
                    {"dataset": name, "method": m, **ood_metrics(s_in[m], s_out[m], fpr=fpr)}
                )
        return OODReport(rows)


def ood_benchmark(
    flow,
    in_data: Tensor,
    ood_sets: Mapping[str, Tensor],
    *,
    reference: Tensor | None = None,
    methods: Sequence[str] | None = None,
    fpr: float = 0.05,
    verbose: bool = False,
    **detector_options,
) -> OODReport:
    """AUROC, AUPR and TPR at 5 % false positives of every OOD method, per OOD set.

    Builds an :class:`OODDetector` on ``reference`` (held-out in-distribution data; default:
    ``in_data`` itself, which only sets the typical level :math:`\\hat H`) with
    ``detector_options`` (``background=``, ``train_data=``, ``levels=``, ...), then scores
    ``in_data`` against each set of ``ood_sets``. ``verbose=True`` also prints the table.

    Example:
        >>> import torch, pyroflows as pf
        >>> _ = torch.manual_seed(0)
        >>> flow = pf.Flow([], event_shape=(4,))   # exactly N(0, I)
        >>> report = pf.ood_benchmark(flow, torch.randn(500, 4), {"far": torch.randn(500, 4) + 4})
        >>> round(report.auroc("far", "likelihood"), 3), report.best()
        (1.0, 'likelihood')
    """
    ref = in_data if reference is None else reference
    detector = OODDetector(flow, ref, **detector_options)
    report = detector.compare(in_data, ood_sets, methods=methods, fpr=fpr)
    if verbose:
        print(report)
    return report
