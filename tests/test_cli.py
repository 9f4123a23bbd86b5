"""The ``pyroflows`` command: fit -> sample -> score round trip, bad input, and the demo."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pyroflows as pf
from pyroflows.cli import main
from pyroflows.datasets import load_table

FAST = ["--layers", "2", "--hidden", "16", "--steps", "40", "--lr", "5e-3", "--no-progress"]


@pytest.fixture
def table(tmp_path):
    """300 rows of independent N(100, 10^2) x N(-5, 1) with a header line."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(100, 10, 300), rng.normal(-5, 1, 300)])
    path = tmp_path / "data.csv"
    path.write_text("height,shift\n" + "\n".join(f"{a:.17g},{b:.17g}" for a, b in x) + "\n")
    return path, x


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_fit_sample_score_round_trip(tmp_path, capsys, table):
    data, x = table
    model = tmp_path / "m.pt"
    code, out, _ = run(capsys, "fit", data, "--flow", "maf", *FAST, "--out", model)
    assert code == 0 and "final NLL" in out
    # near-Gaussian data: the NLL in original units is close to the true entropy 2*1.4189 + log 10
    truth = 2 * 0.5 * math.log(2 * math.pi * math.e) + math.log(10.0)
    flow = pf.load(model)
    assert flow.metadata["columns"] == ["height", "shift"]
    assert flow.metadata["val_nll"] == pytest.approx(truth, abs=0.3)
    assert f"train {flow.metadata['train_nll']:.4f}" in out

    samples = tmp_path / "s.csv"
    code, out, _ = run(capsys, "sample", model, "-n", "2000", "--out", samples, "--seed", "1")
    assert code == 0
    s, columns = load_table(samples)
    assert columns == ["height", "shift"] and s.shape == (2000, 2)
    # standardisation undone: samples live in the original units
    assert np.allclose(s.mean(0), [100, -5], atol=[1.5, 0.2])
    assert np.allclose(s.std(0), [10, 1], rtol=0.15)

    scores = tmp_path / "scores.csv"
    code, out, _ = run(capsys, "score", model, data, "--out", scores)
    assert code == 0 and "scored 300 rows" in out
    lp, columns = load_table(scores)
    assert columns == ["log_prob"] and lp.shape == (300, 1)
    with torch.no_grad():  # the saved flow holds its standardisation: it takes raw rows
        expect = flow.log_prob(torch.tensor(x, dtype=torch.float32)).double().numpy()
    assert np.allclose(lp[:, 0], expect, atol=1e-5)
    assert -lp.mean() == pytest.approx(truth, abs=0.3)


@pytest.mark.parametrize("flow", ["realnvp", "nice", "glow", "planar", "iaf"])
def test_every_flow_family_fits_from_npy(tmp_path, capsys, table, flow):
    _, x = table
    data = tmp_path / "data.npy"
    np.save(data, x)
    model = tmp_path / f"{flow}.pt"
    args = ["--steps", "5", "--layers", "2", "--hidden", "8", "--no-progress"]
    code, _, _ = run(capsys, "fit", data, "--flow", flow, *args, "--out", model)
    assert code == 0
    code, _, _ = run(capsys, "sample", model, "-n", "7", "--out", tmp_path / "s.npy")
    assert code == 0 and np.load(tmp_path / "s.npy").shape == (7, 2)


def test_cnf_learns_a_bimodal_column_by_flow_matching(tmp_path, capsys):
    rng = np.random.default_rng(1)
    bimodal = rng.choice([-3.0, 3.0], 2000) + 0.5 * rng.normal(size=2000)
    x = np.column_stack([bimodal, rng.normal(50, 10, 2000)])
    data = tmp_path / "two.npy"
    np.save(data, x)
    model = tmp_path / "cnf.pt"
    opts = ["--hidden", "64", "--steps", "500", "--lr", "5e-3", "--warmup", "20", "--no-progress"]
    code, out, _ = run(
        capsys, "fit", data, "--flow", "cnf", *opts, "--lr-schedule", "cosine", "--out", model
    )
    assert code == 0 and "fitted CNF to 2000 rows x 2 columns" in out
    flow = pf.load(model)
    assert flow.metadata["objective"] == "flow-matching"
    # the untrained CNF is the identity, i.e. the Gaussian fit (6.26 nats); the truth is 5.14
    gaussian = sum(0.5 * math.log(2 * math.pi * math.e * x[:, j].var()) for j in range(2))
    assert flow.metadata["val_nll"] < gaussian - 0.4


def test_cnf_scores_are_exact_in_ten_dimensions(tmp_path, capsys):
    """Above 8 columns a CNF's default divergence is Hutchinson's; the CLI scores exactly."""
    x = np.random.default_rng(1).normal(size=(300, 10)) * np.arange(1, 11) + 50
    data = tmp_path / "ten.npy"
    np.save(data, x)
    model = tmp_path / "cnf.pt"
    opts = ["--hidden", "16", "--steps", "20", "--lr", "1e-2", "--no-progress"]
    assert run(capsys, "fit", data, "--flow", "cnf", *opts, "--out", model)[0] == 0
    scores = []
    for k in range(2):
        assert run(capsys, "score", model, data, "--out", tmp_path / f"s{k}.npy")[0] == 0
        scores.append(np.load(tmp_path / f"s{k}.npy")[:, 0])
    assert np.array_equal(scores[0], scores[1])  # no probe noise
    flow = pf.load(model).eval()
    flow.transform.divergence = "exact"
    with torch.no_grad():  # the saved flow holds its standardisation: it takes raw rows
        expect = flow.log_prob(torch.tensor(x, dtype=torch.float32)).double().numpy()
    assert np.allclose(scores[0], expect, atol=1e-4)
    assert run(capsys, "sample", model, "-n", "5", "--out", tmp_path / "x.npy")[0] == 0
    assert np.load(tmp_path / "x.npy").shape == (5, 10)


def test_rows_whose_solve_fails_score_nan():
    from pyroflows.cli import _score_rows

    class Stub:  # a standardiser whose solve fails on any batch with a row above 100
        def log_prob(self, flow, x):
            if (x > 100).any():
                raise pf.SolverError("underflow in dt")
            return -x.sum(-1)

    x = torch.tensor([[1.0], [500.0], [2.0], [3.0], [700.0]])
    scores = _score_rows(None, Stub(), x)
    assert torch.equal(torch.isnan(scores), torch.tensor([False, True, False, False, True]))
    assert scores[[0, 2, 3]].tolist() == [-1.0, -2.0, -3.0]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--flow", "maf", "--objective", "flow-matching"], 1, "use --flow cnf"),
        (["--flow", "cnf", "--layers", "3"], 1, "size it with --hidden"),
        (["--warmup", "-1"], 2, "expected a whole number >= 0; got '-1'"),
        (["--lr-schedule", "linear"], 2, "invalid choice: 'linear'"),
    ],
)
def test_bad_training_options(tmp_path, capsys, table, argv, code, message):
    data, _ = table
    got, _, err = run(capsys, "fit", data, *argv, "--out", tmp_path / "m.pt")
    assert got == code and message in err
    assert not (tmp_path / "m.pt").exists()


def test_score_reports_rows_with_nan_or_inf(tmp_path, capsys, table):
    data, _ = table
    model = tmp_path / "m.pt"
    assert run(capsys, "fit", data, *FAST, "--val-fraction", "0", "--out", model)[0] == 0
    rows = ["1,2", "nan,2", "3,4", "5,6", "7,-inf", "100,-5"]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(rows) + "\n")
    out_path = tmp_path / "scores.csv"
    code, out, err = run(capsys, "score", model, bad, "--out", out_path)
    assert code == 0
    assert "2 of 6 rows have NaN/Inf values and were scored NaN (data rows 2, 5" in err
    lp, _ = load_table(out_path)
    assert np.isnan(lp[[1, 4], 0]).all() and np.isfinite(lp[[0, 2, 3, 5], 0]).all()
    assert "over 4 rows" in out


def test_fit_without_validation_prints_na(tmp_path, capsys, table):
    data, _ = table
    code, out, _ = run(capsys, "fit", data, *FAST, "--val-fraction", "0", "--out", tmp_path / "m")
    assert code == 0 and "val n/a" in out


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (None, None, "no such file"),
        ("text.csv", "a,b\n1,2\n3,oops\n", "line 3, column 2 ('b'): 'oops'"),
        ("nan.csv", "1,2\nnan,2\n3,4\n4,inf\n", "2 row(s) with NaN/Inf (data rows 2, 4"),
        ("const.csv", "1,2\n1,3\n1,4\n", "column(s) 1 are constant"),
        ("empty.csv", "", "is empty"),
        ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "PNG image, not a table"),
        ("ragged.csv", "1,2\n3\n", "line 2 has 1"),
    ],
)
def test_fit_bad_data_gives_a_message_not_a_traceback(tmp_path, capsys, name, content, message):
    data = tmp_path / "missing.csv" if name is None else _write(tmp_path, name, content)
    code, _, err = run(capsys, "fit", data, *FAST, "--out", tmp_path / "m.pt")
    assert code == 1 and message in err and err.startswith("pyroflows fit: error:")
    assert not (tmp_path / "m.pt").exists()


def test_bad_val_fraction(tmp_path, capsys, table):
    data, _ = table
    code, _, err = run(capsys, "fit", data, *FAST, "--val-fraction", "1.5", "--out", tmp_path / "m")
    assert code == 1 and "must leave training and validation rows" in err


def test_unknown_flow_name_is_a_usage_error(tmp_path, capsys, table):
    data, _ = table
    code, _, err = run(capsys, "fit", data, "--flow", "magic", "--out", tmp_path / "m.pt")
    assert code == 2 and "invalid choice: 'magic'" in err


def test_score_with_wrong_column_count(tmp_path, capsys, table):
    data, _ = table
    model = tmp_path / "m.pt"
    assert run(capsys, "fit", data, *FAST, "--out", model)[0] == 0
    three = _write(tmp_path, "three.csv", "1,2,3\n4,5,6\n")
    code, _, err = run(capsys, "score", model, three, "--out", tmp_path / "s.csv")
    assert code == 1 and "has 3 columns but the model was fitted to 2 (height, shift)" in err
    renamed = _write(tmp_path, "renamed.csv", "shift,height\n-5,100\n")
    code, _, err = run(capsys, "score", model, renamed, "--out", tmp_path / "s.csv")
    assert code == 0 and "differ from the model's (height, shift); scoring by position" in err
    plain = _write(tmp_path, "plain.csv", "100,-5\n")
    code, _, err = run(capsys, "score", model, plain, "--out", tmp_path / "s.csv")
    assert code == 0 and err == ""


@pytest.mark.parametrize("command", ["sample", "score"])
def test_a_file_that_is_not_a_model(tmp_path, capsys, table, command):
    data, _ = table
    junk = _write(tmp_path, "junk.pt", b"\x00\x01 not a model")
    extra = ["-n", "3"] if command == "sample" else [data]
    code, _, err = run(capsys, command, junk, *extra, "--out", tmp_path / "o.csv")
    assert code == 1 and "is not a pyroflows model file" in err
    code, _, err = run(capsys, command, tmp_path / "nope.pt", *extra, "--out", tmp_path / "o.csv")
    assert code == 1 and "no model file" in err


def test_installed_script_help():
    script = Path(sys.executable).parent / "pyroflows"
    if not script.exists():
        pytest.skip("the pyroflows console script is not installed in this environment")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "{fit,sample,score,demo}" in done.stdout and "usage: pyroflows" in done.stdout


def test_demo_quick(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", "--out", tmp_path / "demo", "--quick")
    assert code == 0
    files = sorted(p.name for p in (tmp_path / "demo").iterdir())
    expected = ["digits_data.png", "digits_maf_samples.png", "moons_maf.png", "moons_realnvp.png"]
    assert files == sorted([*expected, "results.csv"])
    assert all((tmp_path / "demo" / f).stat().st_size > 1000 for f in expected)
    table = (tmp_path / "demo" / "results.csv").read_text().splitlines()
    assert table[0] == "data,flow,n_train,test_ll,reference,seconds" and len(table) == 4
    for line in table[1:]:
        assert math.isfinite(float(line.split(",")[3]))
    assert "two moons (2-D)  MAF" in out and "digits (64-D)" in out


def test_a_cli_model_loaded_in_python_scores_and_samples_raw_rows_like_the_cli(tmp_path, capsys):
    """The standardisation is part of the saved flow (a fixed Standardize layer at the data end),
    so ``pf.load(model).log_prob(raw rows)`` is what ``pyroflows score`` prints."""
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.normal(5e3, 40.0, 400), rng.normal(-2.0, 0.05, 400)])
    data = tmp_path / "raw.csv"
    data.write_text("big,small\n" + "\n".join(f"{a:.17g},{b:.17g}" for a, b in x) + "\n")
    model, scores = tmp_path / "m.pt", tmp_path / "scores.csv"
    assert run(capsys, "fit", data, *FAST, "--steps", "60", "--out", model)[0] == 0
    assert run(capsys, "score", model, data, "--out", scores)[0] == 0
    printed = load_table(scores)[0][:, 0]
    flow = pf.load(model)
    with torch.no_grad():
        lp = flow.log_prob(torch.tensor(x, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(lp, printed, rtol=1e-9, atol=1e-9)
    truth = 0.5 * math.log(2 * math.pi * math.e * 40.0**2) + 0.5 * math.log(
        2 * math.pi * math.e * 0.05**2
    )
    assert -lp.mean() == pytest.approx(truth, abs=0.3)
    assert flow.metadata["train_nll"] == pytest.approx(-lp.mean(), abs=0.3)
    with torch.no_grad():
        s = flow.sample((3000,)).double().numpy()
    assert np.allclose(s.mean(0), [5e3, -2.0], atol=[4.0, 0.01])
    assert np.allclose(s.std(0), [40.0, 0.05], rtol=0.15)
