"""Throughput and memory of pf.fit on a memory-mapped table, with 1 and 2 processes.

Generates a (rows, cols) float32 table as a .npy file (in chunks, never whole in memory), then
times one epoch of

- ``stream``: ``pf.fit(flow, pf.datasets.streaming.open_npy(path), ...)`` in one process;
- ``ddp2``: the same with 2 processes (gloo, ``distributed=True``, per-process batch B/2, so the
  same global batch B);
- ``plain``: the whole table loaded into one tensor and a plain Adam loop over shuffled
  minibatches (no validation, no checks): the in-memory baseline.

Memory: peak anonymous resident memory (``RssAnon`` sampled every 50 steps and at the end,
from /proc/self/status) and peak total RSS (``VmHWM``, which also counts the memory map's file
pages that are resident: page cache, shared and reclaimable, not allocated by the process).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/scale.py --rows 10000000 --cols 8
    OMP_NUM_THREADS=1 python benchmarks/scale.py --rows 1000000 --modes stream,ddp2,plain
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Peak:
    def __init__(self) -> None:
        self.anon = status_kb("RssAnon")

    def __call__(self, step, history, flow) -> None:
        if step % 50 == 0:
            self.anon = max(self.anon, status_kb("RssAnon"))

    def mb(self) -> dict[str, float]:
        self.anon = max(self.anon, status_kb("RssAnon"))
        return {"peak_anon_mb": self.anon / 1024, "peak_rss_mb": status_kb("VmHWM") / 1024}


def make_table(path: Path, rows: int, cols: int, chunk: int = 1 << 20) -> None:
    if path.exists() and np.load(path, mmap_mode="r").shape == (rows, cols):
        return
    out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float32, shape=(rows, cols))
    g = np.random.default_rng(0)
    mix = g.normal(size=(cols, cols)) / np.sqrt(cols)
    for s in range(0, rows, chunk):
        z = g.normal(size=(min(chunk, rows - s), cols))
        out[s : s + len(z)] = np.tanh(z @ mix) + 0.3 * z
    out.flush()
    del out


def flow(cols: int):
    import pyroflows as pf

    torch.manual_seed(0)
    return pf.MAF(cols, num_layers=4, hidden_dims=(64, 64))


def run_stream(
    path: str, batch: int, steps: int | None, rank: int | None, world: int, port: int, q
) -> None:
    import pyroflows as pf
    from pyroflows.datasets.streaming import open_npy

    torch.set_num_threads(1)
    if rank is not None:
        os.environ.update(
            RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
    x = open_npy(path)
    f = flow(x.shape[1])
    peak = Peak()
    t0 = time.perf_counter()
    from pyroflows.datasets.streaming import array_chunks, scan_rows

    scan_rows(array_chunks(x), name=path)
    t_check = time.perf_counter() - t0
    opts = dict(batch_size=batch // world, lr=1e-3, seed=0, progress=False)
    opts |= dict(epochs=1) if steps is None else dict(steps=steps)
    t0 = time.perf_counter()
    h = pf.fit(
        f, x, val_fraction=0.001, check_data=False, callbacks=peak,
        distributed=rank is not None, **opts,
    )  # fmt: skip
    t_fit = time.perf_counter() - t0
    q.put(
        {
            "rank": rank or 0,
            "steps": h.steps,
            "epoch_s": t_fit,
            "check_s": t_check,
            "val_loss": h.val_loss[-1],
            **peak.mb(),
        }
    )
    if rank is not None:
        torch.distributed.destroy_process_group()


def run_plain(path: str, batch: int, limit: int | None, q) -> None:
    torch.set_num_threads(1)
    peak = Peak()
    t0 = time.perf_counter()
    x = torch.from_numpy(np.load(path))  # the whole table in memory
    t_load = time.perf_counter() - t0
    f = flow(x.shape[1])
    opt = torch.optim.Adam(f.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    steps = len(x) // batch if limit is None else limit
    for k in range(steps):
        xb = x[perm[k * batch : (k + 1) * batch]]
        loss = -f().log_prob(xb).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        peak(k, None, f)
    q.put({"steps": steps, "epoch_s": time.perf_counter() - t0, "load_s": t_load, **peak.mb()})


def launch(target, args_list) -> list[dict]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, q)) for a in args_list]
    for p in procs:
        p.start()
    out = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4096, help="global batch size")
    ap.add_argument("--steps", type=int, default=None, help="steps (default: one epoch)")
    ap.add_argument("--modes", default="stream,ddp2,plain")
    ap.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "pyroflows_scale"))
    a = ap.parse_args()
    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"table_{a.rows}x{a.cols}.npy"
    t0 = time.perf_counter()
    make_table(path, a.rows, a.cols)
    print(
        f"# table {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s"
    )
    results = {}
    for mode in a.modes.split(","):
        if mode == "stream":
            r = launch(run_stream, [(str(path), a.batch, a.steps, None, 1, 0)])
        elif mode == "ddp2":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            r = launch(run_stream, [(str(path), a.batch, a.steps, k, 2, port) for k in range(2)])
        elif mode == "plain":
            r = launch(run_plain, [(str(path), a.batch, a.steps)])
        else:
            raise SystemExit(f"unknown mode {mode}")
        r = sorted(r, key=lambda v: v.get("rank", 0))
        results[mode] = r
        rows_per_s = r[0]["steps"] * a.batch / max(v["epoch_s"] for v in r)
        peak = max(v["peak_anon_mb"] for v in r)
        print(
            f"{mode:7s} steps {r[0]['steps']:6d}  time {max(v['epoch_s'] for v in r):8.1f} s  "
            f"{rows_per_s:10.0f} rows/s  peak anon {peak:7.0f} MB/process  "
            f"peak rss {max(v['peak_rss_mb'] for v in r):7.0f} MB",
            flush=True,
        )
    print(json.dumps({"rows": a.rows, "cols": a.cols, "batch": a.batch, **results}))


if __name__ == "__main__":
    main()
