"""Offline KD through the engine's run command (in-process, to spare the suite two interpreter start-ups): the
first run builds the teacher's cached targets once for a two-point learning-rate sweep, a second run reads them
without loading the teacher, and a cache named for other settings is refused before any run folder exists."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest

SPEC = """name: cached-kd
teacher: {source: "demo:teacher"}
student: {source: "demo:student"}
data: {preset: demo, max_samples: 60, max_length: 128}
stages:
  - kind: distill
    name: kd
    model: student
    teacher: teacher
    train: {max_steps: 2, batch_size: 8, logging_steps: 1, sweep_learning_rates: [0.001, 0.003]}
    distill: {teacher_cache: {enabled: true, top_k: 16%s}}
"""

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(spec: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> tuple[int, list, str]:
    from engine.cli.run import cmd_run

    caplog.clear()
    code = cmd_run(argparse.Namespace(resume=None, spec=str(spec)))
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, events, err + caplog.text


def _cache_artifact(events: list) -> dict:
    found = [e["data"] for e in events if e["type"] == "artifact" and e["data"]["kind"] == "teacher_targets"]
    assert len(found) == 1
    return found[0]


def _each_point_scored(home: Path, events: list) -> None:
    """Each sweep point's own validation score, in its metric event and in run.json (what `runs show` prints),
    not only the best model's."""
    from engine.contract.metric_names import SWEEP_EVAL_LOSS

    points = {e["data"]["values"]["sweep/learning_rate"]: e["data"]["values"][SWEEP_EVAL_LOSS]
              for e in events if e["type"] == "metric" and SWEEP_EVAL_LOSS in e["data"]["values"]}
    assert sorted(points) == [0.001, 0.003]
    run_json = json.loads((sorted((home / "runs").iterdir())[0] / "run.json").read_text())
    scores = run_json["scores"]
    for lr, loss in points.items():
        assert scores[f"kd/lr-{lr:g}/eval_loss"] == pytest.approx(loss)
        assert isinstance(scores[f"kd/lr-{lr:g}/eval_ce"], float)
    best = scores["kd/best_learning_rate"]
    assert points[best] == min(points.values())


def _savings(messages: list[str]) -> dict:
    """The run monitor's line: '… N sequences read from it, M teacher forward passes avoided'."""
    import re

    line = next(m for m in messages if "teacher forward passes avoided" in m)
    found = re.search(r"(\d+) sequences read from it, (\d+) teacher forward passes avoided", line)
    return {"read": int(found[1]), "avoided": int(found[2])}


def test_teacher_runs_once_across_a_sweep_and_a_second_run(tmp_path, monkeypatch, capsys, caplog):
    home = tmp_path / "home"
    monkeypatch.setattr("engine.cli.run.listen_for_cancel", lambda cancel: None)  # no stdin thread, no SIGINT hook
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(home))
    caplog.set_level(logging.INFO, logger="engine")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC % "", encoding="utf-8")
    code, events, logs = _run(spec, capsys, caplog)
    assert code == 0, logs[-3000:]
    messages = [e["data"]["message"] for e in events if e["type"] == "log"]
    assert sum("building teacher targets" in m for m in messages) == 1  # once, for both sweep points
    assert any(e["type"] == "progress" and e["data"]["stage"] == "kd:teacher-targets"
               and e["data"]["fraction"] == 1 for e in events)
    assert logs.count("loaded demo:teacher") == 1 and logs.count("loaded demo:student") == 2
    caches = list((home / "teacher-targets").iterdir())
    assert len(caches) == 1 and json.loads((caches[0] / "meta.json").read_text())["parts"]["top_k"] == 16
    built = _cache_artifact(events)
    on_disk = sum(p.stat().st_size for p in caches[0].iterdir())
    assert built["reused"] is False and built["bytes"] == on_disk and built["build_s"] > 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in caches[0].iterdir()}
    first = _savings(messages)
    # two sweep points × 2 steps × 8 sequences read for training alone; the build ran each of the train and
    # validation rows once (more than two tiny sweep points read: the first run saves nothing yet)
    assert first["read"] >= 32 and first["avoided"] == max(first["read"] - built["rows"], 0)
    _each_point_scored(home, events)

    code, events, logs = _run(spec, capsys, caplog)
    assert code == 0, logs[-3000:]
    messages = [e["data"]["message"] for e in events if e["type"] == "log"]
    assert any("read from the cache" in m for m in messages) and not any("building" in m for m in messages)
    assert "loaded demo:teacher" not in logs and logs.count("loaded demo:student") == 2
    reused = _cache_artifact(events)  # the same folder, untouched: reused, not rebuilt
    assert reused["reused"] is True and reused["path"] == built["path"] and reused["build_s"] == built["build_s"]
    assert {p.name: p.stat().st_mtime_ns for p in caches[0].iterdir()} == mtimes
    second = _savings(messages)
    assert second["read"] == first["read"] and second["avoided"] == second["read"]  # no teacher pass at all

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text((SPEC % f", path: '{caches[0]}'").replace("top_k: 16", "top_k: 32"), encoding="utf-8")
    runs_before = sorted((home / "runs").iterdir())
    code, events, logs = _run(wrong, capsys, caplog)
    assert code == 2 and [e["type"] for e in events] == ["error"]
    assert "distill.teacher_cache.path" in logs and "another top_k" in logs
    assert sorted((home / "runs").iterdir()) == runs_before
