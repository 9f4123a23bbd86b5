"""matplotlib (extra "plot") and scikit-learn (extra "data") are optional: pyroflows imports
without them, and what needs one says which extra to install."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch

import pyroflows as pf


def hide(monkeypatch: pytest.MonkeyPatch, top: str) -> None:
    """Make ``import top`` (and its submodules) fail, as if ``top`` were not installed."""
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, top, None)


def test_import_works_without_the_extras():
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = sys.modules['sklearn'] = None\n"
        "import pyroflows as pf, pyroflows.cli, pyroflows.datasets\n"
        "print(pf.MAF(2, num_layers=1, hidden_dims=(4,)).sample((3,)).shape)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'sklearn'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["torch.Size([3, 2])", "['matplotlib', 'sklearn']"]


def test_plotting_without_matplotlib_says_which_extra_to_install(monkeypatch):
    hide(monkeypatch, "matplotlib")
    monkeypatch.delitem(sys.modules, "pyroflows.plotting", raising=False)
    with pytest.raises(ImportError, match=r'pip install "pyroflows\[plot\]"'):
        importlib.import_module("pyroflows.plotting")


def test_save_image_grid_without_matplotlib_says_which_extra_to_install(monkeypatch, tmp_path):
    hide(monkeypatch, "matplotlib")
    with pytest.raises(ImportError, match=r'pip install "pyroflows\[plot\]"'):
        pf.save_image_grid(torch.rand(4, 1, 8, 8), tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()


def test_digits_without_scikit_learn_says_which_extra_to_install(monkeypatch):
    hide(monkeypatch, "sklearn")
    with pytest.raises(ImportError, match=r'scikit-learn.*pip install "pyroflows\[data\]"'):
        pf.datasets.digits("test")


def test_the_extras_are_declared_and_the_core_does_not_need_them():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    core = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    assert "matplotlib" not in core and "scikit-learn" not in core and "arviz" in core
    assert extras["plot"] == ["matplotlib>=3.6"] and extras["data"] == ["scikit-learn>=1.2"]
    assert "pyroflows[plot,data]" in extras["all"] and "pyroflows[all]" in extras["dev"]


def test_demo_without_scikit_learn_stops_before_any_work(monkeypatch, tmp_path):
    from pyroflows.demo import run_demo

    hide(monkeypatch, "sklearn")
    with pytest.raises(ImportError, match=r'pip install "pyroflows\[data\]"'):
        run_demo(tmp_path / "out", quick=True)
    assert not (tmp_path / "out").exists()
