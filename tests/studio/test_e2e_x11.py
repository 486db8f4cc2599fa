"""End to end under a real X server, as a person uses the studio: real key presses and mouse clicks (xdotool) on
the real app (``python -m studio.app`` on the xcb platform) driving the real engine.

Typing into the wizard; a quick demo from the start page; closing the app with "Leave running" (the engine
must live on, nobody reading its pipes, into its next stage); reopening it (the monitor follows the run again,
its curves complete from the first step); killing the engine with SIGKILL mid-run; resuming with the monitor's
Resume button until the run finishes. The app reports what it shows through ``$COMPRESSION_STUDIO_STATE_FILE``
(studio/debug_state.py); screenshots (``import -window root``) are left in the test's temporary folder for a
person to look at.

Needs Xvfb and xdotool (``apt-get install xvfb xdotool``; imagemagick for the screenshots); skipped, saying so,
without them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)
SCREEN = (1280, 900)


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool}: apt-get install {package}")


class Desktop:
    """An Xvfb display, xdotool on it, and the studio started on it with a private data folder."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.state_file = tmp / "state.json"
        screen = f"{SCREEN[0]}x{SCREEN[1]}x24"
        self.xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-screen", "0", screen, "-nolisten", "tcp"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.display = ":" + self.xvfb.stdout.readline().decode().strip()
        self.app: subprocess.Popen | None = None
        self.shots = 0

    def env(self) -> dict:
        return {**os.environ, "DISPLAY": self.display, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(REPO),
                "COMPRESSION_STUDIO_HOME": str(self.home), "COMPRESSION_STUDIO_STATE_FILE": str(self.state_file),
                "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}

    def start_app(self) -> dict:
        self.state_file.unlink(missing_ok=True)
        log = open(self.tmp / f"app-{time.monotonic_ns()}.log", "w")  # closed with the process
        self.app = subprocess.Popen([sys.executable, "-m", "studio.app"], env=self.env(), cwd=REPO,
                                    stdout=log, stderr=subprocess.STDOUT)
        state = self.wait(lambda s: s["visible"] and s["monitor"] is not None, 30, "the window")
        self.x("mousemove", "--sync", str(state["window"]["x"]), str(state["window"]["y"]))  # focus follows it
        return state

    def state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def wait(self, predicate, timeout: float, what: str) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            state = self.state()
            if state is not None and predicate(state):
                return state
            if self.app is not None and self.app.poll() is not None:
                raise AssertionError(f"the app exited ({self.app.returncode}) while waiting for {what}")
            time.sleep(0.2)
        self.screenshot(f"timeout-{what}")
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last state: {self.state()}")

    def x(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], env=self.env(), check=True, timeout=20)

    def click(self, where: dict) -> None:
        assert 0 <= where["x"] < SCREEN[0] and 0 <= where["y"] < SCREEN[1], f"off the screen: {where}"
        self.x("mousemove", "--sync", str(where["x"]), str(where["y"]), "click", "1")

    def screenshot(self, name: str) -> Path | None:
        if shutil.which("import") is None:
            return None
        self.shots += 1
        path = self.tmp / f"{self.shots:02d}-{name}.png"
        subprocess.run(["import", "-window", "root", str(path)], env=self.env(), timeout=30, check=False)
        return path

    def close(self) -> None:
        if self.app is not None and self.app.poll() is None:
            self.app.kill()
            self.app.wait(timeout=10)
        for info in self.home.glob("runs/*/run.json"):  # engines live in sessions of their own: stop ours
            run = json.loads(info.read_text())
            if run.get("status") in ("running", "cancelling") and run.get("pid") and _alive(run["pid"]):
                os.kill(run["pid"], signal.SIGKILL)
        self.xvfb.terminate()
        self.xvfb.wait(timeout=10)


def _run(home: Path, run_id: str) -> dict:
    return json.loads((home / "runs" / run_id / "run.json").read_text())


def _curve_sizes(home: Path, run_id: str) -> dict[str, int]:
    """Points per curve in the run's events.jsonl, as the studio labels them (a resumed stage's re-logged steps
    replace the lost ones)."""
    from engine.contract.protocol import read_events
    from studio.model.run_state import RunState

    state = RunState()
    for _, event in read_events(home / "runs" / run_id / "events.jsonl"):
        state.apply(event)
    return {label: s.size for label, s in state.metrics.series.items()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _until(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s: {what}")


def _start_quick_demo(desk: Desktop, state: dict) -> dict:
    desk.click(state["nav"]["Start"])
    state = desk.wait(lambda s: s["page"] == "Start", 10, "the start page")
    if not state["start"]["quick_checked"]:
        box = state["start"]["quick"]
        desk.click({"x": box["x"] - box["w"] // 2 + 8, "y": box["y"]})  # on the tick box, not the empty row
        state = desk.wait(lambda s: s["start"]["quick_checked"], 10, "quick ticked")
    desk.click(state["start"]["demo"])
    return desk.wait(lambda s: s["page"] == "Monitor" and s["monitor"]["run_id"], 60, "the demo's run id")


XCB_LIBS = ("libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0 "
            "libxcb-randr0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0")


@pytest.fixture
def desk(tmp_path):
    _require("Xvfb", "xvfb")
    _require("xdotool", "xdotool")
    desktop = Desktop(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "from PySide6.QtGui import QGuiApplication; QGuiApplication([])"],
                           env=desktop.env(), capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        desktop.close()
        pytest.skip(f"Qt's xcb platform plugin does not load (apt-get install {XCB_LIBS}): "
                    f"{probe.stderr.strip().splitlines()[:1]}")
    yield desktop
    desktop.close()


def _stage_started(home: Path, run_id: str, index: int) -> bool:
    path = home / "runs" / run_id / "events.jsonl"
    return path.exists() and f'"index": {index},' in path.read_text()


def test_leave_running_reopen_kill_and_resume_under_x11(desk):
    home = desk.home
    state = desk.start_app()
    # -- typing into the wizard: every key arrives, focus stays in the field
    desk.click(state["nav"]["New run"])
    state = desk.wait(lambda s: s["page"] == "New run" and s["wizard"]["name"]["visible"], 10, "the wizard")
    desk.click(state["wizard"]["name"])
    desk.x("key", "ctrl+a")
    desk.x("type", "--delay", "40", "gui-kd-1")
    state = desk.wait(lambda s: s["wizard"]["name_text"] == "gui-kd-1", 10, "the typed run name")
    assert state["wizard"]["name_focused"]
    # -- a quick demo from the start page; close the app choosing "Leave running"
    state = _start_quick_demo(desk, state)
    run_id = state["monitor"]["run_id"]
    desk.wait(lambda s: sum(s["monitor"]["curves"].values()) > 0, 60, "the first curve points")
    desk.screenshot("demo-running")
    desk.x("key", "ctrl+q")
    state = desk.wait(lambda s: s["dialog"] is not None, 10, "the close dialog")
    assert "Leave running" in state["dialog"]["buttons"]
    desk.x("key", "Return")  # the default button: Leave running
    assert desk.app.wait(timeout=20) == 0
    pid = _run(home, run_id)["pid"]
    # nobody reads its pipes any more: the engine goes on into its next stage, writing to the run folder
    _until(lambda: _stage_started(home, run_id, 2) or not _alive(pid), 60, "the engine's next stage")
    assert _alive(pid) and _run(home, run_id)["status"] == "running", \
        (home / "runs" / run_id / "engine.log").read_text()[-2000:]
    # -- reopen: the studio follows the run again, with its curves from the first step on
    state = desk.start_app()
    assert state["page"] == "Monitor" and state["monitor"]["run_id"] == run_id and state["monitor"]["live"]
    # -- kill the engine mid-run (after two stages finished), then Resume from the monitor
    _until(lambda: _stage_started(home, run_id, 3), 60, "the third stage")
    os.kill(pid, signal.SIGKILL)
    state = desk.wait(lambda s: s["monitor"]["state"] == "failed" and s["monitor"]["resume"]["visible"], 20,
                      "the killed run with a Resume button")
    assert state["monitor"]["curves"] == _curve_sizes(home, run_id)  # replayed from the start, then followed
    assert state["monitor"]["curves"]["teacher_sft · train/loss"] == 4
    # one status everywhere (the contract's, as in the history), and the engine's last words from engine.log
    state = desk.wait(lambda s: s["monitor"]["badge"] == "interrupted" and "engine.log" in s["monitor"]["error"], 30,
                      "the interrupted badge and the banner pointing at engine.log")
    desk.screenshot("killed")
    desk.click(state["monitor"]["resume"])
    state = desk.wait(lambda s: s["monitor"]["state"] == "finished", 150, "the resumed run to finish")
    assert state["monitor"]["run_id"] == run_id and state["monitor"]["badge"] == "finished"
    assert not state["monitor"]["resume"]["visible"] and not state["monitor"]["error"]
    assert state["monitor"]["run_bar"] == 1000 and state["monitor"]["sessions"] == 1
    assert state["monitor"]["curves"] == _curve_sizes(home, run_id)
    assert state["monitor"]["curves"]["student_kd · train/loss"] == 4
    assert _run(home, run_id)["status"] == "finished"
    desk.screenshot("resumed")
    desk.x("key", "ctrl+q")  # nothing running: no question
    assert desk.app.wait(timeout=20) == 0
