"""Streamed data sources of pf.fit: memory-mapped .npy, Datasets, DataLoaders, CSV chunks."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import pyroflows as pf
from pyroflows.datasets.streaming import ArrayRows, CsvRows, csv_chunks, csv_to_npy, open_npy


def _fit(data, **kw):
    torch.manual_seed(0)
    flow = pf.MAF(3, num_layers=2, hidden_dims=(8,))
    opts = dict(steps=25, batch_size=32, seed=1, progress=False) | kw
    return flow, pf.fit(flow, data, **opts)


def _same(a, b):
    return max(
        (p - q).abs().max().item()
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.fixture
def table(tmp_path):
    x = np.random.default_rng(0).normal(size=(300, 3))
    path = tmp_path / "x.npy"
    np.save(path, x)
    return x, path


def test_memmap_fit_equals_in_memory_fit(table):
    x, path = table
    mm = open_npy(path)
    assert isinstance(mm, np.memmap)
    f1, h1 = _fit(torch.from_numpy(x))
    f2, h2 = _fit(mm)
    f3, h3 = _fit(ArrayRows(mm))  # a map-style Dataset over the memory map
    assert _same(f1, f2) < 1e-12 and _same(f1, f3) < 1e-12
    assert h1.val_loss == h2.val_loss == h3.val_loss and h1.train_loss == h2.train_loss


def test_conditional_dataset_of_pairs_equals_in_memory(tmp_path):
    g = np.random.default_rng(1)
    x, c = g.normal(size=(200, 2)), g.normal(size=(200, 1))

    def run(data, **kw):
        torch.manual_seed(0)
        f = pf.MAF(2, context_dim=1, num_layers=1, hidden_dims=(8,))
        pf.fit(f, data, steps=10, batch_size=16, seed=3, progress=False, **kw)
        return f

    a = run(torch.from_numpy(x), context=torch.from_numpy(c))
    b = run(ArrayRows(x, c))
    assert _same(a, b) < 1e-12


def test_bad_row_of_streamed_file_is_named(table):
    x, path = table
    x = x.copy()
    x[217, 1] = np.nan
    np.save(path, x)
    with pytest.raises(ValueError, match=r"1 row with NaN/Inf \(row 217\)"):
        _fit(open_npy(path))


def test_csv_chunks_bad_row_and_conversion(tmp_path):
    path = tmp_path / "t.csv"
    rows = ["a,b"] + [f"{i},{2 * i}" for i in range(10)]
    rows[8] = "7,oops"  # data row 7 (from 0, after the header)
    path.write_text("\n".join(rows) + "\n")
    chunks = list(csv_chunks(path, chunk_rows=4))
    assert [s for s, _ in chunks] == [0, 4, 8] and chunks[1][1].shape == (4, 2)
    with pytest.raises(ValueError, match=r"row 7\)"):
        csv_to_npy(path, tmp_path / "t.npy", chunk_rows=4)
    rows[8] = "7,14"
    path.write_text("\n".join(rows) + "\n")
    mm = csv_to_npy(path, tmp_path / "t.npy", chunk_rows=4)
    assert isinstance(mm, np.memmap) and mm[:, 1].tolist() == [2.0 * i for i in range(10)]
    assert len(list(CsvRows(path, chunk_rows=3))) == 10


def test_dataloader_and_iterable_sources(table):
    x, _ = table
    t = torch.from_numpy(x)
    loader = DataLoader(TensorDataset(t), batch_size=30, shuffle=False)
    flow, h = _fit(loader, val_data=t[:50])
    assert h.steps == 25 and len(h.val_loss) > 0 and np.isfinite(h.best_val_loss)
    # an iterable's batches in order: the same as the loader above
    from torch.utils.data import IterableDataset

    class Rows(IterableDataset):
        def __iter__(self):
            yield from t

    f2, _ = _fit(Rows(), batch_size=30, val_data=t[:50])
    assert _same(flow, f2) < 1e-12
    with pytest.raises(ValueError, match="no length"):
        _fit(Rows(), steps=None, epochs=1)


def test_cli_fit_streams_a_npy_file(tmp_path, capsys, table, monkeypatch):
    from pyroflows import cli

    x, path = table
    model = tmp_path / "m.pt"
    argv = ["fit", path, "--out", model, "--steps", "20", "--no-progress", "--stream"]
    loaded = []
    monkeypatch.setattr(cli, "_load_finite_table", lambda p: loaded.append(p))  # never called
    assert cli.main([str(a) for a in argv]) == 0
    assert not loaded and "fitted" in capsys.readouterr().out
    flow = pf.load(model)
    assert flow.log_prob(torch.from_numpy(x[:5]).float()).isfinite().all()
    bad = x.copy()
    bad[123, 0] = np.inf
    np.save(path, bad)
    assert cli.main([str(a) for a in argv]) != 0
    assert "(row 123)" in capsys.readouterr().err


def test_dataset_without_getitems_of_rows_and_of_pairs():
    g = np.random.default_rng(2)
    x, c = torch.from_numpy(g.normal(size=(120, 2))), torch.from_numpy(g.normal(size=(120, 1)))

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x[i]

    def run(data, **kw):
        torch.manual_seed(0)
        f = pf.MAF(2, context_dim=kw.pop("cdim", 0), num_layers=1, hidden_dims=(8,))
        pf.fit(f, data, steps=6, batch_size=16, seed=3, progress=False, **kw)
        return f

    assert _same(run(x), run(Rows())) < 1e-12
    pairs = TensorDataset(x, c)  # items are (row, context) pairs
    assert _same(run(x, context=c, cdim=1), run(pairs, cdim=1)) < 1e-12


def test_streamed_val_data_is_checked(table, tmp_path):
    x, path = table
    bad = x[:50].copy()
    bad[7, 2] = np.nan
    np.save(tmp_path / "val.npy", bad)
    with pytest.raises(ValueError, match=r"val_data has 1 row with NaN/Inf \(row 7\)"):
        _fit(open_npy(path), val_data=open_npy(tmp_path / "val.npy"))
    with pytest.raises(ValueError, match=r"val_data has 1 row with NaN/Inf \(row 7\)"):
        _fit(open_npy(path), val_data=bad)
