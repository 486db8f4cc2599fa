"""GGUF in, GGUF out (issue 22, item 3): ``compression-engine export model.gguf`` re-exports a GGUF file through
the engine's GGUF cache (unpacked once, then reused), and a missing llama.cpp quantizer costs only q4_k_m — the
other formats are written, a warning names it with the install command, the done summary lists it under
``skipped`` and the exit code is 4 (partial) instead of 0.

The GGUF fixture is the tiny Qwen2 of tests/engine/quant_helpers.py (Q8_0 attention and embeddings, Q4_0 MLP)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model, write_gguf

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[3]
# the CLI with llama.cpp's quantizer hidden, whether or not this machine has it installed
NO_LLAMA_CPP = ("import sys, engine.export.llama_cpp_quantize as q; q.llama_cpp_available = lambda: False; "
                "from engine.cli.main import main; sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf-in")
    home = root / "home"
    old = os.environ.get("COMPRESSION_STUDIO_HOME")
    os.environ["COMPRESSION_STUDIO_HOME"] = str(home)
    model = make_tiny_model(root / "model", seed=4)
    yield {"root": root, "home": home, "model": model, "gguf": write_gguf(model, root / "tiny-q8.gguf",
                                                                          quantized=True)}
    if old is None:
        os.environ.pop("COMPRESSION_STUDIO_HOME", None)
    else:
        os.environ["COMPRESSION_STUDIO_HOME"] = old


def _cli(home: Path, *args: str) -> tuple[int, list[dict], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COMPRESSION_STUDIO_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", NO_LLAMA_CPP, "export", *args], capture_output=True, text=True,
                          env=env, timeout=300, stdin=subprocess.DEVNULL, check=False)
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_missing_quantizer_costs_only_its_own_format(files, tmp_path, monkeypatch):
    import engine.export.gguf as ge

    monkeypatch.setattr(ge, "llama_cpp_available", lambda: False)
    result = ge.export_gguf(files["model"], tmp_path / "out", ["f16", "q4_k_m"], name="m")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Modelfile", "m-f16.gguf"]
    assert list(result.files) == ["f16"] and list(result.skipped) == ["q4_k_m"]
    assert "pip install 'compression-studio[gguf]'" in result.skipped["q4_k_m"]
    assert "FROM ./m-f16.gguf" in (tmp_path / "out" / "Modelfile").read_text()  # the smallest file written


def test_cli_exports_a_gguf_file_at_another_precision_and_names_the_missing_format(files, tmp_path):
    import gguf

    from engine.models import gguf_source

    code, events, stderr = _cli(files["home"], str(files["gguf"]), "--format", "f16,q4_k_m", "--out",
                                str(tmp_path / "out"))
    assert code == 4, stderr[-2000:]  # partial: some formats written, one not
    types = [e["type"] for e in events]
    assert types[0] == "hello" and types[-1] == "done" and "error" not in types
    warnings = [e["data"]["message"] for e in events if e["type"] == "log" and e["data"].get("level") == "warning"]
    assert len(warnings) == 1 and "q4_k_m" in warnings[0] and "pip install" in warnings[0]
    summary = events[-1]["data"]["summary"]
    assert list(summary["files"]) == ["f16"] and list(summary["skipped"]) == ["q4_k_m"]
    written = Path(summary["files"]["f16"])
    assert written.name == "tiny-q8-f16.gguf"  # named after the GGUF file, not the cache folder
    folder = gguf_source.cached_folder(files["gguf"])  # the same cache GGUF teachers use
    assert folder is not None and folder.parent == files["home"] / "gguf-cache"
    reader = gguf.GGUFReader(written)
    types_out = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types_out["blk.0.ffn_down.weight"] == "F16" and types_out["blk.0.attn_norm.weight"] == "F32"


def test_cli_reexport_of_a_gguf_reuses_the_cache(files, tmp_path):
    from engine.models import gguf_source

    gguf_source.unpacked_folder(files["gguf"])  # unpacked by an earlier export or teacher
    folder = gguf_source.cached_folder(files["gguf"])
    before = (folder / gguf_source.COMPLETE).stat().st_mtime_ns
    code, events, stderr = _cli(files["home"], str(files["gguf"]), "--format", "q4_0", "--out", str(tmp_path))
    assert code == 0, stderr[-2000:]
    assert events[-1]["data"]["status"] == "finished" and "skipped" not in events[-1]["data"]["summary"]
    assert (folder / gguf_source.COMPLETE).stat().st_mtime_ns == before  # not unpacked again


def test_cli_refuses_a_gguf_of_an_architecture_it_cannot_convert(files, tmp_path):
    other = write_gguf(files["model"], tmp_path / "llama.gguf", arch="llama")
    code, events, stderr = _cli(files["home"], str(other), "--format", "f16", "--out", str(tmp_path / "out"))
    assert code == 2 and [e["type"] for e in events] == ["error"]
    assert "LlamaForCausalLM" in events[0]["data"]["message"] or "llama" in events[0]["data"]["message"]
    assert "Traceback" not in stderr and not (tmp_path / "out").exists()


def test_only_q4_k_m_without_the_quantizer_is_refused_with_the_install_command(files, tmp_path):
    code, events, _ = _cli(files["home"], str(files["model"]), "--format", "q4_k_m", "--out", str(tmp_path / "o"))
    assert code == 2 and [e["type"] for e in events] == ["error"]
    assert "pip install 'compression-studio[gguf]'" in events[0]["data"]["message"]
    assert "q4_0 or q8_0" in events[0]["data"]["message"] and not (tmp_path / "o").exists()


def test_export_stage_takes_a_gguf_source_and_skips_only_q4_k_m(files, tmp_path, monkeypatch):
    import engine.export.gguf as ge
    from engine.contract.protocol import EventWriter
    from engine.contract.runs import RunStore
    from engine.contract.spec import RunSpec, build, dump_spec
    from engine.runner.pipeline import preflight, run_pipeline

    monkeypatch.setattr(ge, "llama_cpp_available", lambda: False)
    spec = build(RunSpec, {"name": "ex", "student": {"source": str(files["gguf"])}, "device": "cpu",
                           "stages": [{"kind": "export", "name": "gguf", "model": "student",
                                       "export": {"formats": ["q8_0", "q4_k_m"]}}]})
    preflight(spec, "cpu", EventWriter(stream=io.StringIO()), {})  # a GGUF source is no longer refused
    store = RunStore(tmp_path / "runs")
    paths = store.create("ex", dump_spec(spec))
    out = io.StringIO()
    status = run_pipeline(spec, paths, EventWriter(paths.id, stream=out), store, threading.Event(), "cpu")
    assert status == "finished", out.getvalue()[-1000:]
    assert sorted(p.name for p in paths.model("gguf").iterdir()) == ["Modelfile", "ex-student-q8_0.gguf"]
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert any(e["type"] == "log" and e["data"].get("level") == "warning" and "q4_k_m" in e["data"]["message"]
               for e in events)


def test_the_gguf_header_is_parsed_once_per_file_not_at_every_source_check(files, tmp_path, monkeypatch):
    import shutil

    from engine.models import gguf_source
    from engine.models.loading import check_source, resolve_source

    copy = shutil.copy(files["gguf"], tmp_path / "fresh.gguf")  # a path no earlier test parsed
    parses = []
    real = gguf_source.parse_header
    monkeypatch.setattr(gguf_source, "parse_header", lambda path: parses.append(path) or real(path))
    for _ in range(3):  # what a run's checks do: resolve, config, the stage checks, the memory plan
        resolve_source(str(copy))
        check_source(str(copy))
        gguf_source.check_supported(copy)
    assert len(parses) == 1
    info = gguf_source.header(copy)
    info["types"]["F32"] = -1  # a caller's change does not reach the cached copy
    assert gguf_source.header(copy)["types"]["F32"] != -1 and len(parses) == 1
    os.utime(copy, ns=(1, 1))  # the file changed on disk (mtime): read again
    gguf_source.header(copy)
    assert len(parses) == 2
