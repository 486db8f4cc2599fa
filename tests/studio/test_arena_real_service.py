"""The arena against the real chat service (``python -m engine chat``) with the demo kit's tiny models: two
panes stream the same prompt, the numbers appear, Stop ends both, and a folder that is not a model fails in its
own pane while the other keeps answering. No network: the demo kit is built locally into a temporary home (by
the first load; the arena sends loads one at a time, so the second one reuses it)."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import sys

import pytest

from studio.arena.arena_widget import ArenaWidget
from studio.arena.catalog import ModelChoice
from studio.arena.chat_client import engine_chat_command

SERVICE = engine_chat_command(sys.executable)  # the command the studio itself uses


def test_real_service_streams_two_demo_models_and_obeys_stop(qtbot, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    arena = ArenaWidget(store=None, chat_command=SERVICE, pane_count=3)
    qtbot.addWidget(arena)
    tokens: list[tuple[str, str]] = []
    arena.client.token_received.connect(lambda request_id, _model, text: tokens.append((request_id, text)))
    try:
        arena.load_model("pane1", ModelChoice(label="teacher", source="demo:teacher", role="teacher"))
        arena.load_model("pane2", ModelChoice(label="student", source="demo:student", role="student"))
        arena.load_model("pane3", ModelChoice(label="junk", source=str(not_a_model)))
        panes = arena.session.panes
        qtbot.waitUntil(lambda: all(p.load_state in ("loaded", "failed") for p in panes), timeout=120_000)
        assert [p.load_state for p in panes] == ["loaded", "loaded", "failed"], [p.error for p in panes]
        assert arena.panes["pane3"].error_label.text().startswith("Could not load this model:")
        assert panes[0].info["parameters"] > panes[1].info["parameters"] > 0
        assert panes[1].precision == "float32" and "M params" in panes[0].size

        arena.sampling_box.max_new_tokens.setValue(6)
        request_ids = arena.send("What is 2 + 3?")
        assert len(request_ids) == 2  # the failed pane is skipped
        qtbot.waitUntil(lambda: not arena.session.busy, timeout=60_000)
        for pane, request_id in zip(panes[:2], request_ids):
            turn = pane.turns[-1]
            assert turn.status == "finished" and 1 <= turn.completion_tokens <= 6
            assert any(r == request_id for r, _ in tokens)  # streamed, not only delivered at the end
            assert turn.ttft_s is not None and turn.ttft_s > 0
            assert f"{turn.completion_tokens} tokens" in arena.panes[pane.key].stats_label.text()
        qtbot.waitUntil(lambda: panes[1].turns[-1].rouge_l is not None, timeout=30_000)
        assert 0.0 <= panes[1].turns[-1].rouge_l <= 1.0

        # one ROUGE-L, the evaluation's: stemmed, so "dogs"/"dog" and "running"/"running" match (0.75, where an
        # unstemmed ASCII scorer says 0.5); the reference box re-scores the answers through the service
        panes[0].turns[-1].answer, panes[1].turns[-1].answer = "the dog is running", "The dogs are running"
        reference = arena.panes["pane1"].reference_box
        reference.click()
        reference.click()
        assert arena.session.reference_key == "pane1"
        qtbot.waitUntil(lambda: panes[1].turns[-1].rouge_l is not None, timeout=30_000)
        assert panes[1].turns[-1].rouge_l == pytest.approx(0.75)
        assert "ROUGE-L 0.75 vs teacher" in arena.panes["pane2"].stats_label.text()

        arena.sampling_box.max_new_tokens.setValue(2000)
        arena.send("Tell me a long story.")
        qtbot.waitUntil(lambda: all(p.turns[-1].answer for p in panes[:2]), timeout=60_000)
        arena.stop()
        qtbot.waitUntil(lambda: not arena.session.busy, timeout=30_000)
        assert [p.turns[-1].status for p in panes[:2]] == ["stopped", "stopped"]
        assert all(p.turns[-1].completion_tokens < 2000 for p in panes[:2])
    finally:
        arena.shutdown(5000)
    assert not arena.client.is_running()
