"""GGUF files as first-class sources (engine/models/gguf_source.py): unpacked once into a cache keyed by the file's
hash and reused; quantized with the full report (compared with the GGUF file itself); a 4-bit teacher from a GGUF
inside a token-KD run, paired with a "hub" student whose tokenizer lacks the GGUF's [PAD…] placeholders; bad
files refused in one sentence with nothing created.

The fixture is a tiny Qwen2 written with gguf-py the way llama.cpp's converter writes one: embeddings and
attention in Q8_0, the MLP in Q4_0, norms F32, the token list padded with ``[PAD<id>]`` up to the 448 embedding
rows (the tokenizer has fewer entries, as Qwen2.5's 151,665 for 151,936 rows)."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from engine.models import gguf_source
from engine.core.context import EngineError
from engine.contract.spec import ModelSpec

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model, write_gguf

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/engine/conftest.py

ROWS = 448


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    old = os.environ.get("COMPRESSION_STUDIO_HOME")
    os.environ["COMPRESSION_STUDIO_HOME"] = str(root / "home")
    teacher = make_tiny_model(root / "teacher", seed=1, vocab_size=ROWS)
    student = make_tiny_model(root / "student", seed=2, vocab_size=ROWS)
    yield {"root": root, "home": root / "home", "teacher_dir": teacher, "student": student,
           "gguf": write_gguf(teacher, root / "teacher-q8_0-q4_0.gguf", quantized=True)}
    if old is None:
        os.environ.pop("COMPRESSION_STUDIO_HOME", None)
    else:
        os.environ["COMPRESSION_STUDIO_HOME"] = old


def test_unpacked_once_into_a_hash_keyed_cache_and_reused(files, monkeypatch):
    from transformers import AutoModelForCausalLM

    from engine.models.loading import load_model, load_tokenizer

    gguf = files["gguf"]
    folder = gguf_source.unpacked_folder(gguf)
    assert folder.parent == files["home"] / "gguf-cache" and len(folder.name) == gguf_source.KEY_LENGTH
    info = gguf_source.source_info(folder)
    assert info["types"] == {"F32": 11, "Q8_0": 9, "Q4_0": 6}  # norms and q/k/v biases stay F32
    assert info["bytes"] == gguf.stat().st_size
    assert info["dtype"] == "float16"  # half the size of float32; its rounding is far below Q8_0's step
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    unpacked = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    # exactly transformers' own de-quantization, rounded once to float16
    assert all(torch.equal(direct.state_dict()[k].half().float(), v) for k, v in unpacked.state_dict().items())
    up = "model.layers.0.mlp.up_proj.weight"
    original = AutoModelForCausalLM.from_pretrained(files["teacher_dir"]).state_dict()[up]
    assert 0 < (unpacked.state_dict()[up] - original).abs().max() < 0.2  # Q4_0 rounding, nothing worse

    def no_second_unpack(*args):
        raise AssertionError("unpacked twice")

    monkeypatch.setattr(gguf_source, "_unpack", no_second_unpack)
    copy = files["root"] / "renamed copy.gguf"
    shutil.copy(gguf, copy)
    assert gguf_source.unpacked_folder(copy) == folder  # keyed by content, not by path
    model = load_model(ModelSpec(source=str(copy)), "cpu")
    assert torch.equal(model.state_dict()["lm_head.weight"], unpacked.state_dict()["lm_head.weight"])
    assert len(load_tokenizer(ModelSpec(source=str(gguf)))) == ROWS  # the GGUF's tokenizer, placeholders too
    assert not list(folder.parent.glob(".*"))  # no staging folder left behind


def test_placeholder_padding_does_not_block_token_kd(files):
    from engine.models.loading import check_token_kd_compatible, load_tokenizer

    gguf_tok = load_tokenizer(ModelSpec(source=str(files["gguf"])))
    hub_tok = load_tokenizer(ModelSpec(source=str(files["student"])))
    assert len(gguf_tok) == ROWS and len(hub_tok) < ROWS and "[PAD447]" in gguf_tok.get_vocab()
    check_token_kd_compatible(gguf_tok, hub_tok)  # every real id agrees

    class Renumbered:  # one real token with another id: refused
        def get_vocab(self):
            vocab = hub_tok.get_vocab()
            a, b = list(vocab)[10:12]
            return {**vocab, a: vocab[b], b: vocab[a]}

    with pytest.raises(EngineError, match="number their tokens differently"):
        check_token_kd_compatible(gguf_tok, Renumbered())


def test_quantize_a_gguf_with_its_full_report(files, tmp_path, monkeypatch):
    """Through the quantize recipe. The speed/memory subprocesses are replaced by a fixed measurement here
    (test_four_bit.py measures for real); everything else — quantizing, scores, sizes — runs."""
    from engine.quantization import report as quant_report
    from engine.core.context import RunContext
    from engine.contract.protocol import EventWriter
    from engine.recipes.quantize import run_stage
    from engine.contract.runs import RunStore
    from engine.contract.spec import RunSpec, build, dump_spec

    monkeypatch.setattr(quant_report, "measure_in_subprocess", lambda folder, device, prompt: {"load_s": 1.0})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {w}.", "response": w}) + "\n"
                            for w in ("fox", "dog", "cat", "bits", "code", "Paris")))
    spec = build(RunSpec, {"name": "q", "student": {"source": str(files["gguf"])}, "device": "cpu",
                           "data": {"preset": "local", "path": str(data), "test_fraction": 0.5},
                           "stages": [{"kind": "quantize", "name": "q4", "model": "student", "max_eval_samples": 2,
                                       "generation": {"max_new_tokens": 4}}]})
    paths = RunStore(tmp_path / "runs").create("q", dump_spec(spec))
    result = run_stage(RunContext(spec, spec.stages[0], paths, EventWriter(stream=io.StringIO()), device="cpu"))
    report = json.loads(paths.eval_json.read_text())["quantization"]["q4"]
    gguf_bytes = files["gguf"].stat().st_size
    assert report["gguf"]["bytes"] == gguf_bytes and report["gguf"]["types"]["Q4_0"] == 6
    assert report["original"]["path"] == str(gguf_source.cached_folder(files["gguf"]))  # no second copy
    assert not (paths.stage_dir("q4") / "original").exists()
    q = report["quantized"]
    assert report["ratios"]["gguf_bytes"] == pytest.approx(q["disk_bytes"] / gguf_bytes, abs=1e-4)
    assert result.scores["quant/gguf_size_ratio"] == report["ratios"]["gguf_bytes"]
    # the output layer and embeddings (tied: one 448 × 64 matrix, kept in the unpacked source's 16-bit storage dtype)
    # and the norms are not quantized
    assert ROWS * 64 * 2 <= q["full_precision_bytes"] < ROWS * 64 * 4 and q["layers_4bit"] == 14
    table = paths.eval_md.read_text()
    assert "vs the GGUF file (F32, Q4_0, Q8_0)" in table and "kept in 16/32 bits" in table
    assert "rougeL" in report["quantized"]["scores"]


def test_4bit_teacher_from_a_gguf_inside_a_token_kd_run(files, tmp_path, monkeypatch):
    from engine.runner.pipeline import preflight, run_pipeline
    from engine.contract.protocol import EventWriter
    from engine.contract.runs import RunStore
    from engine.contract.spec import RunSpec, build

    unpacks = []
    real_unpack = gguf_source._unpack
    monkeypatch.setattr(gguf_source, "_unpack", lambda *a: (unpacks.append(a), real_unpack(*a))[1])
    gguf = files["root"] / "fresh-teacher.gguf"  # not in the cache yet
    write_gguf(files["teacher_dir"], gguf, quantized=True)
    with open(gguf, "ab") as f:
        f.write(b"\0" * 32)  # other bytes, another hash (GGUF readers ignore trailing padding)
    spec = build(RunSpec, {
        "name": "kd", "device": "cpu", "teacher": {"source": str(gguf), "load_in_4bit": True},
        "student": {"source": str(files["student"])},
        "data": {"preset": "demo", "max_samples": 16, "max_length": 64},
        "stages": [{"kind": "distill", "name": "kd", "train": {"max_steps": 2, "batch_size": 4, "save_steps": 100}}]})
    cache: dict = {}
    preflight(spec, "cpu", EventWriter(stream=io.StringIO()), cache)
    store = RunStore(tmp_path / "runs")
    paths = store.create("kd", "{}")
    out = io.StringIO()
    status = run_pipeline(spec, paths, EventWriter(paths.id, stream=out), store, threading.Event(), "cpu", cache)
    assert status == "finished", [line for line in out.getvalue().splitlines() if '"error"' in line]
    assert len(unpacks) == 1  # the run's loads all read the one unpacked folder
    assert (paths.model("kd") / "config.json").exists()


def test_unsupported_gguf_is_one_sentence_exit_2_and_nothing_created(files, tmp_path):
    from engine.models.loading import resolve_source

    bad_type = write_gguf(files["teacher_dir"], tmp_path / "q8_1.gguf", raw_types={"ffn_up.weight": "Q8_1"})
    with pytest.raises(EngineError, match="stores tensors as Q8_1, which gguf-py cannot de-quantize"):
        resolve_source(str(bad_type))  # every command resolves its sources first
    bad = write_gguf(files["teacher_dir"], tmp_path / "rwkv.gguf", arch="rwkv7")
    home = tmp_path / "home"
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).parents[3])}
    proc = subprocess.run([sys.executable, "-m", "engine", "quantize", str(bad), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr[-800:]
    assert "holds a rwkv7 model, an architecture transformers cannot read from GGUF" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (home / "gguf-cache").exists()  # nothing unpacked
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())  # no run created
