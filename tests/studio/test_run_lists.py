"""Every list that names runs' models follows the run folders (issue 20, item 1): the arena's run list and panes
pick up a run that appears while the app is open and keep what the user picked; a pane whose model's run is gone
says so instead of loading another model; the wizard's model sources offer the runs' saved models by name."""
from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

from PySide6.QtCore import Qt

sys.path.insert(0, str(Path(__file__).parent))
from test_arena_session import _fake_run  # a run folder as the engine leaves it

from engine.contract.runs import RunStore
from studio.arena import catalog
from studio.arena.arena_widget import ArenaWidget

FAKE_CHAT = [sys.executable, str(Path(__file__).with_name("fake_chat.py"))]


def _arena(qtbot, store: RunStore) -> ArenaWidget:
    arena = ArenaWidget(store=store, chat_command=FAKE_CHAT, pane_count=2, rng=random.Random(0))
    qtbot.addWidget(arena)
    return arena


def test_arena_picks_up_a_new_run_and_keeps_the_picks(qtbot, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    store = RunStore(tmp_path / "store")
    arena = _arena(qtbot, store)
    pane = arena.panes["pane1"]
    assert arena.run_combo.count() == 1  # no run yet: the demo data only
    pane.model_combo.setEditText("demo student")  # the user's pick, not loaded yet
    run = _fake_run(tmp_path / "store")
    arena.refresh_models()
    assert arena.run_combo.findData(str(run)) > 0
    labels = [pane.model_combo.itemText(i) for i in range(pane.model_combo.count())]
    assert "demo · distill" in labels and "demo · teacher_sft" in labels
    assert pane.model_combo.currentText() == "demo student"
    assert pane.current_choice().source == "demo:student"  # the label, not a list position, names the model
    pane.model_combo.setEditText("demo · distill")
    assert pane.current_choice().source == str(run / "models" / "distill")
    arena.run_combo.setCurrentIndex(0)  # the user's run choice survives a refresh too
    arena.refresh_models()
    assert arena.run_combo.currentIndex() == 0 and pane.model_combo.currentText() == "demo · distill"


def test_a_pane_whose_run_is_gone_says_so_and_loads_nothing(qtbot, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    run = _fake_run(tmp_path / "store")
    store = RunStore(tmp_path / "store")
    arena = _arena(qtbot, store)
    pane = arena.panes["pane1"]
    pane.model_combo.setEditText("demo · teacher_sft")
    requested = []
    pane.load_requested.connect(lambda key, choice: requested.append(choice))
    shutil.rmtree(run)
    arena.refresh_models()
    assert pane.model_combo.currentText() == "demo · teacher_sft"
    assert pane.current_choice() is None  # never the demo teacher, nor a hub id made of the label
    assert "no longer in the run history" in pane.error_label.text() and not pane.error_label.isHidden()
    qtbot.mouseClick(pane.load_button, Qt.MouseButton.LeftButton)
    assert requested == [] and arena.session.pane("pane1").choice is None
    pane.model_combo.setEditText("demo teacher")  # a new pick clears the verdict
    assert pane.error_label.isHidden() and pane.current_choice().source == "demo:teacher"


def test_trained_models_are_the_full_precision_stage_outputs(tmp_path) -> None:
    run = _fake_run(tmp_path)
    models = catalog.trained_models(RunStore(tmp_path))
    assert [(m.label, m.source) for m in models] == [("demo · teacher_sft", str(run / "models" / "teacher_sft")),
                                                     ("demo · distill", str(run / "models" / "distill"))]
    signature = catalog.models_signature(tmp_path / "runs", {run.name: "finished"})
    (run / "models" / "distill_b").mkdir()  # a stage's model saved later changes what the lists offer
    assert catalog.models_signature(tmp_path / "runs", {run.name: "finished"}) != signature


def test_window_lists_follow_a_run_that_finishes_while_open(window, qtbot) -> None:
    window.go_to("Chat")
    arena = window.chat
    page = window.wizard.models_page
    assert arena.run_combo.count() == 1
    run = _fake_run(window.store.root)
    window.watcher.poll()
    assert arena.run_combo.findData(str(run)) > 0
    assert "demo · distill" in [arena.panes["pane1"].model_combo.itemText(i)
                                for i in range(arena.panes["pane1"].model_combo.count())]
    window.go_to("New run")
    qtbot.waitUntil(page.isVisible, timeout=2000)
    box = page.student
    labels = [box.source.itemText(i) for i in range(box.source.count())]
    assert labels[:1] == ["demo:student"] and "demo · distill" in labels
    box.source.setCurrentIndex(labels.index("demo · distill"))
    assert box.values()["source"] == str(run / "models" / "distill")
    assert page.problem() == ""  # the folder exists: Next is allowed
