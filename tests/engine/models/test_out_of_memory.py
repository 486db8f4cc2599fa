"""Out of memory (issue 19, item 10): every form it takes is recognised, said as one sentence (what ran out, how
much was asked for, the preflight's cheapest change), and a run it strikes ends failed — error and done events,
run.json "failed", resumable — never "internal error: MemoryError: " and never left "running"."""
from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

from engine.contract.protocol import Event, EventWriter
from engine.contract.runs import RunStore
from engine.contract.spec import RunSpec, build
from engine.models import out_of_memory

sys.path.insert(0, str(Path(__file__).parents[1]))
from quant_helpers import make_tiny_model

ROOT = Path(__file__).resolve().parents[3]
CPU_ALLOC = ("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: you tried to "
             "allocate 2147483648 bytes. Error code 12 (Cannot allocate memory)")


def _torch_oom() -> BaseException:
    import torch

    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of "
                                  "79.1 GiB of which 3.2 MiB is free.")


@pytest.mark.parametrize("make, ran_out, asked", [
    (lambda: MemoryError(), "memory", ""),
    (lambda: RuntimeError(CPU_ALLOC), "memory", "≈2.1 GB"),
    (_torch_oom, "GPU memory", "20.00 MiB"),
    (lambda: RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"), "Apple GPU memory", ""),
    (lambda: OSError(errno.ENOMEM, "Cannot allocate memory"), "memory", ""),
])
def test_every_form_of_out_of_memory_is_one_sentence(make, ran_out, asked):
    exc = make()
    assert out_of_memory.is_out_of_memory(exc)
    text = out_of_memory.sentence(exc, "stage sft", run_id="RUN")
    assert text.startswith(f"stage sft ran out of {ran_out}")
    assert (f"asked for {asked}" in text) == bool(asked)
    assert "--resume RUN" in text and "MemoryError" not in text and "\n" not in text


@pytest.mark.parametrize("exc", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("x"),
                                 OSError(errno.ENOSPC, "No space left on device"), KeyError("memory")])
def test_other_failures_are_not_mistaken_for_memory(exc):
    assert not out_of_memory.is_out_of_memory(exc)


def _spec(folder: Path) -> RunSpec:
    return build(RunSpec, {"name": "oom", "teacher": {"source": str(folder)}, "student": {"source": str(folder)},
                           "data": {"max_length": 64},
                           "stages": [{"kind": "sft", "name": "student_sft", "model": "student"}]})


def test_a_memory_error_mid_stage_ends_the_run_failed_with_the_cheapest_change(tmp_path, monkeypatch):
    """Fault injection at a stage step: the sentence says what ran out and the preflight's cheapest change, the
    run is marked failed (so --resume picks it up from its last checkpoint), and `done` follows the error."""
    from engine.runner import pipeline

    folder = make_tiny_model(tmp_path / "tiny")
    store = RunStore(tmp_path / "home")
    paths = store.create("oom", "name: oom\n")
    store.update(paths.id, status="running")
    out = io.StringIO()
    events = EventWriter(paths.id, stream=out, mirror=paths.events)

    def run_stage(ctx):
        ballast = bytearray(10_000_000)  # noqa: F841 - held by the frame, as a batch's tensors would be
        raise MemoryError()

    monkeypatch.setattr(pipeline, "recipe_for", lambda kind: types.SimpleNamespace(run_stage=run_stage))
    status = pipeline.run_pipeline(_spec(folder), paths, events, store, threading.Event(), "cpu")
    assert status == "failed"
    sent = [Event.from_json(line) for line in out.getvalue().splitlines()]
    assert [e.type for e in sent][-2:] == ["error", "done"] and sent[-1].data["status"] == "failed"
    message = sent[-2].data["message"]
    assert message.startswith("stage student_sft ran out of memory")
    assert "train.gradient_checkpointing: true" in message  # memory_plan's first change for an SFT stage
    assert f"compression-engine run --resume {paths.id}" in message
    assert "MemoryError" not in message and not sent[-2].data.get("detail")
    assert store.get(paths.id).status == "failed"


LIMITED = r"""
import io, json, resource, sys, threading, types
from engine.contract.protocol import EventWriter
from engine.contract.runs import RunStore
from engine.contract.spec import RunSpec, build
from engine.runner import pipeline

store = RunStore(sys.argv[1])
paths = store.create("oom", "name: oom\n")
store.update(paths.id, status="running")
spec = build(RunSpec, {"name": "oom", "teacher": {"source": sys.argv[2]}, "student": {"source": sys.argv[2]},
                       "stages": [{"kind": "sft", "name": "s", "model": "student"}]})
def run_stage(ctx):
    chunks = []
    while True:  # a real allocation failure under the address-space limit, not a raised one
        chunks.append(bytearray(64 << 20))
pipeline.recipe_for = lambda kind: types.SimpleNamespace(run_stage=run_stage)
from engine.models.memory_plan import check_plan
from engine.models.out_of_memory import advice_by_stage
check_plan(spec, "cpu")  # as preflight does before any stage: torch and the model classes are loaded by now
cache = {pipeline.MEMORY_ADVICE: advice_by_stage(spec, "cpu")}  # and, like preflight, what to say if memory runs out
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), resource.RLIM_INFINITY))
status = pipeline.run_pipeline(spec, paths, EventWriter(paths.id, stream=sys.stdout, mirror=paths.events), store,
                               threading.Event(), "cpu", cache)
print(json.dumps({"final": status, "recorded": store.get(paths.id).status}))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc for the address space")
def test_a_real_address_space_limit_ends_the_run_failed(tmp_path):
    """Under ``ulimit -v`` (RLIMIT_AS) a real MemoryError: the sentence names the limit, the run ends failed."""
    folder = make_tiny_model(tmp_path / "tiny")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", LIMITED, str(tmp_path / "home"), str(folder)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[-1] == {"final": "failed", "recorded": "failed"}, done.stderr[-2000:]
    error = next(e for e in lines if e.get("type") == "error")["data"]["message"]
    assert error.startswith("stage s ran out of memory ("), error
    assert "this process may use at most" in error and "ulimit -v" in error
    assert "the cheapest change that lowers its peak is train.gradient_checkpointing: true" in error
    assert "Traceback" not in done.stderr


PATCHED_RUN = r"""
import sys
import transformers
from engine.cli.main import main

real = transformers.Trainer.training_step
def training_step(self, *args, **kwargs):
    if self.state.global_step == 2:  # the third step: checkpoint-2 is on disk
        raise MemoryError()
    return real(self, *args, **kwargs)
transformers.Trainer.training_step = training_step
sys.exit(main(["run", sys.argv[1]]))
"""


def test_a_run_out_of_memory_mid_training_resumes_from_its_last_checkpoint(tmp_path):
    """A MemoryError injected at a real SFT step: exit 1, run.json failed, error then done; ``--resume`` (memory
    back) continues from checkpoint-2 and finishes."""
    folder = make_tiny_model(tmp_path / "tiny")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"count to {i}", "response": " ".join(map(str, range(i + 1)))})
                            + "\n" for i in range(24)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: oom\ndevice: cpu\nstudent: {{source: {json.dumps(str(folder))}}}\n"
                    f"data: {{preset: local, path: {json.dumps(str(data))}, max_length: 64, test_fraction: 0.2}}\n"
                    "stages: [{kind: sft, name: s, model: student, train: {max_steps: 4, batch_size: 2, "
                    "save_steps: 1, logging_steps: 1}}]\n")
    home = tmp_path / "home"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", COMPRESSION_STUDIO_HOME=str(home))
    failed = subprocess.run([sys.executable, "-c", PATCHED_RUN, str(spec)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert failed.returncode == 1, failed.stderr[-3000:]
    events = [json.loads(line) for line in failed.stdout.splitlines()]
    assert [e["type"] for e in events][-2:] == ["error", "done"] and events[-1]["data"]["status"] == "failed"
    assert events[-2]["data"]["message"].startswith("stage s ran out of memory; the cheapest change")
    run_id = events[-1]["run_id"]
    assert json.loads((home / "runs" / run_id / "run.json").read_text())["status"] == "failed"
    resumed = subprocess.run([sys.executable, "-m", "engine", "run", "--resume", run_id], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logs = [json.loads(line)["data"]["message"] for line in resumed.stdout.splitlines() if '"log"' in line]
    assert "resuming s from checkpoint-2" in logs
