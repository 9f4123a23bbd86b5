"""Every tutorial notebook runs top to bottom in its shrunk smoke-test mode.

The code cells are executed in order in one namespace (no Jupyter kernel needed), with
``PYROFLOWS_SMOKE_TEST=1`` so each notebook uses a handful of steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "tutorials").glob("*.ipynb"))


def code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def test_there_are_tutorials():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs_in_smoke_mode(path, monkeypatch, tmp_path):
    monkeypatch.setenv("PYROFLOWS_SMOKE_TEST", "1")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__tutorial__"}
    for i, source in enumerate(code_cells(path)):
        try:
            exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message is the point
            raise AssertionError(f"{path.name}: code cell {i} failed: {exc!r}") from exc
    assert os.environ["PYROFLOWS_SMOKE_TEST"] == "1"
