"""Cross-tokenizer distillation end to end: the pair's verdict from tokenizers only, the alignment of two
tokenizations by character offsets, and a demo run from the BPE teacher (another tokenizer) into the Qwen-tokenized
student through the run command — refused for token KD with the reason, trained with ULD, targets cached."""
from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import pytest

from engine.contract.model_info import ModelInfo, kd_pairing
from engine.training.cross_tokenizer import align_row

SPEC = """name: cross-tok
teacher: {source: "demo:teacher_bpe"}
student: {source: "demo:student"}
data: {preset: demo, max_samples: 40, max_length: 128}
stages:
  - kind: distill
    name: kd
    model: student
    teacher: teacher
    train: {max_steps: 2, batch_size: 8, logging_steps: 1}
    distill: {method: %s, teacher_cache: {top_k: 16}}
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built_kit(tmp_path_factory) -> Path:
    """The demo kit built once for the module (a build takes seconds; each test copies it into its home)."""
    from engine.demo.kit import ensure_demo_kit

    root = tmp_path_factory.mktemp("kit")
    ensure_demo_kit(root)
    return root / "demo-kit"


@pytest.fixture
def home(tmp_path, monkeypatch, built_kit) -> Path:
    import shutil

    path = tmp_path / "home"
    shutil.copytree(built_kit, path / "demo-kit")
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(path))
    monkeypatch.setattr("engine.cli.run.listen_for_cancel", lambda cancel: None)  # no stdin thread, no SIGINT
    return path


def test_pairing_verdicts_from_vocabulary_digests() -> None:
    same = kd_pairing(ModelInfo(vocab_size=64, tokenizer_tokens=60, vocab_digest="a"),
                      ModelInfo(vocab_size=64, tokenizer_tokens=60, vocab_digest="a"))
    padded = kd_pairing(ModelInfo(vocab_size=80, tokenizer_tokens=60, vocab_digest="a"),
                        ModelInfo(vocab_size=64, tokenizer_tokens=60, vocab_digest="a"))
    other = kd_pairing(ModelInfo(vocab_size=64, tokenizer_tokens=60, vocab_digest="a"),
                       ModelInfo(vocab_size=64, tokenizer_tokens=60, vocab_digest="b"))
    assert (same.kind, padded.kind, other.kind) == ("same", "placeholder", "different")
    assert "token" in same.methods and "token" in padded.methods
    assert other.methods == ("cross_tokenizer", "sequence") and "cross-tokenizer" in other.reason
    assert kd_pairing(ModelInfo(), None).kind == "unknown"


def test_alignment_picks_the_teacher_token_holding_the_first_character() -> None:
    # response "12 apples": student "1","2"," apples" (starts 0,1,2); teacher "12"," app","les" (0,2,6)
    assert align_row([0, 1, 2, 9], [0, 2, 6, 9], 4, 4, False) == [0, 0, 1, 3]
    # a teacher row truncated after "12"," app": the student token past them (at 9) has no target
    assert align_row([0, 1, 2, 9], [0, 2, 6, 9], 4, 2, True) == [0, 0, 1, -1]
    assert align_row([-5, 0], [0, 3], 2, 2, False) == [0, 0]  # template text before the response: first token


def test_identical_tokenizers_align_each_token_with_itself(home) -> None:
    """One tokenizer on both sides: every student response token gets the teacher's prediction at the very same
    position, so the aligned targets are the token-KD cache's own (and ULD then compares the same positions)."""
    from engine.demo.kit import ensure_demo_kit
    from engine.training.cross_tokenizer import teacher_rows
    from engine.training_data.loading import load_records
    from engine.contract.spec import DataSpec
    from transformers import AutoTokenizer

    kit = ensure_demo_kit()
    qwen, bpe = (AutoTokenizer.from_pretrained(d) for d in (kit.student_dir, kit.teacher_bpe_dir))
    records = load_records(DataSpec(preset="demo", max_samples=30))
    rows, maps = teacher_rows(qwen, qwen, records, "demo", 48)  # 48 tokens: some rows are truncated
    assert all(m == list(range(len(m))) for m in maps) and any(len(r["input_ids"]) == 48 for r in rows)
    _, maps = teacher_rows(qwen, bpe, records, "demo", 128)  # another tokenizer: monotone, never backwards
    assert all(all(b >= a for a, b in zip(m, m[1:])) and min(m) >= 0 for m in maps)
    assert any(len(set(m)) < len(m) for m in maps)  # the BPE teacher has longer tokens: some are shared


def _run(spec: Path, capsys, caplog) -> tuple[int, list, str]:
    from engine.cli.run import cmd_run

    caplog.clear()
    code = cmd_run(argparse.Namespace(resume=None, spec=str(spec), check=False))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err + caplog.text


def test_demo_bpe_teacher_distils_into_the_qwen_student(tmp_path, home, capsys, caplog) -> None:
    caplog.set_level(logging.INFO, logger="engine")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC % "token", encoding="utf-8")
    code, events, logs = _run(spec, capsys, caplog)
    assert code == 2 and [e["type"] for e in events] == ["error"]  # refused before any run folder
    assert "kd.distill.method: token is not possible" in logs and "cross_tokenizer or sequence" in logs

    spec.write_text(SPEC % "cross_tokenizer", encoding="utf-8")
    code, events, logs = _run(spec, capsys, caplog)
    assert code == 0, logs[-3000:]
    messages = [e["data"]["message"] for e in events if e["type"] == "log"]
    assert any("Different tokenizers" in m for m in messages)  # the reason, in the run's events
    found = next(re.search(r"(\d+) of (\d+) student response tokens", m) for m in messages if "student response" in m)
    matched, total = int(found[1]), int(found[2])
    assert total > 0 and matched >= 0.95 * total
    metrics = [e["data"]["values"] for e in events if e["type"] == "metric" and "kd/divergence" in e["data"]["values"]]
    assert metrics and all(0 < m["kd/divergence"] <= 2 for m in metrics)  # ULD is an L1 distance of probabilities
    run = next((home / "runs").iterdir())
    targets = list((run / "work" / "kd" / "teacher-targets").iterdir())  # cache off: kept with the stage
    assert len(targets) == 1 and (targets[0] / "valid.npy").exists()
    card = (run / "models" / "kd" / "README.md").read_text(encoding="utf-8")
    assert "Cross-tokenizer knowledge distillation" in card


def test_demo_cross_tokenizer_variant_prints_its_spec(home, capsys) -> None:
    from engine.cli.run import cmd_demo

    assert cmd_demo(argparse.Namespace(quick=True, print_spec=True, cross_tokenizer=True)) == 0
    text = capsys.readouterr().err
    assert "demo:teacher_bpe" in text and "method: cross_tokenizer" in text and "method: sequence" in text


def test_gguf_teacher_with_another_tokenizer_uses_the_cache(tmp_path, home, capsys, caplog) -> None:
    """A GGUF teacher (the BPE teacher written as llama.cpp's converter does) pairs by its own tokenizer read from
    the file, and its aligned targets go to the run store's cache (teacher_cache.enabled), keyed by its weights."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from quant_helpers import write_gguf

    from engine.demo.kit import ensure_demo_kit

    caplog.set_level(logging.INFO, logger="engine")
    gguf = write_gguf(ensure_demo_kit().teacher_bpe_dir, tmp_path / "bpe-teacher.gguf")
    spec = tmp_path / "spec.yaml"
    text = (SPEC % "cross_tokenizer").replace("demo:teacher_bpe", str(gguf)).replace("top_k: 16", "top_k: 16, "
                                                                                       "enabled: true")
    spec.write_text(text, encoding="utf-8")
    code, events, logs = _run(spec, capsys, caplog)
    assert code == 0, logs[-3000:]
    assert any("Different tokenizers" in e["data"]["message"] for e in events if e["type"] == "log")
    caches = list((home / "teacher-targets").iterdir())
    assert len(caches) == 1 and (caches[0] / "valid.npy").exists()
    assert json.loads((caches[0] / "meta.json").read_text())["parts"]["alignment"] == "char-start-v1"
