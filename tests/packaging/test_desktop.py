"""The freedesktop menu entry: the .desktop file validates, and install/uninstall write and remove exactly the
entry and icons under ``$XDG_DATA_HOME``."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "packaging" / "install_desktop.py"
DESKTOP = ROOT / "resources" / "desktop" / "compression-studio.desktop"


def _validate(path: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("desktop-file-validate")
    if not tool:  # an optional system tool: a visible skip on a bare machine; .ci/run installs it
        pytest.skip("needs desktop-file-validate: apt-get install desktop-file-utils")
    return subprocess.run([tool, str(path)], capture_output=True, text=True)


def _script(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_DATA_HOME": str(home)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_desktop_file_validates():
    result = _validate(DESKTOP)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in (result.stdout + result.stderr).lower()


def test_every_icon_size_is_a_png_of_that_size():
    pngs = sorted((ROOT / "resources" / "desktop" / "icons" / "hicolor").glob("*/apps/compression-studio.png"))
    assert len(pngs) >= 6
    for png in pngs:
        header = png.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
        assert f"{width}x{height}" == png.parent.parent.name


def test_install_then_uninstall(tmp_path):
    exe = tmp_path / "bin dir" / "compression-studio"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    result = _script("install", "--exec", str(exe), home=tmp_path / "share")
    assert result.returncode == 0, result.stderr
    entry = tmp_path / "share" / "applications" / "compression-studio.desktop"
    text = entry.read_text()
    assert f'Exec="{exe}"' in text and f"TryExec={exe}" in text  # a path with a space is quoted in Exec
    check = _validate(entry)
    assert check.returncode == 0, check.stdout + check.stderr
    icons = sorted((tmp_path / "share" / "icons" / "hicolor").glob("*/apps/compression-studio.*"))
    assert {p.parent.parent.name for p in icons} >= {"scalable", "48x48", "256x256"}
    result = _script("uninstall", home=tmp_path / "share")
    assert result.returncode == 0, result.stderr
    assert not entry.exists()
    assert not list((tmp_path / "share").rglob("compression-studio.*"))
