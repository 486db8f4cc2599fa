"""Render the SVG icon in resources/desktop/ into the PNG sizes freedesktop menus and the bundle use.

Run once after changing the SVG (the PNGs are committed, so installing needs neither Qt nor this script)::

    QT_QPA_PLATFORM=offscreen python packaging/make_icons.py
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESKTOP = ROOT / "resources" / "desktop"
SVG = DESKTOP / "compression-studio.svg"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)

log = logging.getLogger("make_icons")


def png_path(size: int) -> Path:
    """Where the PNG of one size lives, mirroring the hicolor theme layout the installer copies."""
    return DESKTOP / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "compression-studio.png"


def render(svg: Path = SVG, sizes: tuple[int, ...] = SIZES) -> list[Path]:
    """Render ``svg`` at every size with QtSvg; returns the written files."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 - QImage painting needs it
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not a valid SVG")
    written = []
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        out = png_path(size)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not image.save(str(out), "PNG"):
            raise OSError(f"could not write {out}")
        written.append(out)
    return written


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in render():
        log.info("wrote %s", path.relative_to(ROOT))
