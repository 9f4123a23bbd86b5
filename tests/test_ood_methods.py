"""OOD methods with known answers: metrics, compressed lengths, perturbations, the exact ratio,
the complexity score, the batch typicality test and the per-method comparison
(pyroflows/diagnostics/ood.py, ood_scores.py)."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
from conftest import gaussian_flow, normal_nll

import pyroflows as pf
from pyroflows.diagnostics import (
    OODDetector,
    aupr,
    auroc,
    compressed_bits,
    ood_metrics,
    perturb_inputs,
    tpr_at_fpr,
)


def ks_uniform(p: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the sample ``p`` and U(0, 1)."""
    p = np.sort(p)
    n = p.size
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - p), np.max(p - (i - 1) / n)))


# metrics -------------------------------------------------------------------------------------
def test_auroc_matches_hand_counted_pairs_with_ties():
    # pairs (ood > in) + 0.5 * ties, counted by hand: 0.35 beats 0.1 and ties 0.35 -> 1.5,
    # 0.9 beats all four -> 4, 0.5 beats three -> 3; 8.5 of 12 pairs
    assert auroc([0.1, 0.4, 0.35, 0.8], [0.35, 0.9, 0.5]) == pytest.approx(8.5 / 12)
    assert auroc([1, 1, 1], [1, 1]) == 0.5
    assert auroc([0, 1], [2, 3]) == 1.0 and auroc([2, 3], [0, 1]) == 0.0
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 60), rng.integers(1, 7, 40)  # many ties
    brute = np.mean((b[:, None] > a[None]) + 0.5 * (b[:, None] == a[None]))
    assert auroc(a, b) == pytest.approx(brute, abs=1e-12)


def test_aupr_and_tpr_at_fpr_hand_computed():
    # OOD at ranks 1 and 3 of 4 (no ties): AP = (1/2)(1/1) + (1/2)(2/3)
    assert aupr([0.5, 0.1], [0.9, 0.3]) == pytest.approx(0.5 + 1 / 3)
    # a tie group between one in and one OOD enters as one threshold with precision 1/2
    assert aupr([1.0], [1.0]) == pytest.approx(0.5)
    assert aupr([0.0, 0.0], [1.0, 1.0]) == 1.0
    # 100 in-distribution scores 0..99: at 5 % FPR the threshold is 94 (5 scores above it)
    assert tpr_at_fpr(np.arange(100), [94, 95, 200, 10]) == 0.5
    assert tpr_at_fpr(np.arange(100), [94.5], fpr=0.0) == 0.0
    m = ood_metrics([0.0, 1.0], [2.0, float("nan")])  # NaN counts as the most unusual
    assert m == {"auroc": 1.0, "aupr": 1.0, "tpr_at_5fpr": 1.0}
    with pytest.raises(ValueError, match="empty"):
        auroc([], [1.0])


# complexity ----------------------------------------------------------------------------------
def test_constant_image_has_a_short_compressed_length():
    g = torch.Generator().manual_seed(0)
    const = torch.full((1, 1, 8, 8), 7, dtype=torch.long)
    noise = torch.randint(0, 17, (1, 1, 8, 8), generator=g)
    bits = compressed_bits(torch.cat([const, noise]), levels=17)
    assert bits[0] <= 8 * 8  # at most 8 bytes for 64 identical bytes
    assert bits[1] >= 8 * 40  # 17-level noise: about 64 log2(17) / 8 = 33 bytes at best
    raw = bytes([7] * 64)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    assert bits[0] == 8 * len(c.compress(raw) + c.flush())
    for name in ("bz2", "lzma"):
        b = compressed_bits(torch.cat([const, noise]), levels=17, compressor=name)
        assert b[0] < b[1]


def test_tables_are_quantised_to_the_stated_precision():
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.004]])
    fine, coarse = (compressed_bits(x, precision=p) for p in (0.001, 0.01))
    assert fine[0] < fine[1]  # at 0.001 the rows differ
    assert coarse[0] == coarse[1]  # at 0.01 both are all zeros
    with pytest.raises(ValueError, match="precision"):
        compressed_bits(x)
    with pytest.raises(ValueError, match="levels"):
        compressed_bits(torch.full((1, 4), 20), levels=17)


def test_complexity_score_is_code_length_minus_compressed_length():
    flow = gaussian_flow(4)
    x = torch.randn(20, 4)
    det = OODDetector(flow, torch.randn(50, 4), method="complexity", precision=0.01)
    bits = normal_nll(x, 1.0) / math.log(2) - 4 * math.log2(0.01)
    expected = bits - compressed_bits(x, precision=0.01)
    torch.testing.assert_close(det.scores(x), expected, atol=1e-4, rtol=1e-6)


def test_complexity_catches_blank_images_that_likelihood_prefers():
    # a "flow" over images whose density favours dark pixels: blank images get the highest
    # likelihood; their tiny compressed length removes that advantage
    flow = pf.Flow([], event_shape=(1, 8, 8), base="diag")
    with torch.no_grad():
        flow.base_log_scale.fill_(math.log(0.4))
    g = torch.Generator().manual_seed(0)
    digits_like = (torch.rand(200, 1, 8, 8, generator=g) < 0.4) * torch.randint(
        4, 17, (200, 1, 8, 8), generator=g
    )
    blank = torch.zeros(50, 1, 8, 8, dtype=torch.long)
    det = OODDetector(flow, digits_like[:100], levels=17)
    lik = auroc(
        det.scores(digits_like[100:], method="likelihood"), det.scores(blank, method="likelihood")
    )
    cpx = auroc(
        det.scores(digits_like[100:], method="complexity"), det.scores(blank, method="complexity")
    )
    assert lik < 0.05 and cpx > 0.95


# perturbation and background ------------------------------------------------------------------
def test_perturb_inputs_mutates_at_the_given_rate():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2000, 1, 8, 8, dtype=torch.long)
    assert torch.equal(perturb_inputs(x, 0.0, levels=17, generator=g), x)
    y = perturb_inputs(x, 0.3, levels=17, generator=g)
    assert abs(float((y != 0).float().mean()) - 0.3 * 16 / 17) < 0.01
    full = perturb_inputs(x, 1.0, levels=17, generator=g)
    counts = torch.bincount(full.flatten(), minlength=17).double()
    assert counts.numel() == 17 and (counts / counts.sum() - 1 / 17).abs().max() < 0.01
    table = torch.randn(1000, 3) + torch.tensor([0.0, 10.0, -10.0])
    t = perturb_inputs(table, 0.5, generator=g)
    changed = (t != table).float().mean()
    assert 0.45 < float(changed) < 0.55
    # redrawn entries come from their own column's values
    for j in range(3):
        assert torch.isin(t[:, j], table[:, j]).all()
    with pytest.raises(ValueError, match="rate"):
        perturb_inputs(x, 1.5, levels=17)


def test_ratio_is_exact_against_a_known_background():
    flow, background = gaussian_flow(3), gaussian_flow(3, scale=2.0)
    x = 3 * torch.randn(40, 3)
    det = OODDetector(flow, torch.randn(100, 3), method="ratio", background=background)
    # log p_bg(x) - log p(x) for N(0, 4 I) against N(0, I)
    expected = normal_nll(x, 1.0) - normal_nll(x, 2.0)
    torch.testing.assert_close(det.scores(x), expected, atol=1e-5, rtol=1e-5)  # float32 flows
    # the ratio of the true densities is the optimal test of N(0, 4I) against N(0, I): it beats
    # the likelihood, which only sees the norm too, but ranks the same: equal AUROCs here
    report = det.compare(torch.randn(2000, 3), 2 * torch.randn(2000, 3))
    assert report.auroc("ood", "ratio") == pytest.approx(report.auroc("ood", "likelihood"))


def test_perturbed_background_is_the_same_flow_family_trained_on_mutated_inputs(fit_calls):
    calls = fit_calls
    torch.manual_seed(0)
    flow = pf.MAF(3, num_layers=2, hidden_dims=(8,))
    train = torch.randn(300, 3)
    det = OODDetector(
        flow,
        torch.randn(50, 3),
        method="ratio",
        background="perturbed",
        train_data=train,
        mutation_rate=0.5,
        background_fit={"steps": 5, "batch_size": 64},
    )
    bg = det.background
    assert type(bg) is pf.MAF and bg is not flow and bg.config == flow.config
    assert not bg.training
    ((fitted, data, kw),) = calls
    assert fitted is bg and kw["steps"] == 5 and kw["batch_size"] == 64
    # trained on the training rows with about half of the entries redrawn from their column
    assert data.shape == train.shape and 0.4 < float((data != train).float().mean()) < 0.6
    assert det.scores(torch.randn(4, 3)).shape == (4,)


def test_perturbed_background_of_an_image_flow_uses_the_bits_objective(monkeypatch):
    import pyroflows.infer

    calls = []
    monkeypatch.setattr(pyroflows.infer, "fit", lambda flow, data, **kw: calls.append((data, kw)))
    flow = pf.Glow(shape=(1, 4, 4), levels=1, steps_per_level=1, hidden_channels=4)
    train = torch.randint(0, 5, (40, 1, 4, 4))
    det = OODDetector(
        flow, train[:20], levels=5, background="perturbed", train_data=train, mutation_rate=0.25
    )
    ((data, kw),) = calls
    assert type(det.background) is pf.Glow and "objective" in kw and kw["steps"] == 1000
    assert data.dtype == train.dtype and int(data.max()) <= 4
    assert 0.1 < float((data != train).float().mean()) < 0.3  # 0.25 * 4 / 5 = 0.2


def test_perturbed_background_needs_training_data_and_a_config():
    flow = pf.MAF(2, num_layers=1, hidden_dims=(8,))
    with pytest.raises(ValueError, match="train_data"):
        OODDetector(flow, torch.randn(20, 2), method="ratio", background="perturbed")
    bare = pf.Flow([], event_shape=(2,))
    with pytest.raises(ValueError, match="configuration"):
        OODDetector(bare, torch.randn(20, 2), background="perturbed", train_data=torch.randn(20, 2))
    with pytest.raises(ValueError, match="perturbed"):
        OODDetector(flow, torch.randn(20, 2), background="noise")


def test_image_scores_use_the_integer_likelihood_of_a_dequantised_flow():
    flow = pf.Flow([], event_shape=(1, 2, 2))  # N(0, I) on the dequantised scale
    x = torch.randint(0, 5, (30, 1, 2, 2))
    det = OODDetector(flow, x, levels=5, method="likelihood", seed=3)
    bpd = pf.bits_per_dim(
        flow, x, levels=5, reduction="none", generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(det.scores(x), (bpd * 4 * math.log(2)).double())


def test_a_vector_flow_on_flattened_images_scores_like_the_image_flow():
    # benchmarks/ood.py --flow nsf|maf scores the digits flattened to (N, 64): the same density
    # must get the same likelihood, complexity and combined scores either way
    x = torch.randint(0, 5, (40, 1, 2, 2))
    x[:5] = 0  # simple inputs: short compressed lengths
    image, vector = pf.Flow([], event_shape=(1, 2, 2)), pf.Flow([], event_shape=(4,))
    kw = dict(levels=5, dequantization_samples=3, seed=2)
    det_image, det_vector = OODDetector(image, x, **kw), OODDetector(vector, x.flatten(1), **kw)
    for method in ("likelihood", "complexity", "combined"):
        torch.testing.assert_close(
            det_vector.scores(x.flatten(1), method=method), det_image.scores(x, method=method)
        )


def test_perturbed_background_of_a_dense_spline_flow_is_an_nsf_with_the_bits_objective(
    monkeypatch,
):
    import pyroflows.infer

    calls = []
    monkeypatch.setattr(pyroflows.infer, "fit", lambda flow, data, **kw: calls.append((data, kw)))
    flow = pf.NSF(16, num_layers=1, hidden_dims=(8,), fast="density")
    train = torch.randint(0, 5, (40, 16))
    det = OODDetector(
        flow, train[:20], levels=5, background="perturbed", train_data=train, mutation_rate=0.25
    )
    ((data, kw),) = calls
    assert type(det.background) is pf.NSF and det.background.config == flow.config
    assert "objective" in kw and data.shape == train.shape and int(data.max()) <= 4
    assert det.scores(train[:3], method="ratio").shape == (3,)


# batch typicality test -----------------------------------------------------------------------
def test_batch_test_p_values_are_uniform_in_distribution_and_near_zero_when_shifted():
    torch.manual_seed(0)
    flow = gaussian_flow(5)
    det = OODDetector(flow, torch.randn(20000, 5))
    p_in = np.array([det.batch_test(torch.randn(10, 5), num_bootstrap=2000) for _ in range(300)])
    # KS distance to U(0, 1): the 1 % critical value for n = 300 is 1.63 / sqrt(300) = 0.094
    assert ks_uniform(p_in) < 0.094
    p_out = [det.batch_test(torch.randn(10, 5) + 2.0, num_bootstrap=2000) for _ in range(30)]
    assert max(p_out) < 0.01
    # a batch of points near the mode is too likely: also rejected (typicality, not likelihood)
    assert det.batch_test(0.2 * torch.randn(10, 5), num_bootstrap=2000) < 0.01


# choosing ------------------------------------------------------------------------------------
def test_compare_reports_every_method_and_picks_the_best():
    torch.manual_seed(0)
    flow, background = gaussian_flow(10), gaussian_flow(10, scale=3.0)
    det = OODDetector(flow, torch.randn(500, 10), background=background)
    assert det.methods == ("likelihood", "typicality", "ratio", "complexity", "combined")
    near_mode = 0.05 * torch.randn(300, 10)
    far = torch.randn(300, 10) + 5
    report = det.compare(torch.randn(300, 10), {"mode": near_mode, "far": far})
    assert {(r["dataset"], r["method"]) for r in report.rows} == {
        (d, m) for d in ("mode", "far") for m in det.methods
    }
    assert report.auroc("mode", "likelihood") < 0.05 < 0.95 < report.auroc("mode", "typicality")
    assert report.best("mode") == "typicality"
    assert "| mode | typicality |" in str(report)
    with pytest.raises(ValueError, match="ratio needs background"):
        OODDetector(flow, torch.randn(50, 10)).scores(torch.randn(2, 10), method="ratio")


def test_ood_benchmark_returns_and_prints_the_table(capsys):
    torch.manual_seed(0)
    flow = gaussian_flow(2)
    report = pf.ood_benchmark(
        flow, torch.randn(200, 2), {"far": torch.randn(100, 2) + 6}, verbose=True
    )
    assert report.auroc("far", "likelihood") == 1.0
    out = capsys.readouterr().out
    assert "| far | likelihood | 1.000 | 1.000 | 1.000 |" in out


def test_combined_is_the_sum_of_standardised_likelihood_and_complexity():
    torch.manual_seed(0)
    flow = gaussian_flow(4)
    ref, x = torch.randn(200, 4), 2 * torch.randn(30, 4)
    det = OODDetector(flow, ref, method="combined", precision=0.01)
    expected = 0
    for m in ("likelihood", "complexity"):
        r = det.scores(ref, method=m)
        expected = expected + (det.scores(x, method=m) - r.mean()) / r.std()
    torch.testing.assert_close(det.scores(x), expected)
    # the reference scores of a standardised sum have mean zero
    assert abs(float(det.scores(ref).mean())) < 1e-9


def test_new_options_are_checked_with_messages_that_say_what_to_do():
    flow = gaussian_flow(2)
    ref = torch.randn(20, 2)
    with pytest.raises(ValueError, match="levels"):
        OODDetector(flow, ref, levels=1)
    with pytest.raises(ValueError, match="precision"):
        OODDetector(flow, ref, precision=0.0)
    det = OODDetector(flow, ref)
    with pytest.raises(ValueError, match="num_bootstrap"):
        det.batch_test(torch.randn(5, 2), num_bootstrap=3)
    with pytest.raises(ValueError, match="compressor"):
        compressed_bits(ref, precision=0.1, compressor="gzip")
    with pytest.raises(ValueError, match="method"):
        det.compare(ref, torch.randn(5, 2), methods=["nope"])
