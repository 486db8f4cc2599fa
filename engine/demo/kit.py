"""The demo kit on disk: built once under the user data directory, then reused by every demo run.

``ensure_demo_kit()`` writes ``<data dir>/demo-kit/v1/``::

    tokenizer/          the trimmed Qwen2.5 tokenizer (+ qwen_ids.json: new id → Qwen2.5 id)
    teacher/ student/   random-init tiny Qwen2 models saved with their tokenizer (AutoModel/AutoTokenizer load them)
    teacher_bpe/        the teacher's architecture with a DIFFERENT tokenizer (a BPE trained on the demo text,
                        engine/demo/other_tokenizer.py): ``demo:teacher_bpe``, for cross-tokenizer KD
    data/instructions.jsonl  data/reasoning.jsonl   generated records (canonical schema)
    kit.json            version, seed, sizes, parameter counts, build time

It is built in a temporary folder and renamed into place, so a half-built kit is never used. Building takes a
few seconds (no full 151k-token tokenizer is built: trimming works from Qwen's BPE ranks directly).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

KIT_VERSION = "v1"
KIT_FORMAT = 6  # bump when the contents change so old kits are rebuilt
SEED = 1234
N_INSTRUCTIONS = 3000
N_REASONING = 2000

#: Text the engine wraps around records (prompt presets, GRPO tags); covered by the trimmed vocabulary.
EXTRA_TEXTS: tuple[str, ...] = (
    "Context:", "Contexto:", "Instruction:", "Instrucción:", "Question:", "Pregunta:", "Response:",
    "Respuesta:", "Answer:", "Input:", "Output:", "<think>", "</think>", "<answer>", "</answer>",
    "<think>\n", "\n</think>\n<answer>\n", "\n</answer>", "</think><answer>", "</answer>",
    "Think step by step inside <think> </think> tags, then give the final answer inside <answer> </answer> tags.",
    "Piensa paso a paso dentro de las etiquetas <think> </think> y da la respuesta final dentro de <answer> </answer>.",
    "```python\n", "\n```", "```", "You are a helpful assistant.", "Eres un asistente útil.",
)


@dataclass(frozen=True)
class DemoKit:
    """Paths of a built demo kit."""

    root: Path
    tokenizer_dir: Path
    teacher_dir: Path
    student_dir: Path
    teacher_bpe_dir: Path
    instructions_file: Path
    reasoning_file: Path

    @classmethod
    def at(cls, root: Path) -> DemoKit:
        return cls(root=root, tokenizer_dir=root / "tokenizer", teacher_dir=root / "teacher",
                   student_dir=root / "student", teacher_bpe_dir=root / "teacher_bpe",
                   instructions_file=root / "data" / "instructions.jsonl",
                   reasoning_file=root / "data" / "reasoning.jsonl")

    @property
    def info(self) -> dict[str, Any]:
        """The contents of kit.json."""
        return json.loads((self.root / "kit.json").read_text(encoding="utf-8"))


def default_root() -> Path:
    """The engine's data directory (``$COMPRESSION_STUDIO_HOME`` in tests)."""
    try:
        from engine.contract.runs import data_dir
    except ImportError:  # the run store is optional for the kit
        import platformdirs

        return Path(platformdirs.user_data_dir("compression-studio", appauthor=False))
    return data_dir()


def _is_complete(root: Path) -> bool:
    try:
        info = json.loads((root / "kit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("format") == KIT_FORMAT


def ensure_demo_kit(root: Path | None = None, *, force: bool = False) -> DemoKit:
    """The demo kit under ``root`` (default: the user data dir), built first if missing, stale or ``force``."""
    base = Path(root) if root is not None else default_root()
    target = base / "demo-kit" / KIT_VERSION
    if not force and _is_complete(target):
        return DemoKit.at(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{KIT_VERSION}-building-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the kit is ordinary user data
    try:
        _build(staging)
        _install(staging, target, force=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return DemoKit.at(target)


def _install(staging: Path, target: Path, *, force: bool) -> None:
    """Rename the finished kit into place; a concurrent builder that got there first wins."""
    if target.exists() and (force or not _is_complete(target)):
        trash = target.with_name(f".{KIT_VERSION}-old-{os.getpid()}-{time.time_ns()}")
        try:
            os.replace(target, trash)
        except OSError:
            pass
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        if not _is_complete(target):
            raise
        logger.info("another process installed the demo kit first; using it")


def coverage_texts(records: Iterable[dict]) -> Iterator[str]:
    """Every text the demo formats: each field alone and inside the chat template (for vocabulary trimming)."""
    from engine.contract.cot_template import COT_TEMPLATE, cot_completion, cot_final
    from engine.demo.tokenizer import DEFAULT_SYSTEM_PROMPT
    yield from EXTRA_TEXTS
    head = f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
    for record in records:
        fields = [record["instruction"], record["context"], record["response"], record["answer"] or "",
                  record["reasoning"] or ""]
        fields += [text for test in record["tests"] or () for text in (test["input"], test["output"])]
        yield from fields
        prompts = [record["instruction"]]
        if record["context"]:
            prompts += [f"{record['instruction']}\n\n{record['context']}", f"{record['context']}\n\n"
                        f"{record['instruction']}", f"{record['instruction']}\n\nContext: {record['context']}"]
        for prompt in prompts:
            yield f"{head}{prompt}<|im_end|>\n<|im_start|>assistant\n{record['response']}<|im_end|>\n"
        if record["reasoning"]:  # GRPO: the stage's template around the prompt, <think>/<answer> completions
            yield f"{head}{COT_TEMPLATE.format(prompt=prompts[0])}<|im_end|>\n<|im_start|>assistant\n"
            final = cot_final(record)  # what the cold start writes and GRPO's rewards parse (one home)
            yield cot_completion(record["reasoning"], final)
            yield f"<think>{record['reasoning']}</think> <answer>{final}</answer>"


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _build_bpe_teacher(kit: DemoKit, records: list[dict]) -> int:
    """The second teacher: the teacher's size, a BPE tokenizer of its own (cross-tokenizer KD); its parameters."""
    from engine.demo.models import build_tiny_model, count_parameters, padded_vocab_size
    from engine.demo.other_tokenizer import train_other_tokenizer

    tokenizer = train_other_tokenizer(coverage_texts(records))  # the texts the Qwen vocabulary is trimmed to
    model = build_tiny_model("teacher", padded_vocab_size(len(tokenizer)), SEED + 2,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(kit.teacher_bpe_dir)
    tokenizer.save_pretrained(kit.teacher_bpe_dir)
    return count_parameters(model)


def _build(root: Path) -> None:
    """Generate data, trim the tokenizer to it, build and save both models, then stamp kit.json."""
    from engine.demo.models import build_tiny_model, count_parameters, padded_vocab_size
    from engine.demo.tasks import generate_reasoning_records, generate_records
    from engine.demo.tokenizer import save_tokenizer
    from engine.demo.vocab_trim import trim_tokenizer

    started = time.perf_counter()
    kit = DemoKit.at(root)
    instructions = generate_records(N_INSTRUCTIONS, SEED)
    reasoning = generate_reasoning_records(N_REASONING, SEED + 1)
    trimmed = trim_tokenizer(coverage_texts(instructions + reasoning))
    tokenizer = trimmed.tokenizer
    save_tokenizer(tokenizer, kit.tokenizer_dir)
    new_to_qwen = sorted(trimmed.old_to_new, key=trimmed.old_to_new.__getitem__)
    (kit.tokenizer_dir / "qwen_ids.json").write_text(json.dumps(new_to_qwen), encoding="utf-8")
    ids = {"bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
           "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vocab_rows = padded_vocab_size(len(tokenizer))
    params = {}
    for offset, (role, folder) in enumerate((("teacher", kit.teacher_dir), ("student", kit.student_dir))):
        model = build_tiny_model(role, vocab_rows, SEED + offset, **ids)
        model.save_pretrained(folder)
        save_tokenizer(tokenizer, folder)
        params[role] = count_parameters(model)
    params["teacher_bpe"] = _build_bpe_teacher(kit, instructions + reasoning)
    _write_jsonl(kit.instructions_file, instructions)
    _write_jsonl(kit.reasoning_file, reasoning)
    info = {"format": KIT_FORMAT, "version": KIT_VERSION, "seed": SEED, "tokenizer": "Qwen2.5 (trimmed)",
            "vocab_size": len(tokenizer), "model_vocab_size": vocab_rows, "parameters": params,
            "records": {"instructions": len(instructions), "reasoning": len(reasoning)},
            "build_seconds": round(time.perf_counter() - started, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (root / "kit.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    logger.info("built the demo kit in %.1f s: %d tokens, teacher %d / student %d parameters",
                info["build_seconds"], len(tokenizer), params["teacher"], params["student"])
