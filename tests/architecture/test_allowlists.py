"""Allowlists, not denylists: what the contract and the studio may import at all. import-linter's contracts
(pyproject.toml) forbid named packages; a package nobody thought to forbid (tokenizers in the contract, psutil in
the studio) would pass them. These tests read every import statement and refuse anything not on the list."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

# The contract is shared by both processes: the standard library, PyYAML and platformdirs, nothing else.
CONTRACT_ALLOWED = {"yaml", "platformdirs", "engine"}  # engine: engine.contract itself (checked below)
CONTRACT_LAZY = frozenset({"pyarrow"})  # the wizard's preview of a Parquet file, imported only when one is previewed
# The studio: Qt, its plots, numpy (their buffers), PyYAML, platformdirs and the engine's contract.
STUDIO_ALLOWED = {"PySide6", "pyqtgraph", "numpy", "yaml", "platformdirs", "engine", "studio", "shiboken6"}


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(module imported, whether inside a function (lazily), line) of every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, lazy, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, lazy, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


def _refused(package: str, allowed: set[str], lazy_allowed: frozenset[str] = frozenset()) -> list[str]:
    """Every import under ``package`` that is not on its allowlist (of the engine, only engine.contract is)."""
    problems = []
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        for module, lazy, line in _imports(path):
            top = module.split(".")[0]
            if top == "engine" and not module.startswith("engine.contract"):
                ok = False
            else:
                ok = top in STDLIB or top in allowed or (lazy and top in lazy_allowed)
            if not ok:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module}{' (even lazily)' if lazy else ''}")
    return problems


def test_the_contract_imports_only_the_standard_library_pyyaml_and_platformdirs():
    problems = _refused("engine.contract", CONTRACT_ALLOWED, CONTRACT_LAZY)
    assert not problems, "engine.contract may import only the standard library, PyYAML and platformdirs " \
                         "(pyarrow inside a function):\n" + "\n".join(problems)


def test_the_studio_imports_only_qt_its_plots_numpy_pyyaml_platformdirs_and_the_contract():
    problems = _refused("studio", STUDIO_ALLOWED)
    assert not problems, "the studio may import only PySide6, pyqtgraph, numpy, PyYAML, platformdirs and " \
                         "engine.contract:\n" + "\n".join(problems)


def test_the_allowlist_check_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The check itself: a contract module importing tokenizers (allowed by no denylist) is caught, lazily too."""
    package = tmp_path / "engine" / "contract"
    package.mkdir(parents=True)
    (package / "bad.py").write_text("import json\nimport yaml\n\n\ndef f():\n"
                                    "    import tokenizers\n    import pyarrow\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _refused("engine.contract", CONTRACT_ALLOWED, CONTRACT_LAZY) == [
        "engine/contract/bad.py:6: tokenizers (even lazily)"]
