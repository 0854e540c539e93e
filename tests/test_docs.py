"""The code in the README and in docs/ runs as written, and the lists in them match the registries.

Each README ```python block runs alone (a reader copies one snippet); each docs/ page's
blocks run in order, in one fresh interpreter per page, from the repository root (so a
page may import the tests it shows). Blocks fenced as "```python skip-run" are examples
that need what a test machine lacks (a GPU).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def run(code: str, where: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{where}: its code failed:\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_each_readme_block_runs_alone(index):
    run(python_blocks(README)[index], f"README.md, python block {index + 1}")


@pytest.mark.parametrize("page", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_page_runs(page):
    run("\n\n".join(python_blocks(page)), page.name)


def table(page: Path, header: str) -> list[list[str]]:
    """The rows (cells as text) of the markdown table whose first header cell is `header`."""
    lines = page.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\|\s*{header}\s*\|", line))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def library_entries(registry) -> dict:
    """The registry's entries that recur itself defines (tests register tasks of their own)."""
    return {name: entry for name, entry in registry.items() if entry.__module__.startswith("recur.")}


def test_training_guide_tables_list_every_recipe_and_task():
    from recur.recipes import RECIPES
    from recur.tasks import TASKS

    recipes, tasks = library_entries(RECIPES), library_entries(TASKS)
    page = ROOT / "docs" / "training.md"
    listed = [name for row in table(page, "recipe") for name in names(row[0])]
    assert sorted(listed) == sorted(recipes), f"docs/training.md's recipe table: {sorted(listed)}"
    rows = {names(row[0])[0]: row for row in table(page, "task")}
    assert sorted(rows) == sorted(tasks), f"docs/training.md's task table: {sorted(rows)}"
    for name, row in rows.items():
        # the headline metric is the one runs select on
        assert names(row[2])[0] == tasks[name].metric, f"docs/training.md: task {name} says {row[2]}"


def test_readme_names_every_task():
    from recur.tasks import TASKS

    tasks = library_entries(TASKS)
    paragraph = next(p for p in README.read_text().split("\n\n") if "Tasks:" in p)
    missing = sorted(set(tasks) - set(names(paragraph.split("Tasks:", 1)[1])))
    assert not missing, f"README.md's task list lacks {missing}"
