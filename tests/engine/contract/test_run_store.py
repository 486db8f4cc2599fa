"""The run store: folders, the SQLite index, atomic updates, liveness and deletion."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from engine.contract.runs import RunStore


def test_create_update_list_delete(tmp_path):
    store = RunStore(tmp_path)
    a = store.create("first run", "name: a\n")
    b = store.create("second", "name: b\n")
    assert a.spec.read_text() == "name: a\n"
    store.update(a.id, status="finished", scores={"eval/rougeL": 0.5})
    store.update(a.id, scores={"kd/retention": 0.9})
    record = store.get(a.id)
    assert record.status == "finished" and record.scores == {"eval/rougeL": 0.5, "kd/retention": 0.9}
    assert {r.id for r in store.list()} == {a.id, b.id}
    store.delete(b.id)
    assert not b.root.exists() and [r.id for r in store.list()] == [a.id]


def test_index_is_rebuilt_from_the_folders(tmp_path):
    store = RunStore(tmp_path)
    paths = store.create("x", "")
    store.index_path.unlink()
    assert [r.id for r in RunStore(tmp_path).list()] == [paths.id]
    shutil.rmtree(paths.root)
    assert RunStore(tmp_path).list() == []


def test_a_live_run_cannot_be_deleted_and_a_dead_one_is_not_alive(tmp_path):
    store = RunStore(tmp_path)
    paths = store.create("x", "")
    store.update(paths.id, status="running", pid=os.getpid())
    assert store.get(paths.id).is_alive()
    with pytest.raises(RuntimeError, match="still running"):
        store.delete(paths.id)
    store.update(paths.id, pid=2 ** 22 + 12345)  # no such process
    assert not store.get(paths.id).is_alive()


def test_eval_sections_merge(tmp_path):
    paths = RunStore(tmp_path).create("x", "")
    paths.merge_eval({"models": {"teacher": {"rougeL": 1.0}}})
    merged = paths.merge_eval({"quantization": {"size_ratio": 0.3}})
    assert set(merged) == {"models", "quantization"}


def test_stage_reports_sit_next_to_each_other_and_append_their_tables(tmp_path):
    paths = RunStore(tmp_path).create("x", "")
    paths.merge_eval({"models": {"teacher": {"rougeL": 1.0}}})
    paths.add_stage_report("grpo", "grpo_a", {"after": {"correct": 0.3}}, "## a\n")
    paths.add_stage_report("grpo", "grpo_b", {"after": {"correct": 0.4}}, "## b\n")
    data = json.loads(paths.eval_json.read_text())
    assert data["models"] == {"teacher": {"rougeL": 1.0}}
    assert data["grpo"] == {"grpo_a": {"after": {"correct": 0.3}}, "grpo_b": {"after": {"correct": 0.4}}}
    assert paths.eval_md.read_text() == "## a\n## b\n"
    paths.eval_json.write_text("{not json")  # a damaged file is started afresh, never a crash
    paths.add_stage_report("quantization", "q", {"ratio": 0.26}, "")
    assert json.loads(paths.eval_json.read_text()) == {"quantization": {"q": {"ratio": 0.26}}}


def test_one_status_function_for_the_engine_the_cli_and_the_studio(tmp_path, capsys, monkeypatch):
    """run.json says running, but no engine holds the run: every reader says interrupted, in the same words."""
    from engine.contract.run_status import RUN_STATES, run_status
    from engine.cli.tools import cmd_runs
    from studio.model.history_data import display_status

    store = RunStore(tmp_path)
    dead, done = store.create("dead", ""), store.create("done", "")
    store.update(dead.id, status="running", pid=2 ** 22 + 12345)  # above any pid_max: no such process
    store.update(done.id, status="finished")
    for paths, expected in ((dead, "interrupted"), (done, "finished")):
        record = store.get(paths.id)
        assert run_status(paths.root, record.status, record.pid) == expected
        assert record.current_status() == display_status(record) == expected
        assert expected in RUN_STATES
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    assert cmd_runs(type("Args", (), {"action": "list", "run_id": None})()) == 0
    listed = capsys.readouterr().out
    assert "interrupted" in listed and "finished" in listed


def test_a_resume_point_is_a_finished_stage_or_a_complete_checkpoint(tmp_path):
    from engine.contract.run_status import COMPLETE_MARKER, has_resume_point

    assert not has_resume_point(tmp_path)
    half = tmp_path / "checkpoints" / "sft" / "lr-1e-3" / "checkpoint-4"
    half.mkdir(parents=True)
    assert not has_resume_point(tmp_path)  # a half-written save of a sweep's trial
    (half / COMPLETE_MARKER).write_text("4\n")
    assert has_resume_point(tmp_path)
    (half / COMPLETE_MARKER).unlink()
    (tmp_path / "work" / "sft").mkdir(parents=True)
    (tmp_path / "work" / "sft" / "done.json").write_text("{}")
    assert has_resume_point(tmp_path)
