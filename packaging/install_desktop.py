#!/usr/bin/env python3
"""Put Compression Studio into the desktop's application menu (freedesktop), or take it out again.

Standalone, standard library only, so it runs with any Python 3 whatever way the app was installed::

    python3 packaging/install_desktop.py install              # Exec= the compression-studio found on PATH
    python3 packaging/install_desktop.py install --exec /opt/compression-studio/compression-studio
    python3 packaging/install_desktop.py uninstall

Files go under ``$XDG_DATA_HOME`` (default ``~/.local/share``): ``applications/compression-studio.desktop`` and
``icons/hicolor/<size>/apps/compression-studio.{png,svg}``. Nothing outside that folder is touched; the menu
caches are refreshed when their tools exist (a missing tool is not an error: menus rescan on their own).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

APP_ID = "compression-studio"
HERE = Path(__file__).resolve().parent
DEFAULT_RESOURCES = HERE.parent / "resources" / "desktop"

log = logging.getLogger("install_desktop")


def data_home() -> Path:
    """``$XDG_DATA_HOME`` or ``~/.local/share`` (the XDG base directory spec's default)."""
    value = os.environ.get("XDG_DATA_HOME", "").strip()
    return Path(value).expanduser() if value and Path(value).is_absolute() else Path.home() / ".local" / "share"


def find_resources(explicit: str | None = None) -> Path:
    """The folder holding the .desktop template and icons: the repository's resources/desktop, or next to a
    frozen bundle (PyInstaller unpacks data under ``sys._MEIPASS``)."""
    candidates = [Path(explicit)] if explicit else []
    if hasattr(sys, "_MEIPASS"):
        candidates.append(Path(sys._MEIPASS) / "studio" / "resources" / "desktop")  # PyInstaller's data dir
    candidates.append(DEFAULT_RESOURCES)
    for folder in candidates:
        if (folder / f"{APP_ID}.desktop").is_file():
            return folder
    raise FileNotFoundError(f"no {APP_ID}.desktop in {', '.join(map(str, candidates))}")


def desktop_entry(template: str, exec_path: str) -> str:
    """The template with Exec/TryExec pointing at ``exec_path`` (quoted per the spec when it has spaces)."""
    quoted = f'"{exec_path}"' if any(c in exec_path for c in " \t\"'\\") else exec_path
    lines = []
    for line in template.splitlines():
        if line.startswith("Exec="):
            line = f"Exec={quoted}"
        elif line.startswith("TryExec="):
            line = f"TryExec={exec_path}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def planned_files(resources: Path, target: Path) -> list[tuple[Path, Path]]:
    """(source, destination) of every file an install writes."""
    pairs = [(resources / f"{APP_ID}.desktop", target / "applications" / f"{APP_ID}.desktop"),
             (resources / f"{APP_ID}.svg", target / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg")]
    for png in sorted((resources / "icons" / "hicolor").glob(f"*/apps/{APP_ID}.png")):
        size = png.parent.parent.name
        pairs.append((png, target / "icons" / "hicolor" / size / "apps" / f"{APP_ID}.png"))
    return pairs


def _refresh_caches(target: Path) -> None:
    """Best effort: desktops pick up new entries by themselves, these tools just make it immediate."""
    for argv in (["update-desktop-database", "-q", str(target / "applications")],
                 ["gtk-update-icon-cache", "-q", "-t", "-f", str(target / "icons" / "hicolor")]):
        if shutil.which(argv[0]):
            subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def install(exec_path: str | None = None, resources: str | None = None, target: Path | None = None) -> list[Path]:
    """Write the menu entry and icons; returns the written paths."""
    source_dir = find_resources(resources)
    target = target or data_home()
    exec_path = exec_path or shutil.which(APP_ID) or APP_ID
    written = []
    for src, dst in planned_files(source_dir, target):
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".desktop":
            dst.write_text(desktop_entry(src.read_text(encoding="utf-8"), exec_path), encoding="utf-8")
            dst.chmod(0o755)  # some desktops only trust executable launchers
        else:
            shutil.copyfile(src, dst)
        written.append(dst)
    _refresh_caches(target)
    return written


def uninstall(target: Path | None = None) -> list[Path]:
    """Remove what ``install`` wrote (found by name, so it works without the resources folder)."""
    target = target or data_home()
    removed = []
    candidates = [target / "applications" / f"{APP_ID}.desktop"]
    candidates += sorted((target / "icons" / "hicolor").glob(f"*/apps/{APP_ID}.*"))
    for path in candidates:
        if path.is_file():
            path.unlink()
            removed.append(path)
    _refresh_caches(target)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("install", help="add the menu entry and icons")
    p.add_argument("--exec", dest="exec_path", help="the program the menu entry starts (default: "
                   "compression-studio on PATH)")
    p.add_argument("--resources", help="folder with compression-studio.desktop and the icons")
    sub.add_parser("uninstall", help="remove the menu entry and icons")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = install(args.exec_path, args.resources) if args.action == "install" else uninstall()
    except FileNotFoundError as exc:
        log.error("error: %s", exc)
        return 2
    verb = "installed" if args.action == "install" else "removed"
    log.info("%s %d files under %s", verb, len(paths), data_home())
    if args.action == "install" and not shutil.which(APP_ID) and not args.exec_path:
        log.warning("note: compression-studio is not on PATH; pass --exec with its full path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
