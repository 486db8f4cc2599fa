"""End to end under a real X server with a window manager (openbox), as a person uses the studio: a learning-rate
sweep started from a terminal while the app is open. The monitor follows it and draws one series per learning
rate and the sweep's summary per rate; the arena, opened before the run existed, lists the run and its saved
model once it finishes, and loads that model with a real click. The sweep's screenshot is left in the test's
temporary folder (``*-sweep-plots.png``) for a person to look at.

Needs Xvfb, xdotool and openbox (``apt-get install xvfb xdotool openbox``; imagemagick for the screenshots);
skipped, saying so, without them.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_e2e_x11 import REPO, XCB_LIBS, Desktop, _require  # the same desktop, app and state file

pytestmark = pytest.mark.timeout(300)
SPEC = """name: e2e-sweep
teacher: {source: demo:teacher}
student: {source: demo:student}
data: {preset: demo, max_samples: 200, validation_fraction: 0.1, test_fraction: 0.1, max_length: 96}
stages:
- kind: sft
  name: student_sft
  model: student
  train: {sweep_learning_rates: [0.0005, 0.002], max_steps: 6, batch_size: 8, logging_steps: 1, save_steps: 100}
"""


@pytest.fixture
def desk_wm(tmp_path):
    for tool, package in (("Xvfb", "xvfb"), ("xdotool", "xdotool"), ("openbox", "openbox")):
        _require(tool, package)
    desktop = Desktop(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "from PySide6.QtGui import QGuiApplication; QGuiApplication([])"],
                           env=desktop.env(), capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        desktop.close()
        pytest.skip(f"Qt's xcb platform plugin does not load (apt-get install {XCB_LIBS}): "
                    f"{probe.stderr.strip().splitlines()[:1]}")
    # a real window manager: it places, decorates and focuses windows as a desktop does (focus, raise, popups)
    wm = subprocess.Popen(["openbox", "--sm-disable"], env=desktop.env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    yield desktop
    desktop.close()
    wm.kill()
    wm.wait(timeout=10)


def _curve(state: dict, label: str) -> int:
    return (state["monitor"] or {}).get("curves", {}).get(label, 0)


def test_a_sweep_started_elsewhere_is_drawn_per_rate_and_the_arena_picks_up_its_model(desk_wm):
    desk = desk_wm
    state = desk.start_app()
    desk.click(state["nav"]["Chat"])  # the arena is open before the run exists
    state = desk.wait(lambda s: s["arena"] is not None and s["page"] == "Chat", 20, "the arena")
    assert state["arena"]["runs"] == ["no run (demo data)"]
    spec = desk.tmp / "sweep.yaml"
    spec.write_text(SPEC)
    engine = subprocess.run([sys.executable, "-m", "engine", "run", str(spec)], env=desk.env(), cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    assert engine.returncode == 0, engine.stderr[-3000:]
    # -- the arena, open all along, lists the finished run and its model
    state = desk.wait(lambda s: any(r.startswith("e2e-sweep — ") for r in s["arena"]["runs"]) and
                      "e2e-sweep · student_sft" in s["arena"]["panes"][0]["items"], 10, "the new run in the arena")
    # -- the monitor followed the run from the terminal: one series per learning rate, the summary per rate
    desk.click(state["nav"]["Monitor"])
    rates = ("student_sft (lr 0.0005) · train/loss", "student_sft (lr 0.002) · train/loss")
    state = desk.wait(lambda s: s["page"] == "Monitor" and all(_curve(s, r) == 6 for r in rates) and
                      _curve(s, "student_sft · sweep/eval_loss") == 2 and s["monitor"]["state"] == "finished",
                      30, "the sweep's curves")
    assert "student_sft · train/loss" not in state["monitor"]["curves"]  # never one line through both rates
    assert state["monitor"]["run_bar"] == 1000
    time.sleep(1.0)  # the plots redraw on a timer
    desk.screenshot("sweep-plots")
    # -- load the new run's model in the arena with real clicks: its label resolves to its folder
    desk.click(state["nav"]["Chat"])
    state = desk.wait(lambda s: s["page"] == "Chat", 10, "the arena again")
    pane = state["arena"]["panes"][0]
    desk.click(pane["combo"])
    # picked with the arrow keys (the newest run's model is the list's first entry), as a keyboard user does;
    # typing the label is flaky under xdotool: its '·' goes through a keycode remapped for a moment, and the
    # completer's popup may or may not take the Return
    desk.x("key", "--delay", "60", *["Up"] * 8)
    state = desk.wait(lambda s: s["arena"]["panes"][0]["text"] == "e2e-sweep · student_sft", 10, "the picked label")
    desk.click(state["arena"]["panes"][0]["load"])
    state = desk.wait(lambda s: s["arena"]["panes"][0]["state"] in ("loaded", "failed"), 90, "the model to load")
    assert state["arena"]["panes"][0]["state"] == "loaded", state["arena"]["panes"][0]["error"]
    desk.screenshot("arena-new-run")
    desk.x("key", "ctrl+q")
    assert desk.app.wait(timeout=30) == 0
