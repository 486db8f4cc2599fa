"""The first-launch check names the Debian packages Qt's xcb plugin lacks, from what `ldd` reports, instead of
Qt's abort (exit 134). Fake ldd outputs cover the parsing; a real ldd run covers a library that is really absent."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from studio.display_check import debian_package, display_problem, missing_libraries, xcb_problem

LDD_TWO_MISSING = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxkbcommon-x11.so.0 => /lib/x86_64-linux-gnu/libxkbcommon-x11.so.0 (0x00007f)
"""


def test_sonames_map_to_debian_packages():
    assert debian_package("libxcb-icccm.so.4") == "libxcb-icccm4"
    assert debian_package("libxcb-keysyms.so.1") == "libxcb-keysyms1"
    assert debian_package("libxcb-cursor.so.0") == "libxcb-cursor0"
    assert debian_package("libxcb-render-util.so.0") == "libxcb-render-util0"
    assert debian_package("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert debian_package("libX11-xcb.so.1") == "libx11-xcb1"
    assert debian_package("libglib-2.0.so.0") == "libglib2.0-0"


def test_two_missing_libraries_are_named_with_their_packages_in_one_sentence():
    seen = []

    def fake_ldd(path):
        seen.append(path)
        return LDD_TWO_MISSING if path.endswith("libqxcb.so") else "\tlibxcb-icccm.so.4 => not found\n"

    problem = xcb_problem(["/x/libqxcb.so", "/x/libQt6XcbQpa.so.6"], ldd=fake_ldd)
    assert seen == ["/x/libqxcb.so", "/x/libQt6XcbQpa.so.6"]
    assert problem is not None and problem.count(".") >= 1 and "\n" not in problem
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1 are missing" in problem
    assert "`sudo apt-get install libxcb-icccm4 libxcb-keysyms1`" in problem
    assert "cursor" not in problem  # installed: not named


def test_nothing_missing_or_no_ldd_output_lets_qt_start():
    assert xcb_problem(["/x/libqxcb.so"], ldd=lambda path: "\tlibxcb.so.1 => /lib/libxcb.so.1 (0x1)\n") is None
    assert xcb_problem(["/x/libqxcb.so"], ldd=lambda path: "") is None


def test_display_problem_runs_the_xcb_check_only_for_x11():
    env = {"DISPLAY": ":0"}
    missing = display_problem(env, platform="linux", ldd=lambda path: LDD_TWO_MISSING)
    assert missing and "libxcb-keysyms1" in missing
    assert display_problem({**env, "QT_QPA_PLATFORM": "offscreen"}, platform="linux",
                           ldd=lambda path: LDD_TWO_MISSING) is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, platform="linux",
                           ldd=lambda path: LDD_TWO_MISSING) is None


def test_the_installed_plugin_needs_nothing_missing_here():
    # this machine runs the X11 end-to-end test, so the real check must pass on it
    assert display_problem({"DISPLAY": ":99"}, platform="linux") is None


@pytest.mark.skipif(not shutil.which("gcc") or not shutil.which("ldd"), reason="needs gcc and ldd")
def test_a_really_absent_library_is_found_by_the_real_ldd(tmp_path):
    # a plugin stand-in linked against a library that exists only in a folder named by LD_LIBRARY_PATH
    (tmp_path / "dep.c").write_text("int dep(void) { return 1; }\n")
    (tmp_path / "plugin.c").write_text("int dep(void); int plugin(void) { return dep(); }\n")
    libs = tmp_path / "libs"
    libs.mkdir()
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(libs / "libxcb-madeup.so.7"), "-Wl,-soname,libxcb-madeup.so.7",
                    str(tmp_path / "dep.c")], check=True)
    plugin = tmp_path / "libqxcb.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(plugin), str(tmp_path / "plugin.c"),
                    str(libs / "libxcb-madeup.so.7")], check=True)

    def ldd_with(path: str, library_path: str) -> str:
        env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": library_path}
        return subprocess.run(["ldd", path], capture_output=True, text=True, env=env, check=False).stdout

    assert missing_libraries([str(plugin)], ldd=lambda p: ldd_with(p, str(libs))) == []
    assert missing_libraries([str(plugin)], ldd=lambda p: ldd_with(p, "")) == ["libxcb-madeup.so.7"]
    problem = xcb_problem([str(plugin)], ldd=lambda p: ldd_with(p, ""))
    assert problem and "`sudo apt-get install libxcb-madeup7`" in problem
