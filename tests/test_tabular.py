"""Reading tables from files, row checks, and the standardiser's change of variables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import pyroflows as pf
from pyroflows.datasets.tabular import Standardizer, check_rows, load_table


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "columns"),
    [
        ("h.csv", "a,b\n1,2\n3.5,-4e1\n", ["a", "b"]),
        ("n.csv", "1,2\n3.5,-4e1\n", ["x0", "x1"]),
        ("t.tsv", "a\tb\n1\t2\n3.5\t-4e1\n", ["a", "b"]),
        ("t.txt", "1 2\n  3.5   -4e1\n", ["x0", "x1"]),
        ("s.csv", "a;b\n1;2\n3.5;-4e1\n", ["a", "b"]),
        ("q.csv", '"col, one","b"\n1,2\n\n# a comment\n3.5,-4e1\n\n', ["col, one", "b"]),
        ("bom.csv", "\ufeffa,b\r\n1,2\r\n3.5,-4e1\r\n", ["a", "b"]),
    ],
)
def test_reads_text_tables(tmp_path, name, content, columns):
    x, cols = load_table(write(tmp_path, name, content))
    assert x.dtype == np.float64
    assert x.tolist() == [[1.0, 2.0], [3.5, -40.0]]
    assert cols == columns


def test_reads_one_column_and_nan_inf_cells(tmp_path):
    x, cols = load_table(write(tmp_path, "one.csv", "value\n1\nnan\ninf\n"))
    assert cols == ["value"] and x.shape == (3, 1)
    assert check_rows(x).tolist() == [True, False, False]


def test_reads_npy(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(6, dtype=np.int32).reshape(3, 2))
    x, cols = load_table(path)
    assert x.dtype == np.float64 and x.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert cols == ["x0", "x1"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_table(tmp_path / "nope.csv")


@pytest.mark.parametrize("content", ["", "\n\n  \n", "# only a comment\n"])
def test_empty_file(tmp_path, content):
    with pytest.raises(ValueError, match="is empty"):
        load_table(write(tmp_path, "e.csv", content))


def test_header_without_rows(tmp_path):
    with pytest.raises(ValueError, match="header line but no data rows"):
        load_table(write(tmp_path, "h.csv", "a,b\n"))


def test_non_numeric_cells_are_located(tmp_path):
    rows = ["a,b", "1,2", "3,oops", "4,5", "1_000,6"] + [f"x{i},1" for i in range(6)]
    with pytest.raises(ValueError) as info:
        load_table(write(tmp_path, "bad.csv", "\n".join(rows) + "\n"))
    msg = str(info.value)
    assert "8 non-numeric cells" in msg
    assert "line 3, column 2 ('b'): 'oops'" in msg
    assert "line 5, column 1 ('a'): '1_000'" in msg
    assert "(and 3 more)" in msg and "leave a missing value empty or write nan" in msg


def test_empty_cells_are_missing_values(tmp_path):
    """pandas writes a missing value as an empty cell: it reads as NaN, for the caller to report."""
    pd = pytest.importorskip("pandas")  # arviz brings it
    frame = pd.DataFrame({"a": [1.0, None, 3.0, 4.0], "b": [5.0, 6.0, None, 8.0]})
    path = tmp_path / "pandas.csv"
    frame.to_csv(path, index=False)
    assert path.read_text().splitlines()[2:4] == [",6.0", "3.0,"]
    x, cols = load_table(path)
    assert cols == ["a", "b"] and x.shape == (4, 2)
    assert np.isnan(x[1, 0]) and np.isnan(x[2, 1])
    assert check_rows(x).tolist() == [True, False, False, True]
    x, cols = load_table(write(tmp_path, "spaces.tsv", "1\t \t3\n4\t5\t\n"))
    assert cols == ["x0", "x1", "x2"] and np.isnan(x[[0, 1], [1, 2]]).all()


@pytest.mark.parametrize("cell", ["1_000", "1_0.5", "\u0661\u0662", "\uff11\uff12", "0x10"])
def test_only_plain_ascii_numbers_are_numbers(tmp_path, cell):
    """Python's float() reads 1_000 as 1000 and Arabic-Indic or full-width digits as numbers."""
    with pytest.raises(ValueError, match=rf"line 2, column 2 \('x1'\): '{cell}'"):
        load_table(write(tmp_path, "u.csv", f"1,2\n3,{cell}\n"))


def test_ragged_rows(tmp_path):
    with pytest.raises(ValueError, match=r"needs 3 cells .* line 3 has 2; line 4 has 4"):
        load_table(write(tmp_path, "r.csv", "1,2,3\n4,5,6\n7,8\n1,2,3,4\n"))


@pytest.mark.parametrize(
    ("shape", "hint"), [((5,), r"x.reshape\(-1, 1\)"), ((2, 3, 4), "flatten"), ((), "shape")]
)
def test_npy_must_be_two_dimensional(tmp_path, shape, hint):
    path = tmp_path / "v.npy"
    np.save(path, np.zeros(shape))
    with pytest.raises(ValueError, match=hint):
        load_table(path)


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("img.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "PNG image"),
        ("img.csv", b"\x89PNG\r\n\x1a\n\x00\x00", "PNG image"),
        ("blob.csv", b"1,2\n\x00\x01\x02\x03", "binary file"),
        ("latin.csv", "a,b\n1,2\ncaf\xe9,3\n".encode("latin-1"), "not UTF-8"),
        ("bad.npy", b"not an npy file", "not a readable .npy"),
    ],
)
def test_files_that_are_not_tables(tmp_path, name, content, what):
    with pytest.raises(ValueError, match=what):
        load_table(write(tmp_path, name, content))


def test_npz_and_directory_are_refused(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"np\.save"):
        load_table(tmp_path / "a.npz")
    with pytest.raises(ValueError, match="directory"):
        load_table(tmp_path)


def test_check_rows():
    x = torch.tensor([[0.0, 1.0], [float("nan"), 1.0], [2.0, -float("inf")], [3.0, 4.0]])
    assert check_rows(x).tolist() == [True, False, False, True]
    assert check_rows(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="2-D"):
        check_rows(np.zeros(3))


def test_standardizer_statistics_and_constant_guard():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(5, 3, 1000), np.full(1000, 0.1), rng.normal(-2, 0.5, 1000)])
    s = Standardizer.fit(x)
    z = s.transform(x)
    assert np.allclose(z.mean(0), 0, atol=1e-12)
    assert np.allclose(z[:, [0, 2]].std(0), 1) and np.allclose(z[:, 1], 0, atol=1e-12)
    assert s.constant == [1] and s.std[1] == 1.0
    assert np.isfinite(z).all() and np.allclose(s.inverse(z), x)
    assert s.log_det == pytest.approx(math.log(x[:, 0].std()) + math.log(x[:, 2].std()))
    t = torch.from_numpy(x).float()
    zt = s.transform(t)
    assert zt.dtype == torch.float32 and torch.allclose(zt, torch.from_numpy(z).float(), atol=1e-5)


def test_standardizer_log_prob_is_the_change_of_variables():
    # at initialisation MAF is the identity, so p_z = N(0, I) and p_x must be N(mean, std^2)
    x = torch.randn(200, 3, dtype=torch.float64) * torch.tensor([2.0, 0.1, 7.0]) + 4.0
    s = Standardizer.fit(x)
    flow = pf.MAF(3, num_layers=2, hidden_dims=(8,)).double()
    mean, std = torch.from_numpy(s.mean), torch.from_numpy(s.std)
    exact = torch.distributions.Normal(mean, std).log_prob(x).sum(-1)
    assert torch.allclose(s.log_prob(flow, x), exact, atol=1e-10)


def test_standardizer_json_round_trip_and_errors():
    s = Standardizer.fit(np.array([[1.0, 2.0], [3.0, 2.0]]))
    again = Standardizer.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again.mean.tolist() == s.mean.tolist() and again.std.tolist() == s.std.tolist()
    assert again.constant == [1]
    with pytest.raises(ValueError, match="NaN/Inf"):
        Standardizer.fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="positive"):
        Standardizer([0.0], [0.0])
    with pytest.raises(ValueError, match="differ in length"):
        Standardizer([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="'mean' and 'std'"):
        Standardizer.from_dict({"mean": [0.0]})
