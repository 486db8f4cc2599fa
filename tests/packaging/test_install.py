"""What ``pipx install .`` / ``uv tool install .`` rely on: installing the project puts both commands in the
environment's bin folder and they start (checked with a plain ``pip install --prefix``, no dependencies fetched)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from engine import __version__

ROOT = Path(__file__).resolve().parents[2]


def _installed_here() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution("compression-studio")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_install_puts_both_commands_on_the_path(tmp_path):
    prefix = tmp_path / "prefix"
    installed_before = _installed_here()
    # Reuse this environment's setuptools when it has one (fast, offline); else pip fetches it to build.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    # --ignore-installed: without it pip first uninstalls the project from the environment running the tests
    # (the developer's editable install, and with it .venv/bin/compression-studio)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", *isolation,
                    "--disable-pip-version-check", "--prefix", str(prefix), str(ROOT)], check=True,
                   capture_output=True, timeout=300)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    assert (site / "engine" / "contract" / "spec.py").is_file() and (site / "studio" / "app.py").is_file()
    assert (site / "studio" / "resources" / "studio.qss").is_file()  # the top-level resources/, mapped
    env = {**os.environ, "PYTHONPATH": str(site), "PATH": f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    engine = subprocess.run(["compression-engine", "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert engine.returncode == 0 and engine.stdout.strip() == f"compression-engine {__version__}"
    studio = subprocess.run(["compression-studio", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert studio.returncode == 0 and "usage: compression-studio" in studio.stdout
    assert _installed_here() == installed_before  # the environment running the tests keeps its own install
    for script in ("compression-engine", "compression-studio"):
        first_line = (prefix / "bin" / script).read_text().splitlines()[0]
        assert first_line == f"#!{sys.executable}"  # the installing interpreter, as pipx/uv venvs get
