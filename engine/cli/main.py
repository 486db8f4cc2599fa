"""compression-engine: the engine's complete command line. Every run the studio starts can be started here with
the same spec file; stdout carries only JSON-line events, logs and the progress bar go to stderr."""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys

from engine import __version__
from engine.contract.protocol import (
    claim_stdout,
    io_sentence,
    reopen_closed_std_streams,
)
from engine.contract.runs import StoreError
from engine.contract.spec import DataSpec, EvaluateStage, GenerationSpec, QuantizeSpec, QuantizeStage, RunSpec
from engine.contract.spec_fields import default_of, field_help
from engine.contract.vocabulary import COMPUTE_DTYPES, DEVICES, GGUF_FORMATS, QUANT_TYPES
from engine.models import out_of_memory

from engine.cli.common import fail, setup_logging
from engine.cli.run import cmd_demo, cmd_run
from engine.cli.tools import (EXPORT_DEFAULT_FORMAT, cmd_eval, cmd_export, cmd_inspect, cmd_preflight, cmd_quantize,
                              cmd_runs)

log = logging.getLogger("engine")


PROTOCOL_COMMANDS = ("run", "demo", "eval", "quantize", "export")
RUNS_ACTIONS = ("list", "show", "delete")


def from_spec(cls: type, name: str, **kwargs) -> dict:
    """argparse options for a setting that is also a spec field: its default and help text come from the spec (one
    home), so the command line and a spec file never disagree on what an omitted setting means."""
    default = default_of(cls, name)
    return {"default": default, "help": f"{field_help(cls, name)} (default {default})", **kwargs}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compression-engine", description=__doc__)
    parser.add_argument("--version", action="version", version=f"compression-engine {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a spec (YAML or JSON); JSON-line events on stdout")
    p.add_argument("spec", nargs="?", help="the run spec file")
    p.add_argument("--resume", metavar="RUN_ID", help="continue a cancelled or interrupted run where it stopped")
    p.add_argument("--check", action="store_true", help="check the spec against its models and data (everything "
                   "checked before a run's first step) and exit: 0 when it would start, 2 with the reason")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the embedded demo: teacher SFT → student SFT → KD → evaluation, offline")
    p.add_argument("--quick", action="store_true", help="a few steps per stage (a smoke test, not a result)")
    p.add_argument("--print-spec", action="store_true", help="print the demo spec (YAML) and exit")
    p.add_argument("--cross-tokenizer", action="store_true",
                   help="the teacher with another tokenizer (demo:teacher_bpe): SFT vs sequence-level vs "
                   "cross-tokenizer KD")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval", help="evaluate models on held-out data: ROUGE-L, exact match, retention, and each "
                       "smaller model as the reference's draft (acceptance, speed-up)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=SOURCE", required=True,
                   help="a model to evaluate (repeat); SOURCE is a folder, hub id, .gguf or demo:teacher")
    p.add_argument("--reference", help="the NAME retention is measured against (default: the first)")
    p.add_argument("--data", **from_spec(DataSpec, "preset"))
    p.add_argument("--data-path", help="local data file (for --data local, or a local copy of a preset)")
    p.add_argument("--test-fraction", type=float, **from_spec(DataSpec, "test_fraction"))
    p.add_argument("--max-samples", type=int, **from_spec(EvaluateStage, "max_eval_samples"))
    p.add_argument("--max-minutes", type=float, **from_spec(EvaluateStage, "eval_minutes"))
    p.add_argument("--draft-samples", type=int, **from_spec(EvaluateStage, "draft_samples"))
    p.add_argument("--max-new-tokens", type=int, **from_spec(GenerationSpec, "max_new_tokens"))
    p.add_argument("--batch-size", type=int, **from_spec(GenerationSpec, "batch_size"))
    p.add_argument("--device", **from_spec(RunSpec, "device"))
    p.add_argument("--name", default="eval")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("quantize", help="4-bit post-training quantization with a before/after report")
    p.add_argument("source", help="model folder, hub id, .gguf file or demo:student")
    p.add_argument("--quant-type", choices=QUANT_TYPES, **from_spec(QuantizeSpec, "quant_type"))
    p.add_argument("--compute-dtype", choices=COMPUTE_DTYPES,
                   **from_spec(QuantizeSpec, "compute_dtype"))
    p.add_argument("--no-report", action="store_true", help="skip the size/speed/quality report")
    p.add_argument("--data", default=default_of(DataSpec, "preset"),
                   help="data preset for the quality part of the report")
    p.add_argument("--data-path", help="local data file")
    p.add_argument("--test-fraction", type=float, **from_spec(DataSpec, "test_fraction"))
    p.add_argument("--max-samples", type=int, **from_spec(QuantizeStage, "max_eval_samples"))
    p.add_argument("--max-minutes", type=float, **from_spec(QuantizeStage, "eval_minutes"))
    p.add_argument("--max-new-tokens", type=int, **from_spec(GenerationSpec, "max_new_tokens"))
    p.add_argument("--batch-size", type=int, **from_spec(GenerationSpec, "batch_size"))
    p.add_argument("--device", **from_spec(RunSpec, "device"))
    p.add_argument("--name", default="quantize")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("export", help=f"GGUF files ({', '.join(GGUF_FORMATS)}) and an Ollama Modelfile for "
                       "llama.cpp / Ollama / LM Studio")
    p.add_argument("source", help="a model folder, demo:student, or RUN_ID:STAGE for a stage's model in the run "
                   "store")
    p.add_argument("--format", action="append", metavar="FMT",
                   help=f"{', '.join(GGUF_FORMATS)} (repeat or comma-separate; default {EXPORT_DEFAULT_FORMAT})")
    p.add_argument("--out", required=True, help="folder to write the .gguf files and the Modelfile into")
    p.add_argument("--name", help="file name stem (default: the model folder's name)")
    p.add_argument("--no-modelfile", action="store_true", help="skip the Ollama Modelfile")
    p.add_argument("--overwrite", action="store_true", help="replace .gguf files or a Modelfile of the same names "
                   "already in --out (without it such a file is refused before any work, and never touched)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("runs", help="list, show or delete runs")
    p.add_argument("action", nargs="?", default=RUNS_ACTIONS[0], choices=RUNS_ACTIONS)
    p.add_argument("run_id", nargs="?")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("inspect", help="architecture, parameters and vocabulary of a model, without its weights")
    p.add_argument("source")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("preflight", help="estimate every stage's peak memory from the configs (no weights read): "
                       "JSON on stdout; exit 1 when it does not fit")
    p.add_argument("spec", help="the run spec file")
    p.add_argument("--device", choices=DEVICES, help="plan for this device (default: the spec's)")
    p.add_argument("--memory-gb", type=float, help="memory available, in GB (default: what the device has free); "
                   "with --device cuda, plans for a GPU this machine need not have")
    p.set_defaults(func=cmd_preflight)

    sub.add_parser("chat", help="the chat service: JSON-line load/generate/stop commands on stdin, tokens out "
                   "(compression-engine chat --help)")
    return parser


def _out_of_memory(exc: BaseException, command: str) -> int:
    out_of_memory.release(exc)  # the frames' tensors first: building the sentence must not run out again
    return fail(out_of_memory.sentence(exc, f"compression-engine {command}"), code=1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    reopen_closed_std_streams()
    if isinstance(sys.stdin, io.TextIOWrapper):  # one undecodable byte on stdin must cost one command, not the reader
        sys.stdin.reconfigure(errors="replace")
    if argv and argv[0] == "chat":  # the chat service parses its own options (--model, --device, …)
        claim_stdout()
        setup_logging("-v" in argv)
        from engine.chat.serve import main as chat_main

        try:
            return chat_main(argv[1:])
        except KeyboardInterrupt:  # Ctrl-C ends the service: an exit code, not a traceback
            return 130
    args = build_parser().parse_args(argv)
    if args.command in PROTOCOL_COMMANDS:
        claim_stdout()  # from here on, stdout is JSON lines only
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except StoreError as exc:  # not a run id, no such run, run locked or damaged, data folder unusable
        return fail(str(exc))
    except BrokenPipeError:  # `runs | head -1`: the reader has what it wanted; say nothing, as `git log` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the interpreter's final flush must not fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
    except OSError as exc:  # out of space, read-only disk, permissions: a sentence, never a traceback
        if out_of_memory.is_out_of_memory(exc):  # ENOMEM from mmap: memory, not the disk
            return _out_of_memory(exc, args.command)
        log.debug("I/O error", exc_info=True)
        return fail(io_sentence(exc), code=1)
    except Exception as exc:  # a bug: one sentence here, the trace only with --verbose
        if out_of_memory.is_out_of_memory(exc):  # not a bug, and a MemoryError's own text is empty
            return _out_of_memory(exc, args.command)
        log.debug("internal error", exc_info=True)
        return fail(f"internal error: {type(exc).__name__}: {exc} (run with -v for details).", code=1)
