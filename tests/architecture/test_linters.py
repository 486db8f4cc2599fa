"""The linters CI runs, as tests (so the README's test command runs them): ruff with the project's rule set and
mypy on the contract (both configured in pyproject.toml), and every ``# noqa`` saying why."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*))?(?P<why>.*)$")


def _tool(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    tool = str(found) if found.exists() else shutil.which(name)
    assert tool, f"{name} is part of the [test] extra: pip install -e '.[test]'"
    return tool


def test_ruff_passes():
    out = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_mypy_passes_on_the_contract(tmp_path):
    out = subprocess.run([_tool("mypy"), "--cache-dir", str(tmp_path / "mypy")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and "Success" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]


def _explained_above(lines: list[str], index: int, codes: str) -> bool:
    """A comment line naming one of ``codes`` above ``lines[index]``, before the block's first blank line."""
    for line in reversed(lines[:index]):
        if not line.strip():
            return False
        if line.strip().startswith("#") and any(code.strip() in line for code in codes.split(",")):
            return True
    return False


def test_every_noqa_names_its_codes_and_says_why():
    """A suppression without a reason is a question for the next reader; ruff's RUF100 already refuses stale ones.
    The reason follows the codes on the line, or stands in a comment above it in the same block."""
    unexplained = []
    for path in sorted(p for top in ("engine", "studio", "tests", "tools", "bench", "packaging")
                       for p in (ROOT / top).rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            match = NOQA.search(line)
            if not match or path.name == "test_linters.py":  # this file speaks of noqa, it has none
                continue
            why = match["why"].strip(" -:–—()")
            if not match["codes"] or not (why or _explained_above(lines, number - 1, match["codes"])):
                unexplained.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not unexplained, "noqa without a code or a reason:\n" + "\n".join(unexplained)
