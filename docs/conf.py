"""Sphinx configuration of the pyroflows site (``make docs``).

What is generated at build time (nothing of it is committed):

- ``api/``: one page per public name. ``api.md`` lists the modules; each module's page and the
  pages of its names come from autosummary, which reads the module's ``__all__``
  (``autosummary_ignore_module_all = False``), so a name added to ``__all__`` gets its page
  with no edit here.
- ``tutorials/``: the notebooks of the repository's ``tutorials/`` folder, copied here and
  executed by myst-nb in their smoke mode (``PYROFLOWS_SMOKE_TEST=1``, as in
  ``tests/test_tutorials.py``); a new notebook there is on the site with no edit here.

The build runs with ``-W --keep-going -n`` (``make docs``): every warning fails it, and every
cross-reference must resolve. The few targets that cannot resolve are listed in
``nitpick_ignore_regex`` below, each with its reason.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the checkout's pyroflows, whatever is installed

# The notebooks' kernels inherit this environment: smoke mode and one thread per process.
os.environ["PYROFLOWS_SMOKE_TEST"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

# What the tutorials show needs a display rule in the kernel: pyroflows.plotting returns plain
# matplotlib Figures (no pyplot, so no inline backend registers them), and save_image_grid
# returns the Path of a PNG. This startup file, in an IPython folder of the build's own, shows
# both as PNG images; it also drops tqdm's "IProgress not found" warning (no ipywidgets here).
_KERNEL_STARTUP = """\
import pathlib
import warnings

from IPython import get_ipython
from IPython.core.pylabtools import select_figure_formats

warnings.filterwarnings("ignore", message="IProgress not found")
_ip = get_ipython()
select_figure_formats(_ip, {"png"}, bbox_inches="tight")
_ip.display_formatter.formatters["image/png"].for_type(
    pathlib.PurePath,
    lambda p: pathlib.Path(p).read_bytes() if str(p).endswith(".png") and pathlib.Path(p).is_file() else None,
)
"""
_ipython_dir = Path(tempfile.mkdtemp(prefix="pyroflows-docs-ipython-"))
(_ipython_dir / "profile_default" / "startup").mkdir(parents=True)
(_ipython_dir / "profile_default" / "startup" / "00-pyroflows-docs.py").write_text(_KERNEL_STARTUP)
# ipykernel warns on every start that its TCP transport is not encrypted (local kernels only)
(_ipython_dir / "profile_default" / "ipython_kernel_config.py").write_text(
    'c.IPKernelApp.log_level = "ERROR"\n'
)
os.environ["IPYTHONDIR"] = str(_ipython_dir)

from sphinx.errors import PycodeError  # noqa: E402
from sphinx.pycode import ModuleAnalyzer  # noqa: E402

import pyroflows  # noqa: E402

project = "pyroflows"
author = "pyroflows developers"
copyright = "pyroflows developers"
release = version = pyroflows.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 served with the site: no CDN, works offline
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "myst_nb",  # Markdown (myst-parser) and notebooks
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

html_theme = "furo"
html_title = f"pyroflows {release}"
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# --- API reference ------------------------------------------------------------------------------
# The modules with an API page are those listed in api.rst (a new subpackage is one line there);
# a new public name needs no edit: it is read from its module's ``__all__``.
API_MODULES = re.findall(r"^   (pyroflows[\w.]*)$", (DOCS / "api.rst").read_text(), re.M)


def _api_tables() -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    """Each API module's ``__all__`` sorted into kinds, and the aliases: a subpackage name that
    is the very object ``pyroflows`` exports gets a short page pointing to the top-level one
    (documenting it twice would describe one object twice)."""
    top = {id(getattr(pyroflows, n)): f"pyroflows.{n}" for n in pyroflows.__all__}
    tables, aliases = {}, {}
    for modname in API_MODULES:
        mod = importlib.import_module(modname)
        kinds: dict[str, list[str]] = {
            "modules": [],
            "classes": [],
            "exceptions": [],
            "functions": [],
            "data": [],
        }
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.ismodule(obj):
                kinds["modules"].append(name)
                continue
            if inspect.isclass(obj):
                kind = "exceptions" if issubclass(obj, BaseException) else "classes"
            elif callable(obj):
                kind = "functions"
            else:
                kind = "data"
            kinds[kind].append(name)
            full = f"{modname}.{name}"
            if kind != "data" and modname != "pyroflows" and top.get(id(obj), full) != full:
                aliases[full] = top[id(obj)]
        tables[modname] = kinds
    return tables, aliases


def _data_docs() -> dict[str, str]:
    """``#:`` doc comments of the constants in the API modules, read from the module that
    defines each one (autodoc would look in the package that re-exports it and, finding none,
    show the docstring of ``dict``)."""
    comments = {}
    for modname in sorted(m for m in sys.modules if m.startswith("pyroflows")):
        try:
            found = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except PycodeError:
            continue
        for (scope, name), lines in found.items():
            if not scope and hasattr(sys.modules[modname], name):
                comments[id(getattr(sys.modules[modname], name))] = " ".join(lines).strip()
    docs = {}
    for modname, kinds in API.items():
        for name in kinds["data"]:
            obj = getattr(sys.modules[modname], name)
            docs[f"{modname}.{name}"] = comments.get(id(obj), "")
    return docs


API, API_ALIASES = _api_tables()
API_DATA_DOCS = _data_docs()
autosummary_generate = True
autosummary_context = {"api": API, "aliases": API_ALIASES, "data_docs": API_DATA_DOCS}
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "mixed"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# --- Markdown and notebooks ---------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"  # the notebooks are committed without outputs
nb_execution_timeout = 600
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_in_temp = True  # files a tutorial writes do not land in docs/
nb_merge_streams = True

# --- cross-references -------------------------------------------------------------------------
# nitpicky: every reference must resolve. Docstrings name objects relative to the module that
# defines them (``:func:`fit``` in pyroflows/infer/svi.py); the site shows most of them under
# ``pyroflows`` or a subpackage instead, so ``_resolve_pyroflows`` looks a reference that did not
# resolve up among pyroflows' own documented names (one match, or the same Python object).
nitpicky = True
# What cannot resolve, and why. There is no intersphinx: CI reaches only the package registries,
# not the projects' sites, so references into other projects cannot resolve. Anything else of
# pyroflows' own that does not resolve still fails the build.
nitpick_ignore_regex = [
    # third-party packages: their classes in signatures, type hints and base classes
    (r"py:.*", r"(torch|pyro|dist|numpy|np|arviz|matplotlib)(\..*)?"),
    # short names of third-party classes in type hints (from torch import Tensor, nn)
    (r"py:class", r"(Tensor|Transform|Module|nn\.Module)"),
    # the standard library (no intersphinx to docs.python.org either)
    (r"py:class", r"(collections\.abc|pathlib|os)\.\w+"),
    (r"py:class", r"Path"),  # pathlib.Path as written in type hints
    # private helpers of pyroflows shown as base classes or in type hints; no page by design
    (r"py:.*", r"pyroflows(\.\w+)*\._\w+"),
    # a type alias in a signature (autodoc prints the alias name, which has no page)
    (r"py:class", r"FlowSpec"),
    # a module named in prose that is internal (no API page)
    (r"py:mod", r"pyroflows\.infer\.engine"),
    # Standardizer.constant: an instance attribute set in __init__ without a doc comment
    (r"py:attr", r"constant"),
    # pyroflows.datasets.targets.log_density, named by energy(), is not exported by datasets
    (r"py:func", r"log_density"),
    # napoleon reads "The settings in use now: ..." in a property docstring as "type: text"
    (r"py:class", r"The settings in use now"),
]


#: Python roles -> the kinds of object they may name (``obj`` and ``any`` name every kind).
_ROLE_KINDS = {
    "func": {"function", "method", "classmethod", "staticmethod"},
    "meth": {"method", "classmethod", "staticmethod", "property"},
    "class": {"class", "exception"},
    "exc": {"exception", "class"},
    "attr": {"attribute", "property", "data"},
    "data": {"data", "attribute"},
    "mod": {"module"},
}


def _resolve_pyroflows(app, env, node, contnode):
    """Resolve a Python reference that Sphinx could not resolve, among pyroflows' documented
    names (alias pages and canonical paths do not count), of the kind its role names: the one
    name that ends with the target (``fit`` -> ``pyroflows.fit``), else the one of those in the
    module or class the reference is written in; for a full path through a defining module
    (``pyroflows.transforms.continuous.ContinuousFlow``), the documented name of the same object.
    Anything else is left to nitpicky (a warning, so a failed build)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    domain = env.get_domain("py")
    kinds = _ROLE_KINDS.get(node["reftype"])
    names = [
        n
        for n, entry in domain.objects.items()
        if n.startswith("pyroflows.")
        and n not in API_ALIASES
        and not entry.aliased
        and (kinds is None or entry.objtype in kinds)
    ]
    found = [n for n in names if n.endswith("." + target)]
    if len(found) > 1:  # prefer the role's own kind (a function to a method for :func:)
        primary = {"func": "function", "meth": "method", "class": "class"}.get(node["reftype"])
        found = [n for n in found if domain.objects[n].objtype == primary] or found
    if len(found) > 1:  # prefer the module/class the reference is written in
        scope = ".".join(p for p in (node.get("py:module"), node.get("py:class")) if p)
        found = [n for n in found if scope and n.startswith(scope + ".")] or found
    if not found and target.startswith("pyroflows."):
        obj = _import_path(target)
        if obj is not None:
            found = [n for n in names if _import_path(n) is obj]
    if len(found) != 1:
        return None
    ref = domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], found[0], node, contnode
    )
    if ref is None:  # the role does not match the kind (:func: naming a class): any kind
        hits = domain.resolve_any_xref(env, node["refdoc"], app.builder, found[0], node, contnode)
        ref = hits[0][1] if hits else None
    return ref


def _import_path(path: str):
    """The object a dotted path names (a module, then attributes), or None."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


# --- generated sources -------------------------------------------------------------------------
# Stub pages of names since removed from an __all__ must not survive into the next build.
shutil.rmtree(DOCS / "api", ignore_errors=True)


def _copy_tutorials() -> None:
    """Copy the repository's notebooks into docs/tutorials (the source tree Sphinx reads)."""
    out = DOCS / "tutorials"
    out.mkdir(exist_ok=True)
    wanted = {p.name for p in (ROOT / "tutorials").glob("*.ipynb")}
    for stale in out.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name in sorted(wanted):
        src, dst = ROOT / "tutorials" / name, out / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


_copy_tutorials()


_MEMBER_REF = re.compile(r":(meth|attr):`(\w+)`")


def _process_docstring(app, what, name, obj, options, lines):
    """A constant's page and summary show its ``#:`` comment, not the docstring of its type. In
    a class docstring, ``:meth:`x``` names the class's own member: written out in full, it
    resolves in the summary tables too (they are on the module's page, outside the class)."""
    if what == "data" and name in API_DATA_DOCS:
        lines[:] = [API_DATA_DOCS[name], ""] if API_DATA_DOCS[name] else []
    if what == "class":
        for i, line in enumerate(lines):
            lines[i] = _MEMBER_REF.sub(
                lambda m: f":{m[1]}:`~{name}.{m[2]}`" if hasattr(obj, m[2]) else m[0], line
            )


def setup(app):
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("build-finished", lambda app, exc: shutil.rmtree(_ipython_dir, ignore_errors=True))
    app.connect("missing-reference", _resolve_pyroflows)
