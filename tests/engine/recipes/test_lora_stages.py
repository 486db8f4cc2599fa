"""LoRA and QLoRA in every training stage: SFT → token KD → sequence KD → on-policy KD → GRPO, each stage training
adapters on the previous stage's saved model. Every stage must save a plain transformers folder (adapters merged;
QLoRA's into a full-precision copy of the base, not into 4-bit weights) that the next stage loads."""
from __future__ import annotations

import io
import json
import os
import sys
import threading
from pathlib import Path

import pytest
import torch

from engine.contract.protocol import EventWriter
from engine.contract.runs import RunStore
from engine.contract.spec import RunSpec, build

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py

TRAIN = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2, "warmup_ratio": 0.0, "scheduler": "constant",
         "save_steps": 1000, "logging_steps": 1}
LORA = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}
QLORA = {**LORA, "quantized_base": True}


def _stage(kind: str, name: str, model: str, lora: dict, **extra) -> dict:
    # an sft stage generates nothing: it has no generation block
    generation = {} if kind == "sft" else {"generation": {"max_new_tokens": 6, "batch_size": 8}}
    return {"kind": kind, "name": name, "model": model, "train": {**TRAIN, "lora": lora}, **generation, **extra}


def _ends_early(folder: Path) -> Path:
    """Point the end-of-turn row of the (tied) output layer along the model's typical last hidden state, so it
    ends some sampled answers early: GRPO's length reward then differs inside a group and has something to
    learn from (a random tiny model never ends, so every completion would earn the same reward). Only the
    end-of-turn row changes, which no LoRA adapter touches."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Think step by step. What is 3 + 4?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        hidden = model(**ids, output_hidden_states=True).hidden_states[-1][0].mean(0)  # [H]
        model.get_output_embeddings().weight[tokenizer.eos_token_id] = hidden * 6.0 / hidden.pow(2).sum()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run through all five training stages on a tiny Qwen2 (teacher and student share its tokenizer). Before
    GRPO, the on-policy stage's saved model is made to end some answers early (see ``_ends_early``)."""
    from engine.runner.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("lora")
    teacher = make_tiny_model(root / "teacher", seed=1)
    student = make_tiny_model(root / "student", seed=2)
    distill = {"max_new_tokens": 6}
    stages = [
        _stage("sft", "sft_q", "student", QLORA),
        _stage("distill", "token_l", "sft_q", LORA, distill={**distill, "method": "token"}),
        _stage("distill", "seq_q", "token_l", QLORA, distill={**distill, "method": "sequence"}),
        _stage("distill", "onpol_l", "seq_q", LORA, distill={**distill, "method": "on_policy"}),
        _stage("grpo", "grpo_q", "onpol_l", QLORA, max_eval_samples=2,
               grpo={"num_generations": 4, "max_completion_length": 6, "quantized_base": True,
                     "rewards": [{"name": "length", "weight": 1.0}], "length_range": [2, 4]})]
    base = {"name": "lora-everywhere", "teacher": {"source": str(teacher)}, "student": {"source": str(student)},
            "device": "cpu", "data": {"preset": "demo_reasoning", "max_samples": 24, "max_length": 96,
                                      "validation_fraction": 0.15, "test_fraction": 0.15}}
    old = os.environ.get("COMPRESSION_STUDIO_HOME")
    os.environ["COMPRESSION_STUDIO_HOME"] = str(root / "home")
    try:
        store = RunStore(root / "runs")
        paths = store.create("lora-everywhere", json.dumps({}))
        out = io.StringIO()
        events = EventWriter(paths.id, stream=out)
        status = run_pipeline(build(RunSpec, {**base, "stages": stages[:4]}), paths, events, store,
                              threading.Event(), "cpu")
        if status == "finished":  # the same run resumed: the finished stages are skipped, GRPO runs
            _ends_early(paths.model("onpol_l"))
            status = run_pipeline(build(RunSpec, {**base, "stages": stages}), paths, events, store,
                                  threading.Event(), "cpu")
    finally:
        if old is None:
            os.environ.pop("COMPRESSION_STUDIO_HOME", None)
        else:
            os.environ["COMPRESSION_STUDIO_HOME"] = old
    return status, paths, out.getvalue(), student


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.float() for k, v in AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}


def test_every_stage_saves_a_plain_merged_folder_the_next_stage_loads(run):
    status, paths, events, student = run
    errors = [json.loads(line)["data"] for line in events.splitlines() if '"type": "error"' in line]
    assert status == "finished", errors
    previous = student
    for stage in ("sft_q", "token_l", "seq_q", "onpol_l", "grpo_q"):
        folder = paths.model(stage)
        assert not (folder / "adapter_config.json").exists(), stage  # no peft folder: adapters were merged
        config = json.loads((folder / "config.json").read_text())
        assert "quantization_config" not in config, stage  # QLoRA merged into a full-precision base
        before, after = _weights(previous), _weights(folder)
        assert set(after) == set(before), stage
        moved = [k for k in before if k.endswith("proj.weight") and not torch.allclose(before[k], after[k])]
        assert moved, f"{stage}: no merged weight moved"
        untouched = [k for k in before if "norm" in k]
        assert all(torch.equal(before[k], after[k]) for k in untouched), stage  # only the adapted layers
        previous = folder


def test_qlora_merges_into_the_full_precision_base_not_the_4bit_weights(run):
    """Merged into the full-precision base, a layer moves by exactly the adapters' product B·A: a matrix of rank
    ≤ r. Merged into de-quantized 4-bit weights it would also carry the (full-rank) quantization error."""
    _, paths, _, student = run
    before, after = _weights(student), _weights(paths.model("sft_q"))
    for name in ("model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight"):
        singular = torch.linalg.svdvals((after[name] - before[name]).double())
        assert singular[0] > 0 and singular[LORA["r"]] < 1e-4 * singular[0], (name, singular[:6])


def test_kd_stages_report_cross_entropy_beside_their_own_loss(run):
    _, paths, events, _ = run
    metrics: dict[str, set] = {}
    for line in events.splitlines():
        event = json.loads(line)
        if event["type"] == "metric":
            metrics.setdefault(event["data"]["stage"], set()).update(event["data"]["values"])
    assert "eval/ce" in metrics["sft_q"] and "eval/kd_loss" not in metrics["sft_q"]
    assert {"eval/ce", "eval/kd_loss", "eval/kd_divergence"} <= metrics["token_l"]
    assert "eval/ce" in metrics["seq_q"] and "eval/ce" in metrics["onpol_l"]
    done = json.loads((paths.stage_dir("token_l") / "done.json").read_text())
    assert done["scores"]["eval/ce"] != done["scores"]["eval/kd_loss"]



def test_cards_say_qlora_or_lora_in_tags_and_prose(run):
    from engine.models.cards import front_matter

    _, paths, _, _ = run
    for stage, method in (("sft_q", "QLoRA"), ("token_l", "LoRA"), ("seq_q", "QLoRA"), ("grpo_q", "QLoRA")):
        card = (paths.model(stage) / "README.md").read_text()
        tags = front_matter(card)["tags"]
        assert ("qlora" in tags) == (method == "QLoRA") and "lora" in tags, (stage, tags)
        assert f"Trained with {method}:" in card, stage
