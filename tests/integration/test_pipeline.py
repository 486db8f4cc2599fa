"""The whole engine through its CLI on the demo kit: a quick demo run end to end, and cancel → resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine.models.cards import front_matter
from tests.integration.conftest import engine, events_of


@pytest.fixture(scope="module")
def quick_demo(studio_home):
    result = engine(studio_home, "demo", "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    return events_of(result.stdout)


def test_demo_events_arrive_in_order_with_their_fields(quick_demo):
    types = [e["type"] for e in quick_demo]
    assert types[0] == "hello" and types[-1] == "done"
    assert quick_demo[-1]["data"]["status"] == "finished"
    assert [e["seq"] for e in quick_demo] == list(range(1, len(quick_demo) + 1))
    assert len({e["run_id"] for e in quick_demo}) == 1
    stages = [e["data"]["stage"] for e in quick_demo if e["type"] == "status" and e["data"]["stage"]]
    assert list(dict.fromkeys(stages)) == ["teacher_sft", "student_sft", "student_kd", "eval"]
    metrics = [e["data"] for e in quick_demo if e["type"] == "metric"]
    names = {name for m in metrics for name in m["values"]}
    assert {"train/loss", "train/lr", "kd/ce", "kd/divergence", "eval/rougeL", "eval/retention", "eval/ce"} <= names
    evaluated = {m.get("model") for m in metrics if m["stage"] == "eval" and "eval/ce" in m["values"]}
    assert len(evaluated) == 3  # every model of the evaluate stage has its cross-entropy beside its ROUGE-L
    drafted = {m.get("model") for m in metrics if m["stage"] == "eval" and "eval/draft_acceptance" in m["values"]}
    assert len(drafted) == 2  # both students measured as the teacher's draft model (the teacher drafts for nobody)
    kd_losses = [m["values"]["kd/divergence"] for m in metrics if "kd/divergence" in m["values"]]
    assert all(v >= 0 for v in kd_losses)
    progress = [e["data"] for e in quick_demo if e["type"] == "progress"]
    assert progress and all(0 <= p["fraction"] <= 1 for p in progress)
    # the studio's whole-run ETA weighs the stages by the plan; its bar moves model by model in the evaluation
    starts = [e["data"] for e in quick_demo if e["type"] == "status" and "index" in e["data"]]
    assert [(p["stage"], p["model"], p["steps"]) for p in starts[0]["plan"]] == [
        ("teacher_sft", "teacher", 4), ("student_sft", "student", 4), ("student_kd", "student", 4),
        ("eval", "student", None)]
    parts = {(p["stage"], p["part"]["index"], p["part"]["count"]) for p in progress if "part" in p}
    assert {index for _stage, index, _count in parts} == {0, 1, 2} and {c for *_, c in parts} == {3}
    from engine.contract.events import missing_keys  # every event carries its type's payload (the contract)

    assert {(e["type"], tuple(missing_keys(e["type"], e["data"]))) for e in quick_demo
            if missing_keys(e["type"], e["data"])} == set()


def test_demo_writes_evaluation_models_and_index(quick_demo, studio_home):
    run_id = quick_demo[0]["run_id"]
    root = studio_home / "runs" / run_id
    report = json.loads((root / "eval.json").read_text())
    assert set(report["models"]) == {"teacher", "sft_student", "kd_student"}
    teacher = report["models"]["teacher"]
    assert teacher["retention"] == pytest.approx(1.0) or teacher["rougeL"] == 0
    for scores in report["models"].values():
        assert 0 <= scores["rougeL"] <= 1 and 0 <= scores["exact_match"] <= 1
    assert "| kd_student |" in (root / "eval.md").read_text()
    events_file = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
    assert events_file == quick_demo  # the mirror is the stream
    listing = engine(studio_home, "runs")
    assert run_id in listing.stdout and "finished" in listing.stdout
    # the saved student loads with plain transformers, in a process that never imported the engine
    code = ("import sys; from transformers import AutoModelForCausalLM, AutoTokenizer; p = sys.argv[1]; "
            "m = AutoModelForCausalLM.from_pretrained(p); t = AutoTokenizer.from_pretrained(p); "
            "ids = t.apply_chat_template([{'role': 'user', 'content': 'hi'}], add_generation_prompt=True); "
            "print(len(ids) > 0 and m.config.model_type)")
    out = subprocess.run([sys.executable, "-c", code, str(root / "models" / "student_kd")], capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "qwen2", out.stderr[-2000:]
    card = (root / "models" / "student_kd" / "README.md").read_text()
    assert "Made with Compression Studio" in card and str(studio_home) not in card
    meta = front_matter(card)
    assert meta["base_model"] == "compression-studio-demo-student" and "knowledge-distillation" in meta["tags"]
    assert json.loads((root / "models" / "student_kd" / "config.json").read_text())["use_cache"] is True


def test_demo_writes_tensorboard_files_under_the_protocols_names(quick_demo, studio_home):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = studio_home / "runs" / quick_demo[0]["run_id"] / "tensorboard"

    def tags(*parts: str) -> set[str]:
        acc = EventAccumulator(str(board.joinpath(*parts)))
        acc.Reload()
        return set(acc.Tags()["scalars"])

    assert {"train/loss", "train/lr"} <= tags("teacher_sft")
    assert {"train/loss", "kd/ce", "kd/divergence"} <= tags("student_kd")
    assert {"eval/rougeL", "eval/exact_match"} <= tags("eval", "kd_student")  # (retention: null in --quick)


def test_cancel_saves_a_checkpoint_and_resume_finishes(tmp_path, studio_home):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: cancel-me\nstudent: {source: demo:student}\ndata: {preset: demo, max_length: 96}\n"
                    "stages:\n  - {kind: sft, name: student_sft, model: student, train: "
                    "{max_steps: 400, batch_size: 4, logging_steps: 1, save_steps: 1000}}\n", encoding="utf-8")
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(studio_home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", str(spec)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["type"] == "metric" and events[-1]["data"]["step"] >= 3:
            proc.stdin.write('{"type": "cancel"}\n')
            proc.stdin.flush()
            break
    rest, err = proc.communicate(timeout=300)
    events += events_of(rest)
    assert proc.returncode == 3, err[-3000:]
    assert events[-1]["type"] == "done" and events[-1]["data"]["status"] == "cancelled"
    run_id = events[0]["run_id"]
    root = studio_home / "runs" / run_id
    checkpoints = list((root / "checkpoints" / "student_sft").glob("checkpoint-*"))
    assert checkpoints, "cancel must leave a checkpoint to resume from"
    stopped_at = int(checkpoints[0].name.split("-")[1])
    assert 3 <= stopped_at < 400
    assert json.loads((root / "run.json").read_text())["status"] == "cancelled"

    spec_text = (root / "spec.yaml").read_text().replace("max_steps: 400", f"max_steps: {stopped_at + 3}")
    (root / "spec.yaml").write_text(spec_text)  # keep the resumed leg short
    result = engine(studio_home, "run", "--resume", run_id)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = events_of(result.stdout)
    assert resumed[0]["seq"] == events[-1]["seq"] + 1  # one continuous stream in events.jsonl
    steps = [e["data"]["step"] for e in resumed if e["type"] == "metric" and "train/loss" in e["data"]["values"]]
    assert steps and min(steps) > stopped_at  # continued from the checkpoint, not from step 0
    assert (root / "models" / "student_sft" / "config.json").exists()
    assert json.loads((root / "run.json").read_text())["status"] == "finished"
