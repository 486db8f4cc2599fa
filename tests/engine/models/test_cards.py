"""Model cards and configs that travel: front matter with a base model id that means something on another machine
(hub id, file or folder name, the demo kit's name, inherited through earlier stages), and saved configs with the
generation cache switched back on, as plain transformers reads them."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.models.cards import base_model_id, dataset_ids, front_matter, model_card
from engine.contract.spec import DataSpec


def test_base_model_ids_never_carry_a_machine_path(tmp_path: Path) -> None:
    assert base_model_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert base_model_id("demo:student") == "compression-studio-demo-student"
    assert base_model_id(str(tmp_path / "models" / "qwen2.5-0.5b-q8_0.gguf")) == "qwen2.5-0.5b-q8_0.gguf"
    folder = tmp_path / "my-local-model"
    folder.mkdir()
    assert base_model_id(str(folder)) == "my-local-model"
    assert base_model_id("./my-local-model") == "my-local-model"
    # an earlier stage's output carries its own card: a later stage inherits the real base model
    (folder / "README.md").write_text(model_card("t", "Qwen/Qwen2.5-3B-Instruct", "SFT.", {}))
    assert base_model_id(str(folder)) == "Qwen/Qwen2.5-3B-Instruct"


def test_card_front_matter_and_body(tmp_path: Path) -> None:
    data = DataSpec(preset="local", path=str(tmp_path / "secret" / "my_chats.jsonl"))
    card = model_card("run: student_kd", str(tmp_path / "runs" / "x" / "models" / "student_sft"), "Token-level KD.",
                      {"data": {"preset": "local", "path": data.path}}, {"eval/rougeL": 0.4834},
                      tags=["distillation", "knowledge-distillation"], datasets=dataset_ids(data), relation="finetune")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta == front_matter(card)
    assert meta["base_model"] == "student_sft" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-generation" and meta["datasets"] == ["my_chats.jsonl"]
    assert {"distillation", "knowledge-distillation"} <= set(meta["tags"])
    assert "Token-level KD." in card and "| eval/rougeL | 0.4834 |" in card
    assert str(tmp_path) not in card  # neither in the front matter nor in the settings block


@pytest.mark.parametrize(("data", "expected"), [
    (DataSpec(preset="dolly_en"), ["databricks/databricks-dolly-15k"]),
    (DataSpec(preset="dolly_en", path="/data/dolly.jsonl"), ["databricks/databricks-dolly-15k"]),
    (DataSpec(preset="demo"), ["compression-studio-demo"]),
])
def test_dataset_ids(data: DataSpec, expected: list[str]) -> None:
    assert dataset_ids(data) == expected


def test_saved_config_has_the_generation_cache_on(tmp_path: Path, one_thread) -> None:
    from data_helpers import tiny_qwen2, tiny_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from engine.models.loading import save_model

    tokenizer = tiny_tokenizer()
    model = tiny_qwen2(tokenizer)
    model.config.use_cache = False  # as training leaves it (gradient checkpointing, TRL)
    model.generation_config.use_cache = False
    out = save_model(model, tokenizer, tmp_path / "model", model_card("m", "demo:student", "SFT.", {}))
    assert AutoConfig.from_pretrained(out).use_cache is True
    assert GenerationConfig.from_pretrained(out).use_cache is True
    assert AutoModelForCausalLM.from_pretrained(out).config.use_cache is True
    assert front_matter((out / "README.md").read_text())["base_model"] == "compression-studio-demo-student"


def test_the_evaluation_section_shows_draft_acceptance_and_is_replaced_not_repeated():
    from engine.models.cards import evaluation_section, model_card, with_evaluation

    card = model_card("run: kd", "Qwen/Qwen2.5-0.5B-Instruct", "KD.", {}, {"eval/ce": 1.5})
    scores = {"rougeL": 0.4123, "exact_match": 0.25, "retention": 0.931,
              "draft": {"acceptance": 0.612, "speedup": 1.314, "prompts": 8}}
    once = with_evaluation(card, evaluation_section(scores, "teacher", 40, "demo"))
    assert "| ROUGE-L | 0.4123 |" in once and "| retention (ROUGE-L ÷ teacher's) | 93.1 % |" in once
    assert "| draft acceptance (as teacher's draft model) | 61.2 % |" in once
    assert "| greedy speed-up with it as the draft | 1.31× |" in once
    assert once.index("## Evaluation") < once.index("Load it with plain transformers:")
    twice = with_evaluation(once, evaluation_section({**scores, "rougeL": 0.5}, "teacher", 40, "demo"))
    assert twice.count("## Evaluation") == 1 and "| ROUGE-L | 0.5000 |" in twice and "0.4123" not in twice
    assert twice.count("Load it with plain transformers:") == 1 and "## Scores" in twice
    plain = evaluation_section({"rougeL": 0.3, "exact_match": 0.0, "retention": None}, "teacher", 5, "demo")
    assert "draft" not in plain and "| retention (ROUGE-L ÷ teacher's) | – |" in plain


def test_adapter_note_names_qlora_lora_or_nothing():
    from engine.contract.spec import LoraSpec
    from engine.models.cards import adapter_note

    tags, how = adapter_note(LoraSpec(enabled=False, quantized_base=True, r=8, alpha=16), quantized=True)
    assert tags[0] == "qlora" and "lora" in tags and how.startswith("Trained with QLoRA") and "rank 8" in how
    tags, how = adapter_note(LoraSpec(enabled=True), quantized=False)
    assert tags == ["lora", "peft"] and how.startswith("Trained with LoRA:")
    assert adapter_note(LoraSpec(), quantized=False) == ([], "")
