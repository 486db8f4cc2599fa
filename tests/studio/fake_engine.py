"""A stand-in for ``python -m engine`` that speaks the real protocol without torch, for the studio's tests and
GUI benchmark: ``fake_engine.py run SPEC | demo | inspect SOURCE``.

It creates a real run folder through engine.contract.runs (run.json, spec.yaml, events.jsonl mirror) and streams hello →
status → metric/progress (+ sample for GRPO stages) → artifact → done, honours ``{"type": "cancel"}`` on stdin,
and misbehaves on request. Environment knobs:
  FAKE_ENGINE_MODE    normal | crash (dies mid-run without a done event) | ignore_cancel (never stops by itself)
``run --resume RUN_ID`` continues a run as the real engine does: finished stages (work/<stage>/done.json) are
skipped, the interrupted one goes on from its checkpoint (checkpoints/<stage>/checkpoint-N, saved halfway).
  FAKE_ENGINE_STEPS   steps per training stage (default 20)
  FAKE_ENGINE_DELAY   seconds between steps (default 0.01)
  FAKE_ENGINE_BATCH   metric events per step (default 1; the benchmark raises it)
"""
from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `engine`

from engine.contract.protocol import EventWriter, hello, parse_command, read_events
from engine.contract.runs import RunStore
from engine.contract.spec import SpecError, dump_spec, load_spec

MODE = os.environ.get("FAKE_ENGINE_MODE", "normal")
STEPS = int(os.environ.get("FAKE_ENGINE_STEPS", "20"))
DELAY = float(os.environ.get("FAKE_ENGINE_DELAY", "0.01"))
BATCH = int(os.environ.get("FAKE_ENGINE_BATCH", "1"))


def listen(cancel: threading.Event) -> None:
    def reader() -> None:
        for line in sys.stdin:
            try:
                if parse_command(line)["type"] == "cancel":
                    cancel.set()
            except ValueError:
                continue

    threading.Thread(target=reader, daemon=True).start()


def train_stage(events: EventWriter, stage, cancel: threading.Event, crash_at: int | None, paths=None) -> bool:
    """Stream one stage's curves; False when cancelled."""
    start = time.time()
    first = 1
    checkpoints = sorted(paths.checkpoints(stage.name).glob("checkpoint-*")) if paths else []
    if checkpoints:
        first = int(checkpoints[-1].name.split("-")[1]) + 1
        events.log(f"resuming {stage.name} from {checkpoints[-1].name}")
    for step in range(first, STEPS + 1):
        if cancel.is_set() and MODE != "ignore_cancel":
            return False
        if crash_at is not None and step == crash_at:
            sys.stderr.write("Traceback (most recent call last):\nRuntimeError: CUDA error: fake crash\n")
            sys.stderr.flush()
            os._exit(1)
        for k in range(BATCH):
            x = (step - 1) * BATCH + k + 1
            values = {"train/loss": 2.5 * math.exp(-x / (STEPS * BATCH / 3)) + 0.1, "train/lr": 1e-3}
            if stage.kind == "distill":
                values.update({"kd/ce": values["train/loss"] * 0.8, "kd/divergence": values["train/loss"] * 0.3})
            if stage.kind == "grpo":
                values.update({"grpo/reward": min(1.0, x / STEPS), "grpo/reward/format_strict": 0.9,
                               "grpo/kl": 0.01 * x})
            values["perf/tokens_per_s"] = 1200.0 + step
            events.emit("metric", stage=stage.name, step=x, values=values)
        events.progress(stage.name, step, STEPS, time.time() - start)
        if paths is not None and step == STEPS // 2:
            checkpoint = paths.checkpoints(stage.name) / f"checkpoint-{step}"
            checkpoint.mkdir(parents=True, exist_ok=True)
            (checkpoint / "complete").write_text(f"{step}\n")  # as engine/training/callbacks.py marks a finished save
        if stage.kind == "grpo" and step % 5 == 0:
            events.emit("sample", stage=stage.name, step=step, prompt="What is 2 + 3?",
                        completion="<think>2 + 3 = 5</think><answer>5</answer>",
                        rewards={"format_strict": 1.0, "answer_correct": 1.0})
        if DELAY:
            time.sleep(DELAY)
    return True


def write_eval(paths, stage) -> None:
    models = stage.models or {"teacher": "teacher", "student": "student"}
    report = {"reference": stage.reference, "models": {}}
    for i, name in enumerate(models):
        score = 0.6 - 0.05 * i
        report["models"][name] = {"rougeL": score, "exact_match": score / 2, "retention": score / 0.6,
                                  "per_category": {"arithmetic": {"rougeL": score + 0.1}, "copy": score - 0.1}}
    paths.merge_eval(report)


def write_quant_report(paths, stage) -> None:
    """A quantize stage's report: the measured one of the demo student (tests/studio/fixtures), with scores of
    a trained model in place of the untrained student's zeros."""
    fixture = Path(__file__).with_name("fixtures") / "quant_eval.json"
    report = json.loads(fixture.read_text(encoding="utf-8"))["quantization"]["quantize"]
    report["original"]["scores"] = {"rougeL": 0.412, "exact_match": 0.105}
    report["quantized"]["scores"] = {"rougeL": 0.391, "exact_match": 0.095}
    report["retention"] = {"rougeL": round(0.391 / 0.412, 4), "exact_match": round(0.095 / 0.105, 4)}
    paths.add_stage_report("quantization", stage.name, report, "\n## 4-bit quantization (fake)\n")


def cmd_run(spec_path: str | None, demo: bool, resume: str = "") -> int:
    if resume:
        spec_path = str(RunStore().paths(resume).spec)
    if demo:
        from engine.demo.pipeline import demo_spec

        spec = demo_spec(quick=True)
    else:
        try:
            spec = load_spec(spec_path)
        except SpecError as exc:  # refused before any run exists, as the real CLI does
            print(f"error: {exc}", file=sys.stderr)
            EventWriter().error(str(exc))
            return 2
    store = RunStore()
    paths = store.paths(resume) if resume else store.create(spec.name, dump_spec(spec))
    last_seq = max((e.seq for _, e in read_events(paths.events)), default=0) if resume else 0
    events = EventWriter(paths.id, sys.stdout, mirror=paths.events, start_seq=last_seq)
    hello(events, "run", "fake")
    store.update(paths.id, status="running", pid=os.getpid())
    print("fake engine: starting", file=sys.stderr, flush=True)
    cancel = threading.Event()
    listen(cancel)
    crash_at = STEPS // 2 + 2 if MODE == "crash" else None  # after the halfway checkpoint: resumable
    for index, stage in enumerate(spec.stages):
        done = paths.stage_dir(stage.name) / "done.json"
        if done.exists():
            events.log(f"stage {stage.name} already finished; skipping it")
            continue
        store.update(paths.id, stage=stage.name)
        events.status("running", stage.name, f"stage {index + 1}/{len(spec.stages)}: {stage.kind}")
        events.log(f"stage {stage.name} started")
        if stage.kind == "quantize":
            write_quant_report(paths, stage)
            events.metric(stage.name, 0, {"quant/rougeL_retention": 0.949, "quant/size_ratio": 0.484})
            events.emit("artifact", stage=stage.name, kind="eval", path=str(paths.eval_json))
            continue
        if stage.kind == "evaluate":
            write_eval(paths, stage)
            events.metric(stage.name, 0, {"eval/rougeL": 0.55, "eval/retention": 0.92})
            events.emit("artifact", stage=stage.name, kind="eval", path=str(paths.eval_json))
            store.update(paths.id, scores={"eval/kd_student/retention": 0.92, "eval/kd_student/rougeL": 0.55})
            continue
        if not train_stage(events, stage, cancel, crash_at if index == 0 and not resume else None, paths):
            events.status("cancelled", stage.name, "cancelled")
            store.update(paths.id, status="cancelled")
            events.emit("done", status="cancelled", summary={})
            return 3
        events.emit("artifact", stage=stage.name, kind="model", path=str(paths.model(stage.name)))
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text("{}", encoding="utf-8")
    store.update(paths.id, status="finished")
    events.emit("done", status="finished", summary={"stages": {s.name: {} for s in spec.stages}})
    return 0


def cmd_export(argv: list[str]) -> int:
    """`export SOURCE --format F[,F] --out DIR --name NAME`: progress, one tiny file per format, done."""
    args = {key: value for key, value in zip(argv[2:], argv[3:]) if key.startswith("--")}
    out, name = Path(args["--out"]), args.get("--name", "model")
    events = EventWriter("", sys.stdout)
    hello(events, "export", "fake")
    formats = args["--format"].split(",")
    for step in range(1, 4):
        time.sleep(DELAY)
        events.progress("export", step, 3, step * DELAY, unit="tensor")
    out.mkdir(parents=True, exist_ok=True)
    files = {f: str(out / f"{name}-{f}.gguf") for f in formats}
    for path in files.values():
        Path(path).write_bytes(b"GGUF")
    events.emit("done", status="finished", summary={"files": files, "bytes": {f: 4 for f in files}})
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "inspect":
        source = argv[1]
        small = "student" in source
        print(json.dumps({"architecture": "Qwen2ForCausalLM", "parameters": 500_000 if small else 3_500_000,
                          "vocab_size": 4096, "hidden_size": 64 if small else 128, "layers": 2 if small else 4,
                          "dtype": "float32", "tokenizer_tokens": 4000,
                          "vocab_digest": "bpe" if source.endswith("_bpe") else "qwen"}))
        return 0
    # the memory plan's shape (engine/models/memory_plan.py); FAKE_ENGINE_MEMORY_GB sets the room
    if command == "preflight":
        room = float(os.environ.get("FAKE_ENGINE_MEMORY_GB", "24")) * 1e9
        stages = [{"stage": "teacher_sft", "kind": "sft", "peak_bytes": int(30e9), "fits": 30e9 <= room,
                   "parts": {"weights": int(6e9), "optimizer": int(24e9)}}]
        fits = stages[0]["fits"]
        print(json.dumps({"device": "cuda", "available_bytes": int(room), "fits": fits, "peak_bytes": int(30e9),
                          "stages": stages, "refusal": None if fits else "stage teacher_sft needs ≈30.0 GB of GPU "
                          "memory at its peak but ≈24.0 GB is available; the cheapest change that fits: "
                          "teacher_sft: train.lora.enabled: true (LoRA) (≈9.5 GB)."}))
        return 0 if fits else 1
    if command == "run" and argv[1:2] == ["--resume"]:
        return cmd_run(None, demo=False, resume=argv[2])
    if command == "run":
        return cmd_run(argv[1], demo=False)
    if command == "demo":
        return cmd_run(None, demo=True)
    if command == "export":
        return cmd_export(argv)
    print(f"fake engine: unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
