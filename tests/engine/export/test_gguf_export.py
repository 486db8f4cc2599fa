"""GGUF export (engine/export/gguf.py, the export stage and `compression-engine export`): files transformers
reads back with the source's answers, the metadata llama.cpp and Ollama need, and refusals that leave nothing.

The source model is a tiny Qwen2 built from the demo student's config (wider init so its greedy answers vary)
with the demo kit's real Qwen tokenizer and chat template."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.contract.vocabulary import GGUF_FORMATS
from engine.core.context import EngineError
from engine.export.gguf import export_gguf
from engine.export.llama_cpp_quantize import llama_cpp_available

REPO = Path(__file__).resolve().parents[3]
PROMPTS = ["What is 12 plus 30?", "Reverse the word 'model'.", "Name a colour."]
LLAMA_CPP_SKIP = "needs llama-cpp-python (llama.cpp's quantizer): pip install 'compression-studio[gguf]'"


def _build_source(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from engine.demo.kit import ensure_demo_kit
    from engine.demo.models import tiny_qwen2_config

    kit = ensure_demo_kit()
    tokenizer = AutoTokenizer.from_pretrained(kit.student_dir)
    config = tiny_qwen2_config("student", _vocab_rows(kit.student_dir), bos_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config.initializer_range = 0.2  # varied weights: different prompts get different greedy answers
    torch.manual_seed(3)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.copy(Path(kit.student_dir) / "generation_config.json", folder / "generation_config.json")
    return folder


def _vocab_rows(model_dir: Path) -> int:
    return json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The source folder and one export of every format this machine can write."""
    root = tmp_path_factory.mktemp("gguf")
    source = _build_source(root / "src")
    formats = [f for f in GGUF_FORMATS if f != "q4_k_m" or llama_cpp_available()]
    steps = []
    result = export_gguf(source, root / "out", formats, name="tiny", on_progress=lambda *a: steps.append(a))
    return source, result, steps


def _greedy(model, tokenizer, prompt: str, n: int = 12) -> list[int]:
    import torch

    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return ids[0].tolist(), out[0, ids.shape[1]:].tolist()


def _load(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_f16_reloads_with_transformers_and_answers_like_the_source(exported, one_thread):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, result, steps = exported
    ref_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(source)
    model, tok = _load(result.files["f16"])
    assert model.config.model_type == "qwen2" and model.config.tie_word_embeddings
    assert model.config.num_hidden_layers == ref_model.config.num_hidden_layers
    answers = set()
    for prompt in PROMPTS:
        ref_ids, ref_answer = _greedy(ref_model, ref_tok, prompt)
        ids, answer = _greedy(model, tok, prompt)
        assert ids == ref_ids  # the tokenizer rebuilt from GGUF metadata segments the chat prompt identically
        assert answer == ref_answer
        answers.add(tuple(answer))
    assert len(answers) > 1  # the prompts get different answers: the comparison can fail
    with torch.no_grad():
        x = torch.tensor([ref_ids])
        ref_logits, logits = ref_model(x).logits, model(x).logits
    assert torch.allclose(logits, ref_logits, atol=0.05 * ref_logits.abs().max().item())
    assert [s[1:] for s in steps][-1] == (len(steps), len(steps))  # progress reached its total


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_k_m"])
def test_quantized_files_load_and_answer(exported, fmt, one_thread):
    import gguf
    import torch

    _, result, _ = exported
    if fmt not in result.files:
        pytest.skip(LLAMA_CPP_SKIP)
    path = result.files[fmt]
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_q.bias"] == "F32"
    expected = {"q8_0": {"Q8_0"}, "q4_0": {"Q4_0"}, "q4_k_m": {"Q4_K", "Q5_0", "Q6_K", "Q8_0"}}[fmt]
    assert types["blk.0.ffn_down.weight"] in expected
    assert result.sizes[fmt] < result.sizes["f16"]
    model, tok = _load(path)
    f16_model, _ = _load(result.files["f16"])
    ids, answer = _greedy(model, tok, PROMPTS[0])
    assert len(answer) == 12 and tok.decode(answer)
    # transformers de-quantized what was written: each weight is the source's within the format's rounding
    bound = {"q8_0": 0.01, "q4_0": 0.12, "q4_k_m": 0.12}[fmt]
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
                 "model.embed_tokens.weight"):
        w, ref = model.state_dict()[name], f16_model.state_dict()[name]
        assert ((w - ref).norm() / ref.norm()).item() < bound, name
    with torch.no_grad():
        x = torch.tensor([ids])
        a, b = model(x).logits.flatten(), f16_model(x).logits.flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > (0.99 if fmt == "q8_0" else 0.8)


# llama.cpp runs in a child process: a crash of the C library (two OpenMP runtimes in one process with torch, a
# miscompiled build) then fails this test with its signal instead of taking the whole test session down.
_LLAMA_CHILD = """
import json, sys
import numpy as np
from llama_cpp import Llama
path, prompts, steps = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
llm = Llama(model_path=path, n_ctx=256, n_threads=1, n_batch=256, logits_all=True, verbose=False)
out = []
for text, n in zip(prompts, steps):
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(ids)
    answer = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        answer.append(token)
        llm.eval([token])
    out.append({"ids": ids, "answer": answer})
llm.close()
print(json.dumps(out))
"""


def test_llama_cpp_itself_tokenizes_and_answers_like_the_source(exported, one_thread):
    """The real consumer: llama.cpp (through llama-cpp-python) reads the f16 file, splits the chat prompt into
    the source tokenizer's ids (the qwen2 pre-tokenizer, merges and special tokens were written right) and
    decodes greedily to the source model's answer; the q4_k_m file loads and answers too."""
    if not llama_cpp_available():
        pytest.skip(LLAMA_CPP_SKIP)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, result, _ = exported
    ref_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(source)
    texts = [ref_tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                         tokenize=False) for p in PROMPTS[:2]]
    refs = [_greedy(ref_model, ref_tok, p) for p in PROMPTS[:2]]
    for fmt in ("f16", "q4_k_m"):
        child = subprocess.run([sys.executable, "-c", _LLAMA_CHILD, str(result.files[fmt]), json.dumps(texts),
                                json.dumps([len(answer) for _, answer in refs])],
                               capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert child.returncode == 0, (f"llama.cpp on the {fmt} file exited with {child.returncode}: "
                                       f"{child.stderr[-1500:]}")
        for got, (ref_ids, ref_answer) in zip(json.loads(child.stdout.strip().splitlines()[-1]), refs):
            assert got["ids"] == ref_ids
            if fmt == "f16":
                assert got["answer"] == ref_answer
            else:
                assert len(got["answer"]) == len(ref_answer)


def test_metadata_carries_tokenizer_and_chat_template(exported):
    import gguf

    source, result, _ = exported
    reader = gguf.GGUFReader(result.files["f16"])

    def value(key):
        return reader.fields[key].contents()

    tokenizer_config = json.loads((source / "tokenizer_config.json").read_text())
    template = (source / "chat_template.jinja").read_text() if (source / "chat_template.jinja").exists() \
        else tokenizer_config["chat_template"]
    assert value("general.architecture") == "qwen2"
    assert value("tokenizer.ggml.model") == "gpt2" and value("tokenizer.ggml.pre") == "qwen2"
    assert value("tokenizer.chat_template") == template
    tokens = value("tokenizer.ggml.tokens")
    assert len(tokens) == _vocab_rows(source)
    assert tokens[value("tokenizer.ggml.eos_token_id")] == "<|im_end|>"
    assert value("qwen2.rope.freq_base") == pytest.approx(1e6)


def test_modelfile_points_at_the_smallest_file_with_chatml_template(exported):
    _, result, _ = exported
    text = result.modelfile.read_text()
    smallest = "tiny-q4_k_m.gguf" if "q4_k_m" in result.files else "tiny-q4_0.gguf"
    assert f"FROM ./{smallest}\n" in text
    assert '<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>' in text
    assert text.count('"""') == 4 and '<|im_start|>assistant\n"""' in text
    assert 'SYSTEM """You are a helpful assistant."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|endoftext|>"' in text
    assert sorted(p.name for p in result.modelfile.parent.iterdir()) == sorted(
        ["Modelfile"] + [p.name for p in result.files.values()])  # no .partial or intermediate file left


def test_a_failure_midway_leaves_nothing(exported, tmp_path, monkeypatch):
    import engine.export.gguf as ge

    source, _, _ = exported
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the f16 file is complete, the q8_0 one is being written
            raise OSError("disk full")
        return real(*args, **kwargs)

    real = ge._add_tensors
    monkeypatch.setattr(ge, "_add_tensors", failing)
    with pytest.raises(OSError):
        export_gguf(source, tmp_path / "out", ["f16", "q8_0"])
    assert not (tmp_path / "out").exists()


def test_q4_k_m_without_llama_cpp_is_refused_with_the_alternatives(exported, tmp_path, monkeypatch):
    import engine.export.gguf as ge

    monkeypatch.setattr(ge, "llama_cpp_available", lambda: False)
    with pytest.raises(EngineError, match="q4_k_m needs llama.cpp's quantizer.*q4_0 or q8_0"):
        export_gguf(exported[0], tmp_path / "out", ["q4_k_m"])
    assert not (tmp_path / "out").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "engine", "export", *args], capture_output=True, text=True,
                          env=env, timeout=300, stdin=subprocess.DEVNULL, check=False)


def test_cli_refuses_an_unsupported_architecture_with_one_sentence(tmp_path):
    model = _gpt2_folder(tmp_path / "gpt2")
    done = _cli(str(model), "--format", "f16", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in events] == ["error"]
    assert "GPT2LMHeadModel model, which this GGUF export cannot convert" in events[0]["data"]["message"]
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists() and sorted(p.name for p in model.iterdir()) == ["config.json",
                                                                                         "tokenizer.json"]


def test_cli_export_streams_progress_and_artifacts(exported, tmp_path):
    source, _, _ = exported
    done = _cli(str(source), "--format", "q8_0", "--out", str(tmp_path / "out"), "--name", "cli")
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "hello" and types[-1] == "done" and events[-1]["data"]["status"] == "finished"
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert progress and progress[-1]["fraction"] == 1.0 and progress[0]["eta_s"] is not None
    artifacts = {e["data"]["kind"]: e["data"]["path"] for e in events if e["type"] == "artifact"}
    assert Path(artifacts["gguf"]).name == "cli-q8_0.gguf" and Path(artifacts["modelfile"]).is_file()


def _gpt2_folder(root: Path) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    # the preflight checks the tokenizer (present and readable) before the architecture: a real one
    from engine.demo.kit import ensure_demo_kit

    shutil.copy(Path(ensure_demo_kit().student_dir) / "tokenizer.json", root / "tokenizer.json")
    return root


def test_export_stage_in_a_run(exported, tmp_path):
    import io

    from engine.runner.pipeline import preflight, run_pipeline
    from engine.contract.protocol import EventWriter
    from engine.contract.runs import RunStore
    from engine.contract.spec import RunSpec, build, dump_spec

    spec = build(RunSpec, {"name": "ex", "student": {"source": str(exported[0])}, "device": "cpu",
                           "stages": [{"kind": "export", "name": "gguf", "model": "student",
                                       "export": {"formats": ["q8_0"]}}]})
    preflight(spec, "cpu", EventWriter(stream=io.StringIO()), {})  # no data set needed for an export
    store = RunStore(tmp_path / "runs")
    paths = store.create("ex", dump_spec(spec))
    out = io.StringIO()
    status = run_pipeline(spec, paths, EventWriter(paths.id, stream=out), store, threading.Event(), "cpu")
    assert status == "finished", out.getvalue()[-1000:]
    assert sorted(p.name for p in paths.model("gguf").iterdir()) == ["Modelfile", "ex-student-q8_0.gguf"]
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    artifacts = [e["data"] for e in events if e["type"] == "artifact"]
    assert [a["kind"] for a in artifacts] == ["gguf", "modelfile"] and artifacts[0]["bytes"] > 0


def test_export_stage_of_an_unsupported_architecture_is_refused_before_the_run(tmp_path):
    import io

    from engine.runner.pipeline import preflight
    from engine.contract.protocol import EventWriter
    from engine.contract.spec import RunSpec, build

    spec = build(RunSpec, {"name": "ex", "student": {"source": str(_gpt2_folder(tmp_path / "gpt2"))},
                           "stages": [{"kind": "export", "model": "student"}]})
    with pytest.raises(EngineError, match="GPT2LMHeadModel model, which this GGUF export cannot convert"):
        preflight(spec, "cpu", EventWriter(stream=io.StringIO()), {})


def test_cli_source_can_name_a_stage_of_a_stored_run(exported, tmp_path, monkeypatch):
    from engine.cli.tools import _export_source
    from engine.contract.runs import RunStore
    from engine.contract.spec import SpecError

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    paths = RunStore().create("kd", "name: kd\n")
    shutil.copytree(exported[0], paths.model("kd_student"))
    assert _export_source(f"{paths.id}:kd_student") == paths.model("kd_student")
    with pytest.raises(EngineError, match="is not a model folder"):
        export_gguf(_export_source(f"{paths.id}:nothing"), tmp_path / "out", ["f16"])
    with pytest.raises(SpecError, match="run id"):
        _export_source("not-a-run:kd_student")
    assert not (tmp_path / "out").exists()


# ---- the user's own files (issue #19, item 3): never overwritten without consent, never removed -------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _users_folder(root: Path) -> Path:
    """An --out folder holding the user's own files, two of them named like this export's files would be."""
    out = root / "mine"
    out.mkdir()
    (out / "s1-f16.gguf").write_bytes(b"the user's own model")
    (out / "Modelfile").write_text("FROM ./mine.gguf\n")
    (out / "s1-f16.gguf.partial").write_bytes(b"also the user's")  # the old partial name: not ours either
    return out


def test_a_file_already_there_is_refused_before_any_work(exported, tmp_path):
    out = _users_folder(tmp_path)
    before = _snapshot(out)
    for ollama in (True, False):
        with pytest.raises(EngineError, match="s1-f16.gguf already exists and this export did not write it.*"
                                              "--overwrite"):
            export_gguf(exported[0], out, ["f16"], name="s1", ollama=ollama)
    with pytest.raises(EngineError, match="Modelfile already exists"):
        export_gguf(exported[0], out, ["q8_0"], name="s1")
    assert _snapshot(out) == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_cancel_past_half_way_removes_only_the_exports_own_files(exported, tmp_path, overwrite):
    from engine.core.context import StageCancelled

    out = _users_folder(tmp_path)
    before = _snapshot(out)
    seen = []

    def cancel_past_half(phase: str, done: int, total: int) -> None:
        seen.append(done / total)
        if done / total > 0.5:
            raise StageCancelled("export")

    # with overwrite the user's s1-f16.gguf and Modelfile are targets; without it, other names are
    with pytest.raises(StageCancelled):
        export_gguf(exported[0], out, ["f16", "q8_0"], name="s1" if overwrite else "s2", overwrite=overwrite,
                    ollama=overwrite, on_progress=cancel_past_half)
    assert max(seen) > 0.5 and _snapshot(out) == before  # the f16 file was complete when the cancel came


def test_a_name_taken_while_the_export_ran_is_left_alone(exported, tmp_path):
    out = tmp_path / "out"

    def user_saves_meanwhile(phase: str, done: int, total: int) -> None:
        if done == total and not (out / "s3-q8_0.gguf").exists():
            (out / "s3-q8_0.gguf").write_bytes(b"saved meanwhile")

    with pytest.raises(EngineError, match="appeared while the export ran"):
        export_gguf(exported[0], out, ["q8_0"], name="s3", on_progress=user_saves_meanwhile)
    assert _snapshot(out) == {"s3-q8_0.gguf": b"saved meanwhile"}


def test_overwrite_replaces_the_users_file_only_at_the_end(exported, tmp_path):
    out = _users_folder(tmp_path)
    result = export_gguf(exported[0], out, ["f16"], name="s1", overwrite=True)
    assert (out / "s1-f16.gguf").read_bytes()[:4] == b"GGUF" and result.modelfile.read_text().startswith("#")
    assert sorted(_snapshot(out)) == ["Modelfile", "s1-f16.gguf", "s1-f16.gguf.partial"]


def test_cli_refuses_a_users_file_and_an_unwritable_out_in_one_sentence(exported, tmp_path):
    out = _users_folder(tmp_path)
    before = _snapshot(out)
    for args, sentence in (((str(out), "--name", "s1"), "s1-f16.gguf already exists and this export did not "
                                                          "write it"),
                           (("/proc/evil",), "--out /proc/evil: cannot create or write files there"),
                           ((str(out / "s1-f16.gguf" / "sub"),), "is a file; give a folder")):
        done = _cli(str(exported[0]), "--format", "f16", "--out", *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.count("\n") == 1 and sentence in done.stderr, done.stderr
        assert [json.loads(line)["type"] for line in done.stdout.splitlines()] == ["error"]
    assert _snapshot(out) == before and not Path("/proc/evil").exists()


def test_cli_obeys_a_cancel_after_bad_lines_and_keeps_the_users_file(exported, tmp_path):
    out = _users_folder(tmp_path)
    before = _snapshot(out)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    stdin = b"".join([b'{"type": "cancel", "n": 1' + b"0" * 5000 + b"}\n", b"[" * 50_000 + b"\n",
                      b"\xff\xfe\n", b'{"type": "cancel"}\n'])
    done = subprocess.run([sys.executable, "-m", "engine", "export", str(exported[0]), "--format", "f16,q8_0",
                           "--out", str(out), "--name", "s1", "--overwrite"], input=stdin, capture_output=True,
                          env=env, timeout=300, check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["type"] == "done" and events[-1]["data"]["status"] == "cancelled"
    assert _snapshot(out) == before and b"Traceback" not in done.stderr


def test_a_run_obeys_a_cancel_sent_after_bad_stdin_lines(exported, tmp_path):
    """The run's cancel listener survives a 5,000-digit number, 50,000-deep nesting and bytes that are not UTF-8
    on stdin, and the cancel after them still ends the run as cancelled (issue #19, item 4)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: cancelme\nstudent: {{source: {exported[0]}}}\ndevice: cpu\n"
                    "stages: [{kind: export, name: gguf, model: student, export: {formats: [f16, q8_0]}}]\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "COMPRESSION_STUDIO_HOME": str(tmp_path / "home")}
    bad = [b'{"type": "cancel", "n": 1' + b"0" * 5000 + b"}\n", b"[" * 50_000 + b"\n", b"\xff\xfe\n"]
    without = subprocess.run([sys.executable, "-m", "engine", "run", str(spec)], input=b"".join(bad),
                             capture_output=True, env=env, timeout=300, check=False)
    assert without.returncode == 0, without.stderr[-3000:]  # the bad lines alone cancel nothing
    done = subprocess.run([sys.executable, "-m", "engine", "run", str(spec)], input=b"".join(bad) +
                          b'{"type": "cancel"}\n', capture_output=True, env=env, timeout=300, check=False)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 3 and events[-1]["data"]["status"] == "cancelled", done.stderr[-3000:]
    from engine.contract.runs import RunStore

    assert [r.status for r in RunStore(tmp_path / "home").list()] == ["cancelled", "finished"]
