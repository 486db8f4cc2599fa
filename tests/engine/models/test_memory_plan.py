"""Tests of engine.models.memory_plan: per-stage peaks from configs only, what each knob changes, the refusal sentence
with a change that really fits, the preflight CLI, and a run refused before its folder exists."""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pytest

from engine.core.context import EngineError
from engine.contract.spec import RunSpec, build
from engine.models.memory_plan import KNOWN_CONFIGS, _changes, check_plan, plan, stage_peak

GB = 10**9


def _paper(**train) -> RunSpec:
    return build(RunSpec, {
        "name": "paper", "teacher": {"source": "Qwen/Qwen2.5-3B-Instruct"},
        "student": {"source": "Qwen/Qwen2.5-0.5B-Instruct"}, "data": {"preset": "dolly_en", "max_length": 512},
        "stages": [{"kind": "sft", "name": "teacher_sft", "model": "teacher", "train": {"batch_size": 8, **train}},
                   {"kind": "distill", "name": "kd", "model": "student", "teacher": "teacher_sft",
                    "train": {"batch_size": 8, **train}},
                   {"kind": "evaluate", "name": "eval", "models": {"teacher": "teacher_sft", "kd": "kd"}}]})


def test_parts_follow_the_knobs() -> None:
    spec = _paper()
    sft, kd = spec.stages[0], spec.stages[1]
    peak, parts = stage_peak(spec, sft, "cuda")
    assert parts["optimizer"] == pytest.approx(8 * 3.09e9, rel=0.02)  # AdamW: two fp32 moments per parameter
    assert peak > 60 * GB
    ckpt = copy.deepcopy(spec)
    ckpt.stages[0].train.gradient_checkpointing = True
    assert stage_peak(ckpt, ckpt.stages[0], "cuda")[1]["activations"] < parts["activations"] / 5
    lora = copy.deepcopy(spec)
    lora.stages[0].train.lora.enabled = True
    assert stage_peak(lora, lora.stages[0], "cuda")[1]["optimizer"] < parts["optimizer"] / 50
    live = stage_peak(spec, kd, "cuda")[1]
    cached = copy.deepcopy(spec)
    cached.stages[1].distill.teacher_cache.enabled = True
    assert "teacher" in live and "teacher" not in stage_peak(cached, cached.stages[1], "cuda")[1]
    bigger = copy.deepcopy(spec)
    bigger.stages[1].train.batch_size = 16
    assert stage_peak(bigger, bigger.stages[1], "cuda")[0] > stage_peak(spec, kd, "cuda")[0]


def test_refusal_names_the_stage_and_a_change_that_fits() -> None:
    spec = _paper()
    with pytest.raises(EngineError) as err:
        check_plan(spec, "cuda", 48 * GB)
    message = str(err.value)
    assert message.startswith("stage teacher_sft needs") and "≈48.0 GB is available" in message
    report = plan(spec, "cuda", 48 * GB)
    fix = report["stages"][0]["fix"]["change"]
    assert fix in message
    # applying the suggested change makes that stage fit
    index = 0
    fixed = copy.deepcopy(spec)
    for text, apply in _changes(spec, spec.stages[index]):
        if text in fix.split("; "):
            apply(fixed, fixed.stages[index])
    assert stage_peak(fixed, fixed.stages[index], "cuda")[0] <= 48 * GB
    assert plan(spec, "cuda", 200 * GB)["fits"]


def test_preflight_cli_prints_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from engine.cli.tools import cmd_preflight
    from engine.contract.spec import dump_spec

    path = tmp_path / "paper.yaml"
    dump_spec(_paper(), path)
    code = cmd_preflight(argparse.Namespace(spec=str(path), device="cuda", memory_gb=24.0))
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and report["fits"] is False and report["available_bytes"] == 24 * GB
    assert [s["stage"] for s in report["stages"]] == ["teacher_sft", "kd", "eval"]
    assert report["refusal"].startswith("stage teacher_sft")
    assert cmd_preflight(argparse.Namespace(spec=str(path), device="cuda", memory_gb=500.0)) == 0


def test_a_run_that_cannot_fit_is_refused_before_its_folder_exists(tmp_path: Path, monkeypatch, capsys) -> None:
    from engine.cli.run import cmd_run

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    folder = tmp_path / "qwen7b-config-only"  # a config and no weights: nothing could be read anyway
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**KNOWN_CONFIGS["qwen2.5-7b"], "architectures":
                                                    ["Qwen2ForCausalLM"]}))
    (folder / "tokenizer_config.json").write_text("{}")  # the preflight wants a tokenizer before it plans memory
    spec = tmp_path / "big.yaml"
    spec.write_text(f"name: big\nstudent: {{source: '{folder}'}}\ndata: {{preset: demo, max_samples: 40}}\n"
                    "device: cpu\nstages:\n  - {kind: sft, name: sft, model: student}\n")
    monkeypatch.setattr("engine.models.memory.available_bytes", lambda device="cpu": 16 * GB)
    assert cmd_run(argparse.Namespace(resume=None, spec=str(spec))) == 2
    err = capsys.readouterr().err
    assert "stage sft needs" in err and "cheapest change that fits" in err and "QLoRA" in err
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())
