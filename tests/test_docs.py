"""The documentation site builds without a warning and renders in a real browser.

Builds the site as ``make docs`` does (into docs/_build/html), then opens the home page, one API
page and one tutorial in headless Chromium and checks what a reader would see: every image the
page shows is there (and is a real PNG, SVG, ...), formulas are typeset by MathJax, code is
highlighted by Pygments. Screenshots go to docs/_build/screenshots for review. Needs the docs
extra (``make docs-install``) and Chromium (Debian: ``apt-get install chromium``); skips with the
reason when either is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "docs" / "_build"
HTML = BUILD / "html"
SHOTS = BUILD / "screenshots"

#: page -> what it must show (beyond no missing image and highlighted code)
PAGES = {
    "index.html": {"math": False, "images": 0},
    "api/pyroflows.transforms.Coupling.html": {"math": True, "images": 0},
    "tutorials/01_density_estimation.html": {"math": False, "images": 1},
}


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Page(HTMLParser):
    """The <img> sources, MathJax containers, raw math spans and Pygments spans of a DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.mathjax = 0  # <mjx-container>: a formula MathJax typeset
        self.highlight_blocks = 0  # <div class="highlight">
        self.token_spans = 0  # Pygments token spans inside them
        self._depth: list[bool] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "img" and a.get("src"):
            self.images.append(a["src"] or "")
        if tag == "mjx-container":
            self.mathjax += 1
        if tag == "div" and "highlight" in classes:
            self.highlight_blocks += 1
        if tag == "span" and classes and any(self._depth) and classes[0] != "w":
            self.token_spans += 1
        if tag == "div":
            self._depth.append("highlight" in classes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._depth:
            self._depth.pop()


def _dump_dom(chromium: str, url: str) -> str:
    out = subprocess.run(
        [chromium, *_FLAGS, "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return out.stdout


def _screenshot(chromium: str, url: str, path: Path) -> None:
    subprocess.run(
        [chromium, *_FLAGS, "--virtual-time-budget=15000", "--window-size=1280,1600",
         f"--screenshot={path}", url],
        capture_output=True,
        timeout=180,
        check=True,
    )  # fmt: skip


_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
_MAGIC = {".png": b"\x89PNG", ".svg": b"<", ".jpg": b"\xff\xd8", ".jpeg": b"\xff\xd8"}


@pytest.fixture(scope="module")
def site() -> Path:
    for module in ("sphinx", "myst_nb", "furo", "sphinxarg"):
        pytest.importorskip(module, reason=f"needs the docs extra ({module}): make docs-install")
    if _chromium() is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium; or make docs-install)")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-E", "-W", "--keep-going", "-n", "-q"]
    done = subprocess.run(
        [*cmd, str(ROOT / "docs"), str(HTML)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    warnings = [line for line in done.stderr.splitlines() if re.search(r"(WARNING|ERROR):", line)]
    assert done.returncode == 0 and not warnings, "\n".join(warnings) or done.stderr[-3000:]
    SHOTS.mkdir(parents=True, exist_ok=True)
    return HTML


@pytest.mark.parametrize("page", sorted(PAGES))
def test_page_renders_in_chromium(site, page):
    chromium = _chromium()
    path = site / page
    assert path.is_file(), f"{page} was not built"
    url = path.as_uri()
    dom = _dump_dom(chromium, url)
    parsed = _Page()
    parsed.feed(dom)

    # every image is there and is an image
    local = [src for src in parsed.images if not urlparse(src).scheme]
    assert len(local) >= PAGES[page]["images"], f"{page}: expected an image, found {local}"
    for src in local:
        file = (path.parent / unquote(urlparse(src).path)).resolve()
        assert file.is_file(), f"{page}: image {src} is missing"
        magic = _MAGIC.get(file.suffix.lower())
        if magic:
            assert file.read_bytes().startswith(magic), f"{page}: {src} is not a {file.suffix}"
    remote = [src for src in parsed.images if urlparse(src).scheme in ("http", "https")]
    assert not remote, f"{page}: images from the network do not load offline: {remote}"

    # code is highlighted: Pygments wrapped tokens in spans
    assert parsed.highlight_blocks > 0, f"{page}: no code block"
    assert parsed.token_spans > 10, f"{page}: code blocks without Pygments token spans"

    # formulas were typeset by MathJax (served with the site), none left as raw TeX
    if PAGES[page]["math"]:
        assert parsed.mathjax > 0, f"{page}: no formula typeset (MathJax did not run)"
        raw = re.findall(r'<span class="math[^"]*">\\\(', dom)
        assert not raw, f"{page}: {len(raw)} formulas left as raw TeX"

    shot = SHOTS / (page.replace("/", "_").removesuffix(".html") + ".png")
    _screenshot(chromium, url, shot)
    assert shot.is_file() and shot.read_bytes().startswith(b"\x89PNG"), f"no screenshot {shot}"
