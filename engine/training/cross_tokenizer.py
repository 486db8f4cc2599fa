"""Cross-tokenizer distillation data: the teacher's targets at the student's response positions when the two
tokenize differently (``distill.method: cross_tokenizer``; the loss is :mod:`engine.training.uld_loss`).

**Alignment by character offsets.** Each model formats the record with its own chat template, so only the
response text is common to both. Both tokenizers' offset mappings place every response token on that text; the
student's token j, starting at character a_j of the response, gets the teacher's next-token distribution at the
teacher token that contains character a_j (the last teacher token starting at or before a_j). Both then predict
the text that starts at about the same place, from about the same context. This is ULD's position-wise pairing
made robust to different token lengths; GOLD instead merges token spans until both sides end on the same
boundary, which needs the teacher's full distribution per span (no top-k cache). End-of-turn markers sit after
the response on both sides, so the student's closing token meets the teacher's. A student position past the end
of a truncated teacher row has no target (``valid`` False): it keeps its cross-entropy only.

The teacher runs once over its own tokenization of the data; its top-k + tail targets
(:func:`engine.training.teacher_targets.build_targets`) are gathered to the student's positions and kept like
the token-KD cache (ULD needs only the sorted probabilities, so the cache loses nothing the loss uses but the
tail's shape). Only single-turn records are aligned (a multi-turn chat's earlier answers are refused by name).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.context import EngineError
from engine.training_data.formatting import _prompt_text, completion_text, encode_example, prompt_messages

ALIGNMENT = "char-start-v1"  # part of the cache key: a change of the rule rebuilds the targets


def response_starts(tokenizer: Any, record: dict, preset: Any) -> list[int]:
    """Where each response token of ``record`` starts, in characters from the start of the response text (the
    tokens :func:`encode_example` puts after the prompt, in order; negative for template text before it)."""
    if record.get("messages"):
        raise EngineError(f"record {record.get('id', '?')}: distill.method cross_tokenizer aligns single-turn "
                          "records (instruction → response); this one is a multi-turn chat. Use "
                          "distill.method: sequence for chat data.")
    if not getattr(tokenizer, "is_fast", False):
        raise EngineError(f"the tokenizer {type(tokenizer).__name__} has no offset mapping (it is not a fast "
                          "tokenizer); cross-tokenizer KD needs tokenizer.json for both models.")
    messages = prompt_messages(record, preset)
    completion = completion_text(tokenizer, messages, _prompt_text(tokenizer, messages), record["response"])
    origin = max(completion.find(record["response"]), 0)
    encoded = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    return [start - origin for start, _end in encoded["offset_mapping"]]


def align_row(student_starts: list[int], teacher_starts: list[int], n_student: int, n_teacher: int,
              teacher_truncated: bool) -> list[int]:
    """For each of the student's first ``n_student`` response tokens, the index of the teacher response token
    containing its first character, among the teacher's first ``n_teacher`` (-1: none, past a truncated row)."""
    kept = teacher_starts[:n_teacher]
    out = []
    for a in student_starts[:n_student]:
        t = max(bisect.bisect_right(kept, a) - 1, 0)
        beyond = teacher_truncated and n_teacher < len(teacher_starts) and a >= teacher_starts[n_teacher]
        out.append(-1 if not kept or beyond else t)
    return out


def _response_count(labels: list[int]) -> int:
    return sum(1 for t in labels[1:] if t != -100)


def teacher_rows(student_tok: Any, teacher_tok: Any, records: list[dict], preset: Any,
                 max_length: int) -> tuple[list[dict], list[list[int]]]:
    """The teacher's own rows of ``records`` and, per record, the student → teacher position map."""
    rows, maps = [], []
    for record in records:
        t_row = encode_example(teacher_tok, record, preset, max_length)
        s_row = encode_example(student_tok, record, preset, max_length)
        t_starts = response_starts(teacher_tok, record, preset)
        n_t = _response_count(t_row["labels"])
        maps.append(align_row(response_starts(student_tok, record, preset), t_starts,
                              _response_count(s_row["labels"]), n_t, n_t < len(t_starts)))
        rows.append(t_row)
    return rows, maps


def gather_aligned(teacher_dir: Path, out: Path, maps: list[list[int]]) -> dict:
    """Write the targets at the student's positions (folder ``out``) from the teacher's own (``teacher_dir``,
    as build_targets wrote them for its rows); returns counts for the log."""
    t_off = np.load(teacher_dir / "offsets.npy")
    src = {n: np.load(teacher_dir / f"{n}.npy", mmap_mode="r") for n in ("indices", "logprobs", "tail")}
    counts = np.array([len(m) for m in maps], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    pick = np.concatenate([np.where(np.asarray(m) >= 0, t_off[r] + np.asarray(m), -1) for r, m in enumerate(maps)]
                          ) if maps and offsets[-1] else np.zeros(0, dtype=np.int64)
    valid = pick >= 0
    safe = np.where(valid, pick, 0)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "offsets.npy", offsets)
    np.save(out / "valid.npy", valid)
    for name, array in src.items():
        np.save(out / f"{name}.npy", np.asarray(array[safe]) if len(safe) and array.shape[0] else
                np.zeros((len(safe),) + array.shape[1:], dtype=array.dtype))
    return {"positions": int(len(pick)), "matched": int(valid.sum())}


def ensure_aligned_targets(ctx: Any, teacher_spec: Any, student_tok: Any, record_sets: list[list[dict]],
                           datasets: list[Any], load_teacher: Any) -> Any:
    """The teacher's targets aligned to the student's rows of ``datasets`` (built from ``record_sets``, the same
    records in the same order), cached in the run store when distill.teacher_cache.enabled, else in the stage's
    work folder; the teacher is loaded only when they must be built."""
    from engine.models.loading import load_tokenizer
    from engine.training.teacher_targets import build_targets, data_identity, ensure_targets

    d, data = ctx.stage.distill, ctx.spec.data
    from engine.core import heartbeat

    teacher_tok = load_tokenizer(teacher_spec)
    records = [r for s in record_sets for r in s]
    with heartbeat.activity(f"aligning the teacher's and the student's tokenizations of {len(records)} records"):
        rows, maps = teacher_rows(student_tok, teacher_tok, records, data.preset, data.max_length)
    expected = sum(_response_count(labels) for ds in datasets for labels in ds["labels"])
    if sum(len(m) for m in maps) != expected:
        raise EngineError("cross-tokenizer KD: the student's rows do not match the records they were made from; "
                          "this is a bug, please report it with the spec.")
    identity = data_identity([{"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows]}])

    def build(teacher: Any, out: Path, on_batch: Any) -> None:
        own = out.with_name(out.name + "-teacher")
        shutil.rmtree(own, ignore_errors=True)
        try:
            build_targets(teacher, rows, own, top_k=d.teacher_cache.top_k, temperature=d.temperature,
                          batch_size=d.teacher_cache.batch_size, device=ctx.device,
                          pad_id=teacher_tok.pad_token_id or 0, on_batch=on_batch)
            counts = gather_aligned(own, out, maps)
        finally:
            shutil.rmtree(own, ignore_errors=True)
        ctx.events.log(f"{ctx.stage.name}: teacher targets aligned by character offsets: {counts['matched']} of "
                       f"{counts['positions']} student response tokens have a teacher position")
        (out / "alignment.json").write_text(json.dumps({"rule": ALIGNMENT, **counts}), encoding="utf-8")

    root = None if d.teacher_cache.enabled else ctx.work_dir / "teacher-targets"
    return ensure_targets(ctx, teacher_spec, datasets, load_teacher, teacher_tok.pad_token_id or 0,
                          getattr(student_tok, "chat_template", None) or "",
                          extra_parts={"alignment": ALIGNMENT, "teacher_rows": identity,
                                       "teacher_template": hashlib.sha256(str(getattr(
                                           teacher_tok, "chat_template", None) or "").encode()).hexdigest()[:16]},
                          build=build, root=root)
