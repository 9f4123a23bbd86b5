"""The ``pyroflows`` command: fit -> sample -> score round trip, bad input, and the demo."""

from __future__ import annotations

import math
import os
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
    assert "2 of 6 rows have NaN/Inf or empty cells and were scored NaN (data rows 2, 5" in err
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
        (
            "nan.csv",
            "1,2\nnan,2\n3,4\n4,inf\n",
            "2 row(s) with NaN/Inf or empty cells (data rows 2, 4",
        ),
        ("sep.csv", "a,b\n1,2\n1_000,3\n", "line 3, column 1 ('a'): '1_000'"),
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


def test_a_tiny_val_fraction_holds_out_one_row_as_fit_does(tmp_path, capsys, table):
    """The command splits by pf.fit's one rule (it used to refuse 0.3 rows of 300)."""
    data, _ = table
    model = tmp_path / "m.pt"
    code, _, _ = run(capsys, "fit", data, *FAST, "--val-fraction", "1e-3", "--out", model)
    assert code == 0 and pf.load(model).metadata["n_val"] == 1


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


# ---- output paths are checked before any work, and never overwrite an input -------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A table and a model fitted to it (shared by the tests that only read them)."""
    folder = tmp_path_factory.mktemp("fitted")
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(100, 10, 300), rng.normal(-5, 1, 300)])
    data = folder / "data.csv"
    data.write_text("height,shift\n" + "\n".join(f"{a:.17g},{b:.17g}" for a, b in x) + "\n")
    model = folder / "m.pt"
    assert main(["fit", str(data), *FAST, "--out", str(model)]) == 0
    return data, model


def _argv(command, data, model, out):
    return {
        "fit": ["fit", data, *FAST, "--out", out],
        "sample": ["sample", model, "-n", "5", "--out", out],
        "score": ["score", model, data, "--out", out],
    }[command]


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
@pytest.mark.parametrize(
    ("command", "target"),
    [("fit", "data"), ("sample", "model"), ("score", "data"), ("score", "model")],
)
def test_out_that_is_an_input_is_refused(tmp_path, capsys, fitted, command, target, link):
    """`fit data.csv --out data.csv` used to replace the table by a model file (exit 0)."""
    data, model = (tmp_path / p.name for p in fitted)
    for src, dst in zip(fitted, (data, model), strict=True):
        dst.write_bytes(src.read_bytes())
    victim = data if target == "data" else model
    out = victim
    if link == "symlink":
        out = tmp_path / "alias"
        out.symlink_to(victim)
    elif link == "hardlink":
        out = tmp_path / "alias"
        os.link(victim, out)
    before = victim.read_bytes()
    code, _, err = run(capsys, *_argv(command, data, model, out))
    assert code == 1
    how = "" if link == "same" else " (through a link)"
    assert f"--out {out} is the input file {victim}{how}; writing it would destroy" in err
    assert victim.read_bytes() == before


@pytest.fixture
def no_work(monkeypatch):
    """Make any training or model loading fail loudly: a refused --out must come first."""

    def boom(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(pf, "fit", boom)
    monkeypatch.setattr(pf, "load", boom)


@pytest.mark.parametrize("command", ["fit", "sample", "score"])
@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("", "--out is empty; give the file to write, e.g. --out "),
        ("{tmp}", "--out {tmp} is a folder; give a file to write in it, e.g. --out {tmp}/"),
        ("{tmp}/", "--out {tmp}/ is a folder; give a file to write in it"),
        ("{tmp}/new/sub/o.csv", "folder {tmp}/new/sub does not exist; create it first (mkdir -p"),
        ("{data}/o.csv", "--out {data}/o.csv: {data} is a file, not a folder"),
    ],
)
def test_bad_out_is_refused_before_any_work(
    tmp_path, capsys, fitted, no_work, command, out, message
):
    """A bad --out used to fail with a traceback after the whole fit; the model was lost."""
    data, model = fitted
    fill = {"tmp": tmp_path, "data": data}
    code, _, err = run(capsys, *_argv(command, data, model, out.format(**fill)))
    assert code == 1 and err.startswith(f"pyroflows {command}: error: ")
    assert message.format(**fill) in err
    assert list(tmp_path.iterdir()) == []  # no folder created silently


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_out_in_a_read_only_folder_is_refused_before_fitting(tmp_path, capsys, fitted, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run(capsys, *_argv("fit", fitted[0], None, locked / "m.pt"))
    finally:
        locked.chmod(0o700)
    assert code == 1 and "no permission to write there" in err


@pytest.mark.parametrize(
    ("out", "message"),
    [("{data}", "--out {data} is a file; give a folder"), ("{tmp}/a/b", "mkdir -p {tmp}/a")],
)
def test_demo_out_is_checked_first(tmp_path, capsys, fitted, monkeypatch, out, message):
    import pyroflows.demo

    def boom(*args, **kwargs):
        raise AssertionError("the demo started before --out was checked")

    monkeypatch.setattr(pyroflows.demo, "run_demo", boom)
    fill = {"tmp": tmp_path, "data": fitted[0]}
    code, _, err = run(capsys, "demo", "--out", out.format(**fill), "--quick")
    assert code == 1 and message.format(**fill) in err and not (tmp_path / "a").exists()


@pytest.mark.parametrize("suffix", [".NPY", ".Npy"])
def test_npy_output_in_any_case_is_written_where_asked(tmp_path, capsys, fitted, suffix):
    """`--out samples.NPY` used to write samples.NPY.npy."""
    data, model = fitted
    samples, scores = tmp_path / f"samples{suffix}", tmp_path / f"scores{suffix}"
    assert run(capsys, "sample", model, "-n", "4", "--out", samples)[0] == 0
    assert run(capsys, "score", model, data, "--out", scores)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([samples.name, scores.name])
    with samples.open("rb") as f:
        assert np.load(f).shape == (4, 2)
    with scores.open("rb") as f:
        assert np.load(f).shape == (300, 1)


# ---- missing values and number options ---------------------------------------------------------


def test_empty_cells_are_missing_values(tmp_path, capsys, fitted):
    """pandas writes NaN as an empty cell: fit reports those rows, score scores them NaN."""
    pd = pytest.importorskip("pandas")  # arviz brings it
    frame = pd.DataFrame({"height": [100.0, None, 95.0, 110.0], "shift": [-5.0, -4.0, None, -6.0]})
    table = tmp_path / "holes.csv"
    frame.to_csv(table, index=False)
    assert ",-4.0" in table.read_text()  # the missing height is an empty cell
    code, _, err = run(capsys, "fit", table, *FAST, "--out", tmp_path / "m.pt")
    assert code == 1
    assert "holes.csv has 2 row(s) with NaN/Inf or empty cells (data rows 2, 3, counted" in err
    out = tmp_path / "scores.csv"
    code, stdout, err = run(capsys, "score", fitted[1], table, "--out", out)
    assert code == 0 and "over 2 rows" in stdout
    assert "2 of 4 rows have NaN/Inf or empty cells and were scored NaN (data rows 2, 3" in err
    lp, _ = load_table(out)
    assert np.isnan(lp[[1, 2], 0]).all() and np.isfinite(lp[[0, 3], 0]).all()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--val-fraction", "nan"], "--val-fraction: expected the share of rows to hold out"),
        (["--val-fraction", "inf"], "a number from 0 (none) up to but not including 1"),
        (["--val-fraction", "-0.1"], "e.g. 0.1; got '-0.1'"),
        (["--val-fraction", "1"], "e.g. 0.1; got '1'"),
        (["--val-fraction", "1.5"], "e.g. 0.1; got '1.5'"),
        (["--lr", "inf"], "--lr: expected a positive finite number; got 'inf'"),
        (["--lr", "nan"], "--lr: expected a positive finite number; got 'nan'"),
        (["--lr=-1e-3"], "--lr: expected a positive finite number; got '-1e-3'"),
        (["--seed", "-1"], "--seed: expected a whole number from 0 to 4294967295; got '-1'"),
        (["--seed", str(2**32)], f"got '{2**32}'"),
        (["--steps", "2.5"], "--steps: expected a positive int; got '2.5'"),
    ],
)
def test_number_options_refuse_non_finite_and_out_of_range(
    tmp_path, capsys, fitted, no_work, argv, message
):
    code, _, err = run(capsys, "fit", fitted[0], *FAST, *argv, "--out", tmp_path / "m.pt")
    assert code == 2 and message in err


def test_sample_seed_out_of_range(tmp_path, capsys, fitted, no_work):
    code, _, err = run(capsys, "sample", fitted[1], "-n", "3", "--seed", "-2", "--out", "s.csv")
    assert code == 2 and "--seed: expected a whole number from 0 to 4294967295" in err


# ---- --flow choices come from the presets' registry ---------------------------------------------


def test_flow_choices_come_from_the_registry(monkeypatch):
    from pyroflows.cli import FLOW_CHOICES, _vector_presets

    names = {"maf", "iaf", "realnvp", "nice", "glow", "planar", "cnf", "nsf"}
    assert names <= set(FLOW_CHOICES)

    class Toy(pf.MAF):  # a new vector preset of pyroflows appears without an edit
        pass

    class Picture(pf.Flow):  # an image-only preset does not
        def __init__(self, input_shape, hidden_dims=None):
            super().__init__([], event_shape=input_shape)

    class Outside(pf.MAF):  # nor does a user's subclass
        pass

    Toy.__module__ = Picture.__module__ = "pyroflows.flows"
    monkeypatch.setitem(pf.FLOWS, "Toy", Toy)
    monkeypatch.setitem(pf.FLOWS, "Picture", Picture)
    monkeypatch.setitem(pf.FLOWS, "Outside", Outside)
    assert set(_vector_presets()) == names | {"toy"}
    assert _vector_presets()["toy"] == "Toy"


def test_nsf_fits_a_table_from_the_command_line(tmp_path, capsys, table):
    """`--flow nsf` comes from pf.FLOWS; its model scores near the table's entropy."""
    data, _ = table
    model = tmp_path / "nsf.pt"
    code, out, _ = run(capsys, "fit", data, "--flow", "nsf", *FAST, "--out", model)
    assert code == 0 and "final NLL" in out
    flow = pf.load(model)
    assert type(flow).__name__ == "NSF" and flow.config["bins"] == 8
    truth = 2 * 0.5 * math.log(2 * math.pi * math.e) + math.log(10.0)
    assert flow.metadata["val_nll"] == pytest.approx(truth, abs=0.3)
