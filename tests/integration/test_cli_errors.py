"""Bad input: one sentence on stderr, one error event on stdout, a non-zero exit, and no run created."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import engine, events_of

STAGE = "stages:\n  - {kind: sft, name: s, model: student, train: {max_steps: 1}}\n"


def _spec(tmp_path: Path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _runs(home: Path) -> list:
    runs = home / "runs"
    return [p for p in runs.iterdir() if (p / "run.json").exists()] if runs.exists() else []


@pytest.mark.parametrize("text, sentence", [
    ("name: x\n" + STAGE.replace("max_steps: 1", "learning_rate: -1"), "train.learning_rate: must be > 0"),
    ("name: x\nstages:\n  - {kind: distill, distill: {alpha: 2}}\n", "distill.alpha: must lie in [0, 1]"),
    ("name: x\nstages:\n  - {kind: distill, distill: {temperature: 0}}\n", "distill.temperature: must be > 0"),
    ("name: x\nstages:\n  - {kind: sft, name: t, distill: {alpha: 0.7}}\n",
     "stage 't' (sft) has a 'distill' block, which only distill stages use: remove it."),
    ("name: x\nstages:\n  - {kind: distill, distill: {method: sequence, alpha: 0.7}}\n",
     "distill.alpha: is ignored by sequence-level KD (method: sequence)"),
    ("name: x\ndata: {preset: imagenet}\n" + STAGE, "data.preset: 'imagenet' is not one of"),
    ("name: x\ndata: {test_fraction: 0}\nstages:\n  - {kind: evaluate}\n", "data.test_fraction is 0"),
    ("name: x\nstudent: {source: /no/such/model}\n" + STAGE, "model folder /no/such/model does not exist"),
    ("name: x\ndevice: cpu\n" + STAGE.replace("max_steps: 1", "precision: fp16-mixed"),
     "s.train.precision is fp16-mixed, which needs a CUDA GPU"),
    ("name: x\nstages: [\n", "invalid YAML"),
    ("name: x\nreport_to: [swanlab]\n" + STAGE, "report_to: 'swanlab' needs the swanlab package, which is not "
                                                "installed; run pip install swanlab"),
])
def test_bad_specs_are_refused_before_anything_starts(tmp_path, studio_home, text, sentence):
    before = _runs(studio_home)
    result = engine(studio_home, "run", _spec(tmp_path, text))
    assert result.returncode == 2, result.stderr
    assert sentence in result.stderr
    assert "Traceback" not in result.stderr
    events = events_of(result.stdout)
    assert [e["type"] for e in events] == ["error"] and sentence in events[0]["data"]["message"]
    assert _runs(studio_home) == before


def test_a_malformed_record_is_reported_with_file_and_line(tmp_path, studio_home):
    data = tmp_path / "data.jsonl"
    data.write_text('{"instruction": "a", "response": "b"}\n{"instruction": "c", "response": \n', encoding="utf-8")
    spec = _spec(tmp_path, f"name: x\nstudent: {{source: demo:student}}\ndata: {{preset: local, path: {data}}}\n"
                           + STAGE)
    result = engine(studio_home, "run", spec)
    assert result.returncode == 2
    assert f"{data}:2" in result.stderr


def test_unknown_run_and_missing_arguments(studio_home):
    result = engine(studio_home, "run", "--resume", "nope")
    assert result.returncode == 2 and "'nope' is not a run id" in result.stderr
    result = engine(studio_home, "run", "--resume", "20260101-000000-nope-abcd")
    assert result.returncode == 2 and "no run '20260101-000000-nope-abcd'" in result.stderr
    result = engine(studio_home, "runs", "show")
    assert result.returncode == 2 and "needs a run id" in result.stderr
    for command in ("run", "demo", "eval", "runs", "quantize", "inspect"):
        assert engine(studio_home, command, "--help").returncode == 0
