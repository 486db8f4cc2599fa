"""The command line says no more than it measured (issue 22): ``quantize`` takes the options ``eval`` has, and
every number it prints keeps its digits (a learning rate of 5e-05 is not 0.000)."""
from __future__ import annotations

from engine.cli import tools
from engine.cli.main import build_parser


def test_quantize_takes_the_evaluation_options(monkeypatch):
    seen = []
    monkeypatch.setattr(tools, "execute", lambda spec: seen.append(spec) or 0)
    args = build_parser().parse_args(["quantize", "demo:student", "--compute-dtype", "bfloat16", "--max-samples",
                                      "12", "--max-new-tokens", "24", "--batch-size", "4", "--test-fraction", "0.2",
                                      "--max-minutes", "3"])
    assert args.func(args) == 0
    stage = seen[0].stages[0]
    assert stage.quantize.compute_dtype == "bfloat16" and stage.max_eval_samples == 12
    assert stage.generation.max_new_tokens == 24 and stage.generation.batch_size == 4
    assert seen[0].data.test_fraction == 0.2 and stage.eval_minutes == 3


def test_runs_list_prints_small_numbers_with_their_digits(tmp_path, monkeypatch, capsys):
    from engine.contract.runs import RunStore

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    store = RunStore()
    paths = store.create("sweep", "name: sweep\n")
    store.update(paths.id, status="finished", scores={"kd/best_learning_rate": 5e-05, "eval/rougeL": 0.87123,
                                                      "kd/steps": 300, "kd/flag": True})
    args = build_parser().parse_args(["runs", "list"])
    assert args.func(args) == 0
    line = capsys.readouterr().out
    assert "kd/best_learning_rate=5e-05" in line and "eval/rougeL=0.8712" in line and "kd/steps=300" in line
    assert "0.000" not in line and "kd/flag" not in line
    assert [tools.number_text(v) for v in (3e-4, 1.0, 0.5, 1234.5, 1e-07)] == ["0.0003", "1", "0.5", "1234", "1e-07"]


# ---------------------------------------------------------------- preflight: unknown is not "fits" -----------------

def _offline(monkeypatch):
    """This test's process offline by the flag; huggingface_hub's switch and the verdict restored afterwards."""
    from huggingface_hub import constants

    from engine.models import hub_access

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(hub_access, "_verdict", {})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/nonexistent-hub-cache")  # nothing is cached


def test_preflight_on_a_model_it_cannot_read_says_unknown_with_its_own_exit_code(tmp_path, monkeypatch, capsys):
    import json

    from engine.contract.spec import RunSpec, build, dump_spec

    _offline(monkeypatch)
    path = tmp_path / "spec.yaml"
    dump_spec(build(RunSpec, {"name": "x", "student": {"source": "nobody/no-such-model"}, "data": {"preset": "demo"},
                              "stages": [{"kind": "sft", "name": "sft", "model": "student"}]}), path)
    args = build_parser().parse_args(["preflight", str(path), "--device", "cpu", "--memory-gb", "8"])
    code = args.func(args)
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert code == tools.PREFLIGHT_UNKNOWN == 3
    assert report["fits"] is None and report["peak_bytes"] is None and report["stages"][0]["peak_bytes"] is None
    assert "cannot be estimated" in report["unknown"] and "offline" in report["unknown"]
    assert "no-such-model" in report["warnings"][0] and report["offline"] == "HF_HUB_OFFLINE is set"


def test_plan_verdicts_combine_known_and_unknown_stages():
    from engine.contract.spec import RunSpec, build
    from engine.models.memory_plan import plan

    spec = build(RunSpec, {"name": "x", "student": {"source": "Qwen/Qwen2.5-0.5B-Instruct"},
                           "teacher": {"source": "/nonexistent/teacher"},
                           "stages": [{"kind": "sft", "name": "student_sft", "model": "student"},
                                      {"kind": "sft", "name": "teacher_sft", "model": "teacher"}]})
    big = plan(spec, "cpu", 10 ** 15)
    assert big["fits"] is None and big["peak_bytes"] is None and big["stages"][0]["fits"] is True
    small = plan(spec, "cpu", 10 ** 6)
    assert small["fits"] is False and "unknown" not in small  # a stage that does not fit decides


# ---------------------------------------------------------------- offline, detected once -------------------------

def test_offline_is_detected_once_by_a_short_probe_and_switches_the_hub_off(monkeypatch):
    import time

    from huggingface_hub import constants

    from engine.models import hub_access

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(hub_access, "_verdict", {})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    probes = []
    real = hub_access._probe
    monkeypatch.setattr(hub_access, "_probe", lambda *a: probes.append(a) or real(*a))
    start = time.monotonic()
    reason = hub_access.offline_reason()
    assert reason and "127.0.0.1 cannot be reached" in reason and time.monotonic() - start < 3
    assert hub_access.offline_reason() == reason and probes == [("127.0.0.1", 9)]  # once per process
    assert constants.HF_HUB_OFFLINE is True and hub_access.known_offline() == reason
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # go_offline set it; monkeypatch restores the original
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:8080")  # behind a proxy, the proxy is what answers
    assert hub_access._probe_target() == ("proxy.example", 8080)


def test_inspect_preflight_and_run_agree_on_a_hub_model_that_is_not_here(monkeypatch, capsys):
    """Offline and not cached: inspect describes the paper's student from its published config and says that
    its weights are not here; loading it (what run does first) fails at once with the same sentence."""
    import time

    from engine.core.context import EngineError
    from engine.models.inspection import inspect_model
    from engine.models.loading import check_source

    from engine.contract.model_info import ModelInfo

    _offline(monkeypatch)
    args = build_parser().parse_args(["inspect", "Qwen/Qwen2.5-0.5B-Instruct"])
    assert args.func(args) == 0
    info = ModelInfo.from_dict(__import__("json").loads(capsys.readouterr().out))
    assert info.architecture == "Qwen2ForCausalLM" and 490e6 < info.parameters < 500e6 and info.layers == 24
    assert "offline (HF_HUB_OFFLINE is set)" in info.note and "published config" in info.note
    start = time.monotonic()
    try:
        check_source("Qwen/Qwen2.5-0.5B-Instruct")
        raise AssertionError("an unreadable hub model passed the check")
    except EngineError as exc:
        assert str(exc) in info.note and time.monotonic() - start < 2
    args = build_parser().parse_args(["inspect", "nobody/no-such-model"])
    assert args.func(args) == 2 and "hf download nobody/no-such-model" in capsys.readouterr().err
    assert inspect_model("Qwen/Qwen2.5-0.5B-Instruct").note == info.note  # the library call gives the same answer


# ---------------------------------------------------------------- inspect: one answer for a GGUF -----------------

def test_inspect_gives_one_answer_for_a_gguf_before_and_after_its_unpacking(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    from engine.models import gguf_source
    from engine.models.inspection import inspect_model

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from quant_helpers import make_tiny_model, write_gguf

    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path / "home"))
    gguf = write_gguf(make_tiny_model(tmp_path / "tiny"), tmp_path / "tiny-q8.gguf", quantized=True)
    before = inspect_model(str(gguf))
    assert gguf_source.cached_folder(gguf) is None
    gguf_source.unpacked_folder(gguf)
    after = inspect_model(str(gguf))
    assert before == after
    assert before.architecture == "Qwen2ForCausalLM" and before.dtype == "float16"


def test_the_command_lines_defaults_and_choices_are_the_specs():
    """One home for each default and choice: an omitted option means what an omitted spec setting means."""
    from engine.cli.main import build_parser
    from engine.contract.spec import DataSpec, GenerationSpec, QuantizeSpec, RunSpec
    from engine.contract.spec_fields import default_of
    from engine.contract.vocabulary import COMPUTE_DTYPES, DEVICES, QUANT_TYPES

    parser = build_parser()
    args = parser.parse_args(["eval", "--model", "a=demo:student"])
    assert (args.data, args.test_fraction, args.max_new_tokens, args.batch_size, args.device) == (
        default_of(DataSpec, "preset"), default_of(DataSpec, "test_fraction"),
        default_of(GenerationSpec, "max_new_tokens"), default_of(GenerationSpec, "batch_size"),
        default_of(RunSpec, "device"))
    args = parser.parse_args(["quantize", "demo:student"])
    assert (args.quant_type, args.compute_dtype) == (QuantizeSpec().quant_type, QuantizeSpec().compute_dtype)
    sub = next(a for a in parser._actions if a.dest == "command").choices
    options = {a.dest: a for a in sub["quantize"]._actions}
    assert tuple(options["quant_type"].choices) == QUANT_TYPES
    assert tuple(options["compute_dtype"].choices) == COMPUTE_DTYPES
    assert tuple({a.dest: a for a in sub["preflight"]._actions}["device"].choices) == DEVICES
