"""Before Qt starts: is there a screen to open the window on, and does Qt's GUI library load? Qt itself aborts
with a core dump and a line about "platform plugins" in either case; a person gets one sentence instead."""
from __future__ import annotations

import ctypes.util
import os
import sys

GUI_LIBRARIES = "libegl1 libgl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3"
XCB_LIBRARIES = "libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0"


def display_problem(environ: dict[str, str] | None = None, platform: str = sys.platform) -> str | None:
    """A sentence saying why the window cannot open here and what to do, or None when it can."""
    env = os.environ if environ is None else environ
    if not platform.startswith("linux"):
        return None
    chosen = env.get("QT_QPA_PLATFORM", "")
    if not chosen and not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("no display to open the window on (DISPLAY and WAYLAND_DISPLAY are unset): start the studio from a "
                "desktop session or `ssh -X`, or under a virtual display with `xvfb-run compression-studio`; the "
                "engine needs no display (`compression-engine demo`).")
    try:
        from PySide6 import QtGui  # noqa: F401 - loads libEGL/libGL, fontconfig, xkbcommon
    except ImportError as exc:
        return (f"Qt's GUI library does not load ({exc}); install the system libraries it needs, e.g. "
                f"`sudo apt-get install {GUI_LIBRARIES}` on Debian/Ubuntu.")
    if (chosen or "xcb").startswith("xcb") and env.get("DISPLAY") and not ctypes.util.find_library("xcb-cursor"):
        return ("Qt's X11 platform plugin needs libxcb-cursor (Qt ≥ 6.5); install it, e.g. "
                f"`sudo apt-get install {XCB_LIBRARIES}` on Debian/Ubuntu.")
    return None
