"""The code in the README and in docs/ runs as written.

Each page's ```python blocks run in order, in one fresh interpreter per page, from the
repository root (so a page may import the tests it shows). Blocks fenced as
"```python skip-run" are examples that need what a test machine lacks (a GPU).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_page_runs(page):
    code = "\n\n".join(python_blocks(page))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{page.name}: its code failed:\n{done.stderr[-3000:]}"
