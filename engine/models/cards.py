"""Model cards that travel: YAML front matter the Hugging Face hub reads (``base_model``, ``library_name``,
``pipeline_tag``, ``tags``, ``datasets``) and a body with the method, the settings and the key scores; an evaluation
stage later adds (or replaces) an "Evaluation" section: ROUGE-L, retention and the model as its teacher's draft.

Nothing machine-specific goes into a card: ``base_model`` is a hub id (a model trained from an earlier stage's
folder inherits that folder's ``base_model``), else the file or folder name (local folders, GGUF files), and the
embedded demo kit's models are named ``compression-studio-demo-teacher`` / ``-student``. Stdlib + PyYAML.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.contract.vocabulary import DEMO_PRESETS

DEMO_NAMES = {"demo:teacher": "compression-studio-demo-teacher", "demo:student": "compression-studio-demo-student"}
# the demo kit's data sets as a card names them: compression-studio-demo, compression-studio-demo-reasoning
DEMO_DATASETS = {name: "compression-studio-" + name.replace("_", "-") for name in DEMO_PRESETS}
STAGE_TAGS = {"sft": ["sft"], "distill": ["distillation", "knowledge-distillation"],
              "grpo": ["grpo", "reinforcement-learning", "chain-of-thought"],
              "quantize": ["4-bit", "bitsandbytes", "quantized"]}


def adapter_note(lora: Any, quantized: bool) -> tuple[list[str], str]:
    """The card's tags and sentence for how the weights were trained: QLoRA (adapters on a 4-bit base), LoRA, or
    nothing for full fine-tuning. A QLoRA model must say QLoRA: its quality and memory are those of a 4-bit base."""
    if quantized:
        return ["qlora", "lora", "peft", "4-bit-base"], (
            f"Trained with QLoRA: LoRA adapters (rank {lora.r}, alpha {lora.alpha}) on the base model loaded in "
            "4 bits (NF4), then merged into a full-precision copy of the base, so this folder is a plain model.")
    if lora.enabled:
        return ["lora", "peft"], (f"Trained with LoRA: adapters (rank {lora.r}, alpha {lora.alpha}) merged into the "
                                  "weights, so this folder is a plain model.")
    return [], ""


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source or Path(source).exists()


def front_matter(text: str) -> dict:
    """The YAML front matter of a model card (empty when there is none or it does not parse)."""
    import yaml

    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    try:
        values = yaml.safe_load(text[4:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return values if isinstance(values, dict) else {}


def base_model_id(source: str) -> str:
    """A name for ``source`` that means something on another machine (see the module docstring)."""
    source = str(source).strip()
    if source in DEMO_NAMES:
        return DEMO_NAMES[source]
    if source.lower().endswith(".gguf"):
        return Path(source).name
    if not _looks_like_path(source):
        return source  # a hub id
    folder = Path(source).expanduser()
    card = folder / "README.md"
    if card.is_file():
        inherited = front_matter(card.read_text(encoding="utf-8", errors="replace")).get("base_model")
        if isinstance(inherited, str) and inherited:
            return inherited
    return folder.name or source


def dataset_ids(data: Any) -> list[str]:
    """The data set of a DataSpec as the hub names it, else the local file's name."""
    hub_id = getattr(data, "hub_id", "") or ""
    if hub_id:
        return [hub_id]
    if data.preset in DEMO_DATASETS:
        return [DEMO_DATASETS[data.preset]]
    from engine.contract.data.presets import get_preset

    preset = get_preset(data.preset)
    if preset.on_hub:
        return [preset.hub_id]  # a local copy of a hub preset is still that data set
    return [Path(str(data.path)).name] if str(data.path).strip() else []


def portable_settings(settings: dict) -> dict:
    """Settings for a card with local paths cut to their file names."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out[key] = portable_settings(value)
        elif key in ("path", "source") and isinstance(value, str) and value:
            out[key] = base_model_id(value) if key == "source" else Path(value).name
        else:
            out[key] = value
    return out


def model_card(title: str, base: str, how: str, settings: dict, scores: dict | None = None, *,
               tags: list[str] | None = None, datasets: list[str] | None = None, relation: str = "") -> str:
    """A model card: front matter, what the model is, how it was made, with which settings, what it scored."""
    import yaml

    base_id = base_model_id(base)
    meta: dict[str, Any] = {"base_model": base_id}
    if relation:
        meta["base_model_relation"] = relation  # e.g. quantized, finetune (the hub's vocabulary)
    meta.update({"library_name": "transformers", "pipeline_tag": "text-generation",
                 "tags": ["compression-studio", *(tags or [])]})
    if datasets:
        meta["datasets"] = list(datasets)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {title}", "", f"Made with Compression Studio from `{base_id}`.", "", "## How it was made", "", how,
             "", "## Settings", "", "```json", json.dumps(portable_settings(settings), indent=2, default=str), "```",
             ""]
    if scores:
        lines += ["## Scores", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scores.items()]
        lines.append("")
    lines += ["Load it with plain transformers:", "", "```python",
              "from transformers import AutoModelForCausalLM, AutoTokenizer",
              "model = AutoModelForCausalLM.from_pretrained(PATH)", "tokenizer = AutoTokenizer.from_pretrained(PATH)",
              "```", ""]
    return "\n".join(lines)


EVALUATION_HEADING = "## Evaluation"


def evaluation_section(scores: dict, reference: str, n: int, data: str) -> str:
    """The card's Evaluation section for one model's eval.json entry (``scores``), measured against ``reference``
    on ``n`` held-out ``data`` records."""
    def pct(value: Any) -> str:
        return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "–"

    rows = [("ROUGE-L", f"{scores['rougeL']:.4f}" if isinstance(scores.get("rougeL"), float) else "–"),
            ("exact match", f"{scores['exact_match']:.4f}" if isinstance(scores.get("exact_match"), float) else "–"),
            (f"retention (ROUGE-L ÷ {reference}'s)", pct(scores.get("retention")))]
    draft = scores.get("draft") or {}
    if draft:
        speedup = draft.get("speedup")
        rows += [(f"draft acceptance (as {reference}'s draft model)", pct(draft.get("acceptance"))),
                 ("greedy speed-up with it as the draft", f"{speedup:.2f}×" if isinstance(speedup, float) else "–")]
    lines = [EVALUATION_HEADING, "", f"On {n} held-out `{data}` records.", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    if draft:
        lines += ["", f"Draft acceptance: the share of this model's draft tokens `{reference}` keeps in speculative "
                  f"(assisted) greedy decoding, on {draft.get('prompts')} prompts; speed-up: `{reference}`'s "
                  "tokens/s with this model as its draft ÷ without."]
    return "\n".join(lines) + "\n"


def with_evaluation(card: str, section: str) -> str:
    """``card`` with its Evaluation section replaced by ``section`` (added before the loading note if absent)."""
    start = card.find("\n" + EVALUATION_HEADING + "\n")
    if start >= 0:
        end = card.find("\n## ", start + 1)
        tail = card[end + 1:] if end >= 0 else _loading_note(card[start + 1:])
        return card[:start + 1] + section + ("\n" + tail if tail else "")
    note = card.find("Load it with plain transformers:")
    if note < 0:
        return card.rstrip("\n") + "\n\n" + section
    return card[:note] + section + "\n" + card[note:]


def _loading_note(text: str) -> str:
    note = text.find("Load it with plain transformers:")
    return text[note:] if note >= 0 else ""
