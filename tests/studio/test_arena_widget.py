"""The arena widget against a fake chat service (same protocol, scripted answers, slow tokens): two panes stream
the same prompt, Stop ends both, the numbers appear, blind mode hides names until the vote and records it,
export writes both formats, and a model that fails to load leaves the other pane working."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json
import random
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from studio.arena import prompt_presets as presets_mod
from studio.arena.arena_widget import ArenaWidget
from studio.arena.catalog import ModelChoice

FAKE_CHAT = [sys.executable, str(Path(__file__).with_name("fake_chat.py"))]
TEACHER = ModelChoice(label="teacher", source="demo:teacher", role="teacher")
STUDENT = ModelChoice(label="student", source="demo:student", role="student")
PROMPT = "What is 17 + 25? Explain briefly."
sys.path.insert(0, str(Path(__file__).parent))
from fake_chat import SCRIPT, lcs_rouge_l  # noqa: E402 - after the sys.path line above

TEACHER_ANSWER, STUDENT_ANSWER, _ = SCRIPT[PROMPT.lower()]


@pytest.fixture
def arena(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FAKE_CHAT_DELAY", "0.03")
    widget = ArenaWidget(store=None, chat_command=FAKE_CHAT, pane_count=2, rng=random.Random(7))
    qtbot.addWidget(widget)
    widget.resize(1200, 700)
    widget.show()
    qtbot.waitExposed(widget)
    yield widget
    widget.shutdown(3000)


def _load_two(qtbot, arena: ArenaWidget, first: ModelChoice = TEACHER, second: ModelChoice = STUDENT) -> None:
    arena.load_model("pane1", first)
    arena.load_model("pane2", second)
    assert all(not arena.panes[k].progress.isHidden() for k in ("pane1", "pane2"))  # loading shows progress
    assert arena.panes["pane2"].status_chip.text() == "loading 0 %"
    qtbot.waitUntil(lambda: all(p.load_state in ("loaded", "failed") for p in arena.session.panes[:2]),
                    timeout=15000)


def test_two_panes_stream_the_same_prompt_with_their_numbers(qtbot, arena: ArenaWidget) -> None:
    _load_two(qtbot, arena)
    teacher, student = arena.session.pane("pane1"), arena.session.pane("pane2")
    assert arena.panes["pane1"].title.text() == "teacher"
    assert teacher.size == "3.5 M params" and student.precision == "float32"
    assert len(arena.send(PROMPT)) == 2
    # both answers are visibly mid-stream at the same time
    qtbot.waitUntil(lambda: all(p.turns[-1].answer and p.turns[-1].is_open for p in (teacher, student)),
                    timeout=5000)
    assert not arena.send_button.isEnabled() and arena.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)
    assert teacher.turns[-1].answer == TEACHER_ANSWER and student.turns[-1].answer == STUDENT_ANSWER
    assert "30 + 12 = 42" in arena.panes["pane1"].transcript.toPlainText()
    qtbot.waitUntil(lambda: student.turns[-1].rouge_l is not None, timeout=5000)  # asked of the service
    score = student.turns[-1].rouge_l
    assert score == pytest.approx(lcs_rouge_l(STUDENT_ANSWER, TEACHER_ANSWER)) and 0.5 < score < 1
    stats = arena.panes["pane2"].stats_label.text()
    assert f"{student.turns[-1].completion_tokens} tokens" in stats and "tok/s" in stats
    assert "first token" in stats and f"ROUGE-L {score:.2f} vs teacher" in stats
    assert "ROUGE-L" not in arena.panes["pane1"].stats_label.text()  # the reference is not scored
    # a second turn carries each pane's own history
    arena.send("Now multiply the result by 3.")
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)
    assert [len(p.turns) for p in (teacher, student)] == [2, 2]
    assert student.turns[1].answer == SCRIPT["now multiply the result by 3."][1]


def test_stop_ends_both_answers(qtbot, arena: ArenaWidget, monkeypatch) -> None:
    _load_two(qtbot, arena)
    arena.send("Tell me everything about distillation of language models please")
    panes = arena.session.panes[:2]
    qtbot.waitUntil(lambda: all(p.turns[-1].answer for p in panes), timeout=5000)
    qtbot.mouseClick(arena.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=5000)
    assert [p.turns[-1].status for p in panes] == ["stopped", "stopped"]
    full = "You asked about tell me everything about distillation of language models please"
    assert all(len(p.turns[-1].answer) < len(full) for p in panes)
    assert all("stopped" in arena.panes[p.key].stats_label.text() for p in panes)
    assert arena.send_button.isEnabled() and not arena.stop_button.isEnabled()


def test_blind_mode_hides_names_until_the_vote_and_records_it(qtbot, arena: ArenaWidget, tmp_path) -> None:
    _load_two(qtbot, arena)
    qtbot.mouseClick(arena.blind_box, Qt.MouseButton.LeftButton)
    assert not arena.vote_bar.isHidden()
    arena.send(PROMPT)
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)
    titles = sorted(arena.panes[k].title.full_text() for k in ("pane1", "pane2"))
    assert titles == ["Model A", "Model B"]
    assert all(arena.panes[k].picker_row.isHidden() for k in ("pane1", "pane2"))
    assert "ROUGE-L" not in arena.panes["pane2"].stats_label.text()  # it would reveal the reference
    for key in ("pane1", "pane2"):  # speed gives a smaller or 4-bit model away: hidden until the reveal
        shown = arena.panes[key].stats_label.text() + arena.panes[key].transcript.toPlainText()
        assert "tokens" in shown and "tok/s" not in shown and "first token" not in shown
    order = arena.session.blind.order
    assert [arena.splitter.indexOf(arena.panes[k]) for k in order] == [0, 1]
    button = arena.vote_bar.buttons["B"]
    assert button.isEnabled()
    arena.activateWindow()
    button.setFocus()
    with qtbot.waitSignal(arena.vote_recorded) as signal:
        qtbot.keyClick(button, Qt.Key.Key_Space)  # a keyboard vote: the focused button goes disabled
    # the next key goes to the prompt box; the system prompt is neither focused nor selected
    assert arena.prompt_edit.hasFocus() and not arena.system_edit.hasSelectedText()
    qtbot.keyClicks(arena.prompt_edit, "next")
    assert arena.prompt_edit.toPlainText() == "next" and arena.system_edit.text() == arena.session.system_prompt
    winner = arena.session.pane(order[1]).name
    assert signal.args[0]["winner"] == winner
    lines = (tmp_path / "home" / "arena_votes.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["models"]["B"] == winner
    assert arena.panes[order[1]].title.full_text() == winner  # names revealed
    assert "tok/s" in arena.panes[order[1]].stats_label.text()  # and the speeds
    assert "won" in arena.vote_bar.result.text()
    loser = "teacher" if winner == "student" else "student"
    first, second = sorted([winner, loser])
    expected = f"{first} {1 if first == winner else 0} – {1 if second == winner else 0} {second}"
    assert expected in arena.vote_bar.tally_label.text()
    assert not arena.vote_bar.buttons["A"].isEnabled()  # one vote per round


def test_a_preset_starts_a_fresh_comparison_unless_continuing(qtbot, arena: ArenaWidget) -> None:
    _load_two(qtbot, arena)
    arena.presets = [presets_mod.Preset("What is 17 + 25? Explain briefly."),
                     presets_mod.Preset("Now multiply the result by 3.")]
    arena.prompt_bar.set_presets(arena.presets)
    arena.preset_combo.activated.emit(1)
    arena.send(arena.prompt_edit.toPlainText())
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)
    arena.preset_combo.activated.emit(2)  # a new question: the first exchange must not steer the answers
    assert all(not p.turns for p in arena.session.panes)
    assert "fresh comparison" in arena.status_label.text() and arena.prompt_edit.hasFocus()
    arena.send(arena.prompt_edit.toPlainText())
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)
    assert [len(p.turns) for p in arena.session.panes[:2]] == [1, 1]
    arena.continue_box.setChecked(True)  # multi-turn by choice
    arena.preset_combo.activated.emit(1)
    arena.send(arena.prompt_edit.toPlainText())
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)
    assert [len(p.turns) for p in arena.session.panes[:2]] == [2, 2]


def test_titles_are_whole_or_middle_elided_and_the_tally_is_complete(qtbot, arena: ArenaWidget) -> None:
    from studio.arena.votes import tally

    arena.pane_count.setValue(3)
    arena.resize(1024, 700)
    name = "distil-qwen-dolly-2026-11-30 · student_kd (4-bit)"
    arena.load_model("pane3", ModelChoice(label=name, source="/runs/distil-qwen/models/student_kd",
                                          role="student", load_in_4bit=True))
    qtbot.waitUntil(lambda: arena.session.pane("pane3").ready, timeout=10000)
    title = arena.panes["pane3"].title
    assert title.full_text() == name and title.toolTip() == f"{name}\n/runs/distil-qwen/models/student_kd"
    assert title.text().endswith("(4-bit)") and (title.text() == name or "…" in title.text())
    assert title.fontMetrics().horizontalAdvance(title.text()) <= title.contentsRect().width()
    models = ["teacher", "student", "kd", "4-bit"]
    votes = [{"models": {"A": a, "B": b}, "winner": a} for i, a in enumerate(models) for b in models[i + 1:]]
    arena.vote_bar.set_tally(tally(votes))
    arena.vote_bar.show()
    qtbot.wait(50)
    label = arena.vote_bar.tally_label
    assert all(f"{a} 1 – 0 {b}" in label.text() or f"{b} 0 – 1 {a}" in label.text()
               for i, a in enumerate(models) for b in models[i + 1:])
    assert label.height() >= label.heightForWidth(label.width())  # wrapped, not cut off


def test_export_writes_markdown_and_json(qtbot, arena: ArenaWidget, tmp_path) -> None:
    _load_two(qtbot, arena)
    arena.send(PROMPT)
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)
    qtbot.waitUntil(lambda: arena.session.pane("pane2").turns[-1].rouge_l is not None, timeout=5000)
    md_path, json_path = arena.export_to(tmp_path / "out" / "arena")
    data = json.loads(json_path.read_text())
    assert [p["turns"][0]["answer"] for p in data["panes"]] == [TEACHER_ANSWER, STUDENT_ANSWER]
    assert data["panes"][0]["loaded"]["parameters"] == 3_512_704
    markdown = md_path.read_text()
    assert f"**student:** {STUDENT_ANSWER}" in markdown and "ROUGE-L" in markdown


def test_a_model_that_fails_to_load_leaves_the_other_pane_working(qtbot, arena: ArenaWidget) -> None:
    broken = ModelChoice(label="broken", source="broken")
    _load_two(qtbot, arena, broken, STUDENT)
    failed, working = arena.session.pane("pane1"), arena.session.pane("pane2")
    assert failed.load_state == "failed" and working.load_state == "loaded"
    assert not arena.panes["pane1"].error_label.isHidden()
    assert "not a model folder" in arena.panes["pane1"].error_label.text()
    arena.send(PROMPT)
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)
    assert working.turns[-1].answer == STUDENT_ANSWER and not failed.turns
    # loading more than the machine can hold is refused with the estimate, in the pane
    arena.load_model("pane1", ModelChoice(label="huge", source="too-big"))
    qtbot.waitUntil(lambda: failed.load_state == "failed", timeout=5000)
    assert "61.2 GiB" in arena.panes["pane1"].error_label.text()
    assert working.ready and working.turns


def test_screenshot_script_renders_two_panes_mid_conversation(qtbot, tmp_path, monkeypatch) -> None:
    from PySide6.QtGui import QImage

    from tools.arena_screenshot import render

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FAKE_CHAT_DELAY", "0.02")
    image = QImage(str(render(tmp_path / "arena.png")))
    assert (image.width(), image.height()) == (1280, 700)


def test_models_and_presets_come_from_the_run_and_votes_stay_with_it(qtbot, tmp_path, monkeypatch) -> None:
    from engine.contract.runs import RunStore
    from test_arena_session import _fake_run

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FAKE_CHAT_DELAY", "0.01")
    run = _fake_run(tmp_path / "store")
    arena = ArenaWidget(store=RunStore(tmp_path / "store"), chat_command=FAKE_CHAT, pane_count=2,
                        rng=random.Random(0))
    qtbot.addWidget(arena)
    try:
        assert arena.run_combo.currentData() == str(run)
        assert [arena.panes[k].model_combo.currentText() for k in ("pane1", "pane2")] == \
            ["demo · teacher_sft", "demo · distill"]
        assert arena.preset_combo.count() == 26 and arena.preset_combo.itemText(1).startswith("[math] Add ")
        arena.preset_combo.activated.emit(1)
        assert arena.prompt_edit.toPlainText() == arena.presets[0].prompt
        qtbot.mouseClick(arena.load_all_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: all(p.ready for p in arena.session.panes[:2]), timeout=10000)
        assert arena.session.reference_key == "pane1"  # the run's teacher is the ROUGE-L reference
        arena.blind_box.setChecked(True)
        arena.send(arena.presets[0].prompt)
        qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)
        record = arena.vote(None)
        assert record["winner"] == "tie" and record["run_id"] == run.name
        saved = [json.loads(line) for line in (run / "arena_votes.jsonl").read_text().splitlines()]
        assert saved[0]["models"] == record["models"]
        assert "1 tie" in arena.vote_bar.tally_label.text()
    finally:
        arena.shutdown(3000)


def test_a_click_on_send_leaves_the_focus_in_the_prompt_box(qtbot, arena: ArenaWidget) -> None:
    _load_two(qtbot, arena)
    arena.prompt_edit.setPlainText(PROMPT)
    qtbot.mouseClick(arena.prompt_bar.send_button, Qt.MouseButton.LeftButton)
    assert arena.session.busy and not arena.prompt_bar.send_button.isEnabled()
    assert arena.prompt_edit.hasFocus()  # not the next field (Continue conversation): the next question goes here
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)


def test_the_teacher_pane_can_answer_with_the_student_as_its_draft(qtbot, arena: ArenaWidget) -> None:
    _load_two(qtbot, arena)
    combo = arena.panes["pane1"].draft_combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["no draft", "draft: student"]
    sent = []
    original = arena.client.generate
    arena.client.generate = lambda *args, **kwargs: sent.append(kwargs.get("draft")) or original(*args, **kwargs)
    combo.setCurrentIndex(1)
    assert arena.session.pane("pane1").draft == "pane2"
    arena.send(PROMPT)
    assert sorted(sent, key=str) == [None, "pane2"]  # the teacher drafted by the student; the student alone
    qtbot.waitUntil(lambda: "draft student: 50 % kept" in arena.panes["pane1"].stats_label.text(), timeout=5000)
    assert arena.panes["pane1"].stats_label.text().startswith("answering…")  # live, while it streams
    qtbot.waitUntil(lambda: not arena.session.busy, timeout=10000)
    assert "draft student: 75 % kept" in arena.panes["pane1"].stats_label.text()
    assert "draft" not in arena.panes["pane2"].stats_label.text()
