"""The arena's Qt-free logic: ROUGE-L asked of the engine (engine.evaluation.scores answers here), turns and scores,
blind
rounds and votes, export, presets from a run's held-out data, the model catalog, and that importing the arena
pulls in no torch."""
from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from engine.evaluation.scores import rouge_l
from studio.arena import catalog, votes
from studio.arena import prompt_presets as presets
from studio.arena.catalog import ModelChoice
from studio.arena.export import to_markdown, write_exports
from studio.arena.arena_state import ArenaSession, PaneState

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ModelChoice(label="teacher", source="demo:teacher", role="teacher")
STUDENT = ModelChoice(label="student", source="demo:student", role="student")


def answer_scores(session: ArenaSession) -> int:
    """Play the chat service: answer every queued score with the engine's own ROUGE-L; how many were asked."""
    requests = session.take_score_requests()
    for request in requests:
        session.on_score(request.score_id, rouge_l(request.prediction, request.reference))
    return len(requests)


def test_scores_are_asked_once_and_a_stale_answer_is_dropped() -> None:
    session, _ = _session_with_two_answers()
    student = session.pane("pane2")
    assert student.turns[0].rouge_l is None  # asked, not answered yet
    [request] = session.take_score_requests()
    assert (request.key, request.prediction, request.reference) == ("pane2", "2 + 3 is 5.", "2 + 3 = 5.")
    assert session.take_score_requests() == []  # handed out once
    assert session.on_score(request.score_id, 0.75) == "pane2" and student.turns[0].rouge_l == 0.75
    assert session.on_score(request.score_id, 0.1) is None  # answered already
    session.set_reference("pane2")  # the teacher is now scored; the student (the reference) is not
    assert student.turns[0].rouge_l is None and len(session.take_score_requests()) == 1
    session.set_reference("pane1")  # back: the answer is known, nothing to ask
    assert student.turns[0].rouge_l == 0.75 and session.take_score_requests() == []
    session.set_reference("pane2")
    [stale] = session.take_score_requests()
    session.set_reference(None)
    assert session.on_score(stale.score_id, 0.5) is None and session.pane("pane1").turns[0].rouge_l is None


def _session_with_two_answers() -> tuple[ArenaSession, list[tuple[str, str, list[dict]]]]:
    session = ArenaSession(pane_count=2, rng=random.Random(1))
    session.set_model("pane1", TEACHER)
    session.set_model("pane2", STUDENT)
    session.on_loaded("pane1", {"parameters": 3_100_000, "dtype": "torch.float32", "quantized": False})
    session.on_loaded("pane2", {"parameters": 400_000, "dtype": "torch.float32", "quantized": True})
    requests = session.start_turn("What is 2 + 3?")
    for (_key, request_id, _), text in zip(requests, ("2 + 3 = 5.", "2 + 3 is 5.")):
        for piece in text.split(" "):
            session.on_token(request_id, piece + " ")
        session.on_done(request_id, {"status": "finished", "completion_tokens": 4, "ttft_s": 0.1,
                                     "tokens_per_s": 20.0, "text": text})
    return session, requests


def test_turns_stream_and_score_against_the_teacher() -> None:
    session, requests = _session_with_two_answers()
    assert [r[0] for r in requests] == ["pane1", "pane2"]
    assert requests[0][2] == [{"role": "system", "content": session.system_prompt},
                              {"role": "user", "content": "What is 2 + 3?"}]
    teacher, student = session.pane("pane1"), session.pane("pane2")
    assert teacher.size == "3.1 M params"
    assert session.reference_key == "pane1"  # the first teacher becomes the reference
    assert teacher.turns[0].rouge_l is None
    assert answer_scores(session) == 1
    assert student.turns[0].rouge_l == pytest.approx(rouge_l("2 + 3 is 5.", "2 + 3 = 5."))
    assert 0 < student.turns[0].rouge_l < 1
    assert student.size == "400 k params" and student.precision == "4-bit" and teacher.precision == "float32"
    # multi-turn: the second request carries the first answer of the same pane
    second = session.start_turn("And 3 + 4?")
    assert second[1][2][-3:] == [{"role": "user", "content": "What is 2 + 3?"},
                                 {"role": "assistant", "content": "2 + 3 is 5."},
                                 {"role": "user", "content": "And 3 + 4?"}]
    assert session.busy and sorted(session.stop_all()) == sorted(r[1] for r in second)
    with pytest.raises(RuntimeError):
        session.start_turn("too early")
    session.set_reference("pane2")
    assert answer_scores(session) == 1
    assert teacher.turns[0].rouge_l == pytest.approx(rouge_l("2 + 3 = 5.", "2 + 3 is 5."))
    session.clear()
    assert not teacher.turns and not student.turns and not session.busy


def test_blind_round_hides_names_until_the_vote_and_tallies_pairs(tmp_path: Path) -> None:
    session, _ = _session_with_two_answers()
    session.set_blind(True)
    assert session.names_hidden() and sorted(session.display_order()) == ["pane1", "pane2"]
    session.panes.append(PaneState(key="pane3"))
    session.set_model("pane3", ModelChoice(label="broken", source="broken"))
    session.shuffle_blind()
    assert sorted(session.blind.order) == ["pane1", "pane2", "pane3"]
    session.on_load_failed("pane3", "no config.json")
    assert sorted(session.blind.order) == ["pane1", "pane2"]
    labels = {session.label(k) for k in ("pane1", "pane2")}
    assert labels == {"Model A", "Model B"}
    assert session.can_vote()
    record = session.vote("B")
    winner_key = session.blind.key_of("B")
    assert record["winner"] == session.pane(winner_key).name
    assert record["models"] == {session.blind.letter(k): session.pane(k).name for k in ("pane1", "pane2")}
    assert not session.names_hidden() and session.label("pane1") == "teacher"
    path = votes.votes_path(["", str(tmp_path)])
    assert path == tmp_path / "arena_votes.jsonl"
    votes.append_vote(path, record)
    votes.append_vote(path, {**record, "winner": "tie"})
    path.open("a").write("not json\n")
    three = {"models": {"A": "student", "B": "teacher", "C": "student 4-bit"}, "winner": "student 4-bit"}
    votes.append_vote(path, three)
    pairs = votes.tally(votes.read_votes(path))
    assert [(p.first, p.second) for p in pairs] == [("student", "teacher"), ("student", "student 4-bit"),
                                                    ("student 4-bit", "teacher")]
    assert (pairs[1].second_wins, pairs[2].first_wins, pairs[1].total) == (1, 1, 1)
    pair = pairs[0]  # its vote won by a third model is not counted
    assert (pair.first, pair.second, pair.ties) == ("student", "teacher", 1)
    assert (pair.first_wins, pair.second_wins) == ((1, 0) if record["winner"] == "student" else (0, 1))
    # the next prompt starts a new blind round
    session.start_turn("Next?")
    assert session.names_hidden()


def test_export_writes_markdown_and_json(tmp_path: Path) -> None:
    session, _ = _session_with_two_answers()
    answer_scores(session)
    md_path, json_path = write_exports(session, tmp_path / "chat.md")
    data = json.loads(json_path.read_text())
    assert [p["model"] for p in data["panes"]] == ["teacher", "student"]
    assert data["panes"][1]["turns"][0]["answer"] == "2 + 3 is 5."
    assert data["reference"] == "teacher" and data["sampling"]["max_new_tokens"] == 128
    text = md_path.read_text()
    assert "## teacher (reference)" in text and "**student:** 2 + 3 is 5." in text
    assert f"ROUGE-L {session.pane('pane2').turns[0].rouge_l:.3f} vs teacher" in text
    assert text.splitlines()[2:] == to_markdown(session).splitlines()[2:]  # line 1 holds the export time
    turn = session.pane("pane2").turns[0]
    turn.status = "streaming"  # exported mid-answer: the export says the answer is unfinished, the pane does not
    assert turn.stats("teacher", every_state=True).endswith("· streaming") and "streaming" not in turn.stats("t")
    turn.status, turn.error = "error", "out of memory"
    assert turn.stats("teacher", every_state=True).endswith("· error: out of memory")


def _fake_run(root: Path) -> Path:
    """A run folder as the engine leaves it: spec, a trained student, a 4-bit copy, eval predictions."""
    run = root / "runs" / "20260101-000000-demo-abcd"
    (run / "work" / "eval").mkdir(parents=True)
    (run / "spec.yaml").write_text(
        "name: demo\nteacher: {source: demo:teacher}\nstudent: {source: demo:student}\n"
        "stages:\n- {kind: sft, name: teacher_sft, model: teacher}\n- {kind: distill, name: distill, model: student}\n"
        "- {kind: quantize, name: quantize, model: distill}\n")
    for stage, config in (("teacher_sft", {"torch_dtype": "float32"}), ("distill", {"torch_dtype": "float32"}),
                          ("quantize", {"torch_dtype": "float32", "quantization_config":
                                        {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}})):
        folder = run / "models" / stage
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
        header = json.dumps({"w": {"dtype": "F32", "shape": [10, 4], "data_offsets": [0, 160]},
                             "q": {"dtype": "U8", "shape": [6, 1], "data_offsets": [160, 166]},
                             "q.absmax": {"dtype": "F32", "shape": [3], "data_offsets": [166, 178]}}).encode()
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(178))
    with open(run / "work" / "eval" / "predictions-student.jsonl", "w") as f:
        for i in range(30):
            f.write(json.dumps({"id": i, "category": "math", "prompt": f"Add {i} and 1.", "reference": str(i + 1),
                                "prediction": "?"}) + "\n")
    (run / "run.json").write_text(json.dumps({"id": run.name, "name": "demo", "status": "finished", "stage": "",
                                              "created": 1.0, "updated": 1.0, "pid": 0, "scores": {}}))
    return run


def test_catalog_lists_run_models_with_sizes_and_picks_a_lineup(tmp_path: Path) -> None:
    from engine.contract.runs import RunStore

    run = _fake_run(tmp_path)
    choices = catalog.catalog(RunStore(tmp_path))
    labels = [c.label for c in choices]
    assert labels[:5] == ["demo · teacher_sft", "demo · distill", "demo · quantize", "demo · teacher (original)",
                          "demo · student (original)"]
    assert labels[-2:] == ["demo teacher", "demo student"]
    by_label = {c.label: c for c in choices}
    assert by_label["demo · teacher_sft"].role == "teacher" and by_label["demo · distill"].role == "student"
    assert by_label["demo · quantize"].precision == "4-bit nf4" and by_label["demo · distill"].precision == "float32"
    assert by_label["demo · distill"].parameters == 40 + 12  # absmax is quantization state, U8 holds two each
    assert by_label["demo · distill"].run_path == str(run)
    lineup = catalog.default_lineup(choices)
    assert [c.label for c in lineup] == ["demo · teacher_sft", "demo · distill", "demo · quantize"]


def test_presets_come_from_held_out_predictions_then_local_data_then_the_demo_kit(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    held_out = presets.prompt_presets(run, limit=5, seed=1)
    assert len(held_out) == 5 and all(p.prompt.startswith("Add ") and p.category == "math" for p in held_out)
    assert held_out == presets.prompt_presets(run, limit=5, seed=1)  # reproducible
    for file in (run / "work" / "eval").iterdir():
        file.unlink()
    data = tmp_path / "mine.csv"
    data.write_text("q,a,ctx\nTranslate cat,gato,to Spanish\nTranslate dog,perro,\n")
    spec = (run / "spec.yaml").read_text().replace("stages:", f"data: {{preset: local, path: {data}, "
                                                   "columns: {instruction: q, response: a, context: ctx}}\nstages:")
    (run / "spec.yaml").write_text(spec)
    local = presets.prompt_presets(run)
    assert [(p.prompt, p.reference) for p in local] == [("Translate cat\n\nto Spanish", "gato"),
                                                        ("Translate dog", "perro")]
    kit_data = tmp_path / "demo-kit" / "v1" / "data" / "instructions.jsonl"
    kit_data.parent.mkdir(parents=True)
    kit_data.write_text(json.dumps({"instruction": "Reverse abc.", "context": "", "response": "cba",
                                    "category": "strings"}) + "\n")
    [demo] = presets.prompt_presets(None, home=tmp_path)
    assert (demo.prompt, demo.reference, demo.origin) == ("Reverse abc.", "cba", "demo kit")
    data.unlink()  # a local data set that is gone: its prompts are not replaced by the demo kit's
    assert presets.prompt_presets(run, home=tmp_path) == []
    (run / "spec.yaml").write_text(spec.split("data:")[0] + "data: {preset: demo}\nstages:" + spec.split("stages:")[1])
    assert presets.prompt_presets(run, home=tmp_path) == [demo]


def test_importing_the_arena_pulls_in_no_ml_library() -> None:
    code = ("import sys; import studio.arena.arena_state, studio.arena.catalog, studio.arena.prompt_presets, "
            "studio.arena.export, studio.arena.votes, studio.arena.arena_widget; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'numpy', 'nltk', "
            "'rouge_score', 'datasets', 'trl', 'peft'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_teacher_pane_answers_with_the_student_pane_as_its_draft() -> None:
    session = ArenaSession(pane_count=2, rng=random.Random(1))
    session.set_model("pane1", TEACHER)
    session.set_model("pane2", STUDENT)
    session.set_draft("pane1", "pane2")
    assert session.draft_of("pane1") is None  # the student is not loaded yet: no draft is sent
    session.on_loaded("pane1", {"parameters": 3_100_000})
    session.on_loaded("pane2", {"parameters": 400_000})
    assert session.draft_of("pane1") == "pane2" and session.draft_of("pane2") is None
    with pytest.raises(ValueError, match="cannot draft for itself"):
        session.set_draft("pane1", "pane1")
    requests = dict((key, request_id) for key, request_id, _ in session.start_turn("What is 2 + 3?"))
    turn = session.pane("pane1").turns[0]
    assert turn.draft == "student"
    session.on_token(requests["pane1"], "2 + 3 ", {"tokens_per_s": 41.5, "draft_acceptance": 0.5})
    assert (turn.tokens_per_s, turn.draft_acceptance) == (41.5, 0.5)  # live, before the answer ends
    assert turn.stats("") == "41.5 tok/s · draft student: 50 % kept"
    session.on_done(requests["pane1"], {"status": "finished", "completion_tokens": 4, "ttft_s": 0.1,
                                        "tokens_per_s": 52.0, "text": "2 + 3 = 5.",
                                        "draft": {"model": "pane2", "acceptance": 0.75}})
    assert turn.draft_acceptance == 0.75 and "draft student: 75 % kept" in turn.stats("")
    assert "draft" not in turn.stats("", timings=False)  # a blind round hides it with the speeds
    assert session.pane("pane2").turns[0].draft == ""
    session.set_draft("pane1", None)
    assert session.draft_of("pane1") is None
