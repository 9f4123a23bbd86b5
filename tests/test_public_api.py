"""Every public name is documented: what a module's ``__all__`` exports has an API page (docs/api.rst
reads ``__all__``), so each class and function there shows a checked example, each constant a
``#:`` doc comment, and each module a docstring. The examples themselves run as doctests in the
default test run (``--doctest-modules`` over ``pyroflows/``)."""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import pyroflows

ROOT = Path(__file__).resolve().parent.parent


def _modules() -> list[ModuleType]:
    names = ["pyroflows"] + [
        m.name for m in pkgutil.walk_packages(pyroflows.__path__, "pyroflows.")
    ]
    return [importlib.import_module(n) for n in names]


MODULES = _modules()


def _public() -> list[tuple[str, str, object]]:
    """``(module, name, object)`` for every name of every module's ``__all__``."""
    return [(m.__name__, n, getattr(m, n)) for m in MODULES for n in getattr(m, "__all__", [])]


def _kind(obj: object) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj) or callable(obj):
        return "callable"
    return "constant"


def _checked_example(doc: str | None) -> bool:
    """Whether ``doc`` holds a doctest example with expected output (not only statements)."""
    examples = doctest.DocTestParser().get_examples(doc or "")
    return any(ex.want.strip() for ex in examples)


def _doc_comments() -> set[tuple[str, str]]:
    """``(module, name)`` of the module-level assignments with a ``#:`` comment right above."""
    found = set()
    for mod in MODULES:
        path = getattr(mod, "__file__", None)
        if not path:
            continue
        lines = Path(path).read_text().splitlines()
        for node in ast.parse("\n".join(lines)).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
            elif isinstance(node, ast.AnnAssign):
                target = node.target
            else:
                continue
            above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
            if isinstance(target, ast.Name) and above.startswith("#:"):
                found.add((mod.__name__, target.id))
    return found


def test_every_public_class_and_function_has_a_checked_example():
    missing = sorted(
        f"{mod}.{name}"
        for mod, name, obj in _public()
        if _kind(obj) == "callable" and not _checked_example(obj.__doc__)
    )
    assert not missing, (
        f"{len(missing)} public names lack a docstring example with checked output (a '>>>' "
        "line and what it prints; Google style, under 'Example:'). Add one, or, for an internal "
        "helper no user calls, take it out of its module's __all__: " + ", ".join(missing)
    )


def test_every_public_constant_has_a_doc_comment():
    # a re-exported constant counts as documented where it is defined (the same object)
    documented = [getattr(importlib.import_module(m), n) for m, n in _doc_comments()]
    missing = sorted(
        f"{mod}.{name}"
        for mod, name, obj in _public()
        if _kind(obj) == "constant" and not any(obj is d for d in documented)
    )
    assert not missing, (
        "public constants without a '#:' doc comment on the line above their assignment (the "
        "API page shows that comment): " + ", ".join(missing)
    )


def test_every_public_module_has_a_docstring():
    missing = sorted(
        f"{mod}.{name}"
        for mod, name, obj in _public()
        if _kind(obj) == "module" and not (obj.__doc__ or "").strip()
    )
    assert not missing, "public modules without a docstring: " + ", ".join(missing)


def test_the_checks_see_what_they_check():
    """The rules above judge real cases: an example without output, a constant without a
    comment, and the names every rule covers are there to be judged."""
    assert not _checked_example(">>> x = 1\n")
    assert _checked_example("Example:\n    >>> 1 + 1\n    2\n")
    kinds = {_kind(obj) for _, _, obj in _public()}
    assert kinds == {"module", "callable", "constant"}
    assert ("pyroflows.flows.base", "FLOWS") in _doc_comments()
    assert ("pyroflows.transforms.base", "_VALIDATION") not in _doc_comments()


def test_the_examples_run_in_the_default_test_run():
    tomllib = pytest.importorskip("tomllib")
    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in opts["addopts"].split()
    assert "pyroflows" in opts["testpaths"]
    make = (ROOT / "Makefile").read_text()
    test_cmd = re.search(r"^test:.*\n\t(.*)$", make, re.M)
    assert test_cmd and "pytest" in test_cmd[1] and "-p no:doctest" not in test_cmd[1]
