"""The architecture's rules, checked: import-linter's contracts (pyproject.toml), a recipe for every stage kind,
every package listed for the wheel, and the top-level resources/ shipped inside it."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        lint = shutil.which("lint-imports")
    assert lint, "import-linter is part of the [test] extra: pip install -e '.[test]'"
    out = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert f"{len(contracts['contracts'])} kept, 0 broken" in out.stdout


def test_every_stage_kind_has_a_recipe():
    from engine.contract.stage_kinds import STAGE_KIND_TABLE
    from engine.recipes import recipe_for

    for kind, row in STAGE_KIND_TABLE.items():
        assert callable(recipe_for(kind).run_stage), kind
        assert recipe_for(kind).__name__ == f"engine.recipes.{row.recipe}"
    with pytest.raises(KeyError):
        recipe_for("no-such-kind")


def _listed_packages() -> set[str]:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_is_listed_for_the_wheel():
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("engine", "studio")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found | {"studio.resources"} == _listed_packages()


def test_the_wheel_ships_the_top_level_resources(tmp_path):
    source = tmp_path / "source"  # a copy, so that the build leaves no build/ folder in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "engine", "studio", "resources"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("compression_studio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for resource in ("studio/resources/studio.qss", "studio/resources/desktop/compression-studio.desktop",
                     "studio/resources/desktop/compression-studio.svg",
                     "studio/resources/desktop/icons/hicolor/256x256/apps/compression-studio.png"):
        assert resource in names, resource
    assert "engine/contract/spec.py" in names and "studio/model/run_state.py" in names
    assert not any(n.startswith(("tests/", "tools/", "bench/")) for n in names)
