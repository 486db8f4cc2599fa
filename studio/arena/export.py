"""Export of every pane's conversation to Markdown (to read or paste into a report) and JSON (to reload or
analyse), with the models, the sampling settings and each answer's numbers. Stdlib only."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from studio.arena.arena_state import ArenaSession, PaneState


def _pane_dict(session: ArenaSession, pane: PaneState) -> dict:
    return {"pane": pane.key, "model": pane.name, "source": pane.choice.source if pane.choice else "",
            "size": pane.size, "precision": pane.precision, "load_state": pane.load_state, "error": pane.error,
            "reference": pane.key == session.reference_key, "loaded": pane.info,
            "turns": [{k: v for k, v in asdict(t).items() if k != "started"} for t in pane.turns]}


def to_json(session: ArenaSession) -> dict:
    """The whole arena as plain data."""
    return {"exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "system_prompt": session.system_prompt, "sampling": session.sampling.to_dict(),
            "reference": session.pane(session.reference_key).name if session.reference_key else None,
            "panes": [_pane_dict(session, p) for p in session.panes if p.choice is not None]}


def _answer_text(answer: str) -> str:
    """The answer as Markdown shows it: an answer of only whitespace would read as an empty line."""
    if not answer:
        return "(no answer)"
    return answer if answer.strip() else f"(only whitespace: {len(answer)} characters)"


def to_markdown(session: ArenaSession) -> str:
    """The arena as a readable document: one section per model, each turn with its answer and numbers."""
    data = to_json(session)
    sampling = session.sampling
    mode = "greedy" if sampling.greedy else f"temperature {sampling.temperature}, top-p {sampling.top_p}"
    lines = [f"# Chat arena — {data['exported']}", "",
             f"- System prompt: {session.system_prompt or '(none)'}",
             f"- Sampling: {mode}, at most {sampling.max_new_tokens} new tokens, seed {sampling.seed}",
             f"- ROUGE-L reference: {data['reference'] or '(none)'}", ""]
    reference = data["reference"] or "reference"
    for pane in (p for p in session.panes if p.choice is not None):
        marker = " (reference)" if pane.key == session.reference_key else ""
        lines += [f"## {pane.name}{marker}", "", f"`{pane.choice.source}` — {pane.size}, {pane.precision}", ""]
        if pane.error:
            lines += [f"> Could not load: {pane.error}", ""]
        for number, turn in enumerate(pane.turns, start=1):
            lines += [f"**User ({number}):** {turn.user}", "", f"**{pane.name}:** {_answer_text(turn.answer)}", ""]
            stats = turn.stats(reference, rouge_digits=3, every_state=True)
            if stats:
                lines += [f"*{stats}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_exports(session: ArenaSession, path: str | Path) -> tuple[Path, Path]:
    """Write ``<path>.md`` and ``<path>.json`` (any suffix of ``path`` is replaced); returns both paths."""
    base = Path(path)
    if base.suffix.lower() in (".md", ".json"):
        base = base.with_suffix("")
    md_path, json_path = base.with_suffix(".md"), base.with_suffix(".json")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(to_markdown(session), encoding="utf-8")
    json_path.write_text(json.dumps(to_json(session), indent=2, ensure_ascii=False), encoding="utf-8")
    return md_path, json_path
