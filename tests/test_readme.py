"""The Python snippets in README.md and docs/guide.md run as written (in order, in one namespace
per file)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


def test_readme_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    block = lines[lines.index("```") + 1 : lines.index("```") + 3]
    assert block[0].startswith("make demo") and block[1].startswith("make test")


@pytest.mark.parametrize(("doc", "min_blocks"), [("README.md", 4), ("docs/guide.md", 3)])
def test_python_snippets_run(doc, min_blocks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)
    assert len(blocks) >= min_blocks
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{doc}[python block {i}]", "exec"), namespace)
