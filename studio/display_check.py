"""Before Qt starts: is there a screen to open the window on, and does Qt's GUI library load? Qt itself aborts
with a core dump and a line about "platform plugins" in either case; a person gets one sentence instead.

The X11 check asks the dynamic loader (`ldd`) which libraries Qt's xcb platform plugin cannot find, rather than
probing a fixed list: which xcb libraries a Qt build needs changes between Qt releases, and a machine may miss
any of them (a first launch lacked libxcb-icccm4 and libxcb-keysyms1 while libxcb-cursor0 was installed)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

GUI_LIBRARIES = "libegl1 libgl1 libxkbcommon0 libfontconfig1 libglib2.0-0 libdbus-1-3"

# Debian names a library package after its soname (libxcb-icccm.so.4 → libxcb-icccm4, with a hyphen when the
# name ends in a digit: libxkbcommon-x11.so.0 → libxkbcommon-x11-0); these are the ones that break the rule.
_PACKAGE_EXCEPTIONS = {
    "libglib-2.0.so.0": "libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0", "libgobject-2.0.so.0": "libglib2.0-0",
    "libgio-2.0.so.0": "libglib2.0-0", "libGLX.so.0": "libglx0", "libGLdispatch.so.0": "libglvnd0",
    "libOpenGL.so.0": "libopengl0", "libstdc++.so.6": "libstdc++6", "libgcc_s.so.1": "libgcc-s1",
    "libz.so.1": "zlib1g", "libpcre2-8.so.0": "libpcre2-8-0", "libicuuc.so.72": "libicu72",
}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found", re.MULTILINE)
_SONAME = re.compile(r"^(lib.+?)\.so\.(\d+)")

LddRunner = Callable[[str], str]


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships a shared library, from its soname (libxcb-keysyms.so.1 → ...1)."""
    if soname in _PACKAGE_EXCEPTIONS:
        return _PACKAGE_EXCEPTIONS[soname]
    match = _SONAME.match(soname)
    if not match:
        return soname
    name, version = match.group(1).lower(), match.group(2)
    return f"{name}-{version}" if name[-1].isdigit() else f"{name}{version}"


def _run_ldd(path: str) -> str:
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""  # no ldd (musl, a stripped image): the check cannot tell and lets Qt try
    return out.stdout + out.stderr


def missing_libraries(paths: Iterable[str], ldd: LddRunner = _run_ldd) -> list[str]:
    """The sonames `ldd` reports as "not found" for any of the files, each once, in the order seen."""
    seen: dict[str, None] = {}
    for path in paths:
        for name in _NOT_FOUND.findall(ldd(path)):
            seen.setdefault(name, None)
    return list(seen)


def xcb_plugin_files() -> list[str]:
    """Qt's xcb platform plugin and the library it is built on, where this PySide6 install keeps them."""
    try:
        import PySide6  # the package only: no Qt library is loaded yet
    except ImportError:
        return []
    qt = Path(PySide6.__file__).parent / "Qt"
    files = [qt / "plugins" / "platforms" / "libqxcb.so", *sorted((qt / "lib").glob("libQt6XcbQpa.so*"))[:1]]
    return [str(path) for path in files if path.exists()]


def xcb_problem(files: list[str] | None = None, ldd: LddRunner = _run_ldd) -> str | None:
    """One sentence naming the packages Qt's X11 plugin lacks here, or None when it has everything it needs."""
    if ldd is _run_ldd and not shutil.which("ldd"):
        return None
    missing = missing_libraries(xcb_plugin_files() if files is None else files, ldd)
    if not missing:
        return None
    packages = list(dict.fromkeys(debian_package(name) for name in missing))
    return (f"Qt's X11 platform plugin cannot load: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing; install "
            f"{'it' if len(missing) == 1 else 'them'}, e.g. `sudo apt-get install {' '.join(packages)}` on "
            "Debian/Ubuntu (other systems: the packages that provide these files).")


def display_problem(environ: dict[str, str] | None = None, platform: str = sys.platform,
                    ldd: LddRunner = _run_ldd) -> str | None:
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
    if (chosen or "xcb").startswith("xcb") and env.get("DISPLAY"):
        return xcb_problem(ldd=ldd)
    return None
