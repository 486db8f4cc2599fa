"""Loading, adapting and saving models: hub ids, local folders, GGUF files and the demo kit (inspecting one
before loading: engine/models/inspection.py).

Everything that touches weights goes through here so that device, dtype, 4-bit loading and error sentences are
decided in one place.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.models.cards import model_card  # noqa: F401  (re-exported: recipes import it from here)
from engine.core.context import EngineError
from engine.contract.spec import LoraSpec, ModelSpec
from engine.models.source_checks import brief

log = logging.getLogger(__name__)

DEMO_PREFIX = "demo:"


@dataclass
class ResolvedSource:
    kind: str  # demo | folder | gguf | hub
    location: str  # folder path or hub id (for gguf: the folder holding the file)
    gguf_file: str | None = None

    def from_pretrained_args(self) -> tuple[str, dict]:
        """Where transformers reads the model: for a GGUF file, its unpacked cache folder if there already is
        one, else the file itself (fine for config and tokenizer; weights go through :meth:`weights_args`)."""
        if self.gguf_file:
            from engine.models.gguf_source import cached_folder

            folder = cached_folder(self.gguf_path)
            return (str(folder), {}) if folder is not None else (self.location, {"gguf_file": self.gguf_file})
        return self.location, {}

    def weights_args(self) -> tuple[str, dict]:
        """Where the weights load from: a GGUF file is unpacked once into a plain folder (engine.models.gguf_source)."""
        if self.gguf_file:
            from engine.models.gguf_source import unpacked_folder

            return str(unpacked_folder(self.gguf_path)), {}
        return self.location, {}

    @property
    def gguf_path(self) -> Path:
        return Path(self.location) / str(self.gguf_file)


MAX_SOURCE_CHARS = 4096  # PATH_MAX on Linux; hub ids are far shorter


def resolve_source(source: str) -> ResolvedSource:
    """Where the weights of ``source`` are, or an EngineError saying why they cannot be found."""
    source = str(source).strip()
    if not source:
        raise EngineError("the model source is empty; give a folder saved with save_pretrained, a .gguf file, a hub "
                          "id or demo:teacher / demo:student.")
    if len(source) > MAX_SOURCE_CHARS:  # and the sentence must not repeat a megabyte of it
        raise EngineError(f"the model source {source[:60]!r}… is {len(source):,} characters long, too long for a "
                          "path or a hub id.")
    try:
        return _resolve(source)
    except OSError as exc:  # a name too long for the file system, a folder we may not enter, …
        raise EngineError(f"{source!r} cannot be read as a model source ({exc.strerror or exc}); check the "
                          "path.") from None


def _resolve(source: str) -> ResolvedSource:
    if source.startswith(DEMO_PREFIX):
        role = source[len(DEMO_PREFIX):]
        if role not in ("teacher", "student", "teacher_bpe"):
            raise EngineError(f"unknown demo model {source!r}; use demo:teacher, demo:student or "
                              "demo:teacher_bpe (a teacher with another tokenizer).")
        from engine.demo.kit import ensure_demo_kit

        kit = ensure_demo_kit()
        folders = {"teacher": kit.teacher_dir, "student": kit.student_dir, "teacher_bpe": kit.teacher_bpe_dir}
        return ResolvedSource("demo", str(folders[role]))
    try:
        path = Path(source).expanduser()
    except RuntimeError:  # ~someone who has no home here: the text is the path
        path = Path(source)
    if source.lower().endswith(".gguf"):
        if not path.is_file():
            raise EngineError(f"GGUF file {path} does not exist; check the path.")
        from engine.models.gguf_source import check_supported

        check_supported(path)  # architecture and tensor types, from the header: one sentence if unreadable
        return ResolvedSource("gguf", str(path.parent), path.name)
    if path.exists() or source.startswith(("/", ".", "~")):
        if path.exists() and not path.is_dir():
            raise EngineError(f"{path} is a file, not a model folder; give the folder saved with save_pretrained "
                              "(the one holding config.json), a .gguf file or a hub id.")
        if not path.is_dir():
            raise EngineError(f"model folder {path} does not exist; give a folder saved with save_pretrained, "
                              "a .gguf file or a hub id.")
        if not (path / "config.json").is_file():
            raise EngineError(f"{path} is not a model folder (it has no config.json); give a folder saved with "
                              "save_pretrained, a .gguf file or a hub id.")
        return ResolvedSource("folder", str(path))
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", source):  # the hub's own id rule: no spaces, one '/'
        raise EngineError(f"{source!r} is neither an existing folder, a .gguf file nor a hub id like "
                          "Qwen/Qwen2.5-0.5B-Instruct.")
    from engine.models.hub_access import check_hub_id

    check_hub_id(source)  # offline and not cached: one sentence now, not a minute of retries later
    return ResolvedSource("hub", source)


def _hub_error(source: str, exc: Exception) -> EngineError:
    return EngineError(f"cannot load {source!r} from the Hugging Face hub ({type(exc).__name__}: "
                       f"{brief(exc, 160)}); without network, download it elsewhere and give its "
                       "local folder instead.")


def pick_device(requested: str = "auto") -> str:
    """CUDA, then MPS, then CPU; an explicit request that the machine cannot honour is an error."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cuda" and not cuda:
        raise EngineError("device is cuda but no CUDA GPU is visible; use device: auto or cpu.")
    if requested == "mps" and not mps:
        raise EngineError("device is mps but Apple's MPS backend is not available; use device: auto or cpu.")
    return requested


def pick_dtype(name: str, device: str) -> torch.dtype:
    if name != "auto":
        return getattr(torch, name)
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32  # CPU and MPS: float32 is the safe, fast default for small models


def load_tokenizer(spec: ModelSpec) -> Any:
    from transformers import AutoTokenizer

    resolved = resolve_source(spec.source)
    location, extra = resolved.from_pretrained_args()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, revision=spec.revision or None, **extra)
    except Exception as exc:  # noqa: BLE001 - damaged tokenizer files raise anything (KeyError, TypeError, …)
        if resolved.kind == "hub" and isinstance(exc, (OSError, ValueError)):
            raise _hub_error(spec.source, exc) from None
        raise EngineError(f"cannot read the tokenizer of {spec.source} ({brief(exc, 200)}); check its tokenizer "
                          "files or save the tokenizer again.") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs a pad id; the mask hides it from the loss
    return tokenizer


def quantization_config(load_in_4bit: bool, quant_type: str = "nf4", double_quant: bool = True,
                        compute_dtype: torch.dtype = torch.float32, skip_modules: list[str] | None = None) -> Any:
    """bitsandbytes 4-bit settings; ``skip_modules`` stay in full precision (lm_head always does)."""
    if not load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype,
                              llm_int8_skip_modules=["lm_head", *skip_modules] if skip_modules else None)


def load_model(spec: ModelSpec, device: str, *, trainable: bool = False, precision: Any = None) -> Any:
    """A causal LM on ``device`` in the spec's dtype (or 4-bit NF4); frozen and in eval mode unless trainable.
    A model to train passes its ``precision`` (engine.training.precision.PrecisionPlan): the weights then load in the
    plan's master dtype (fp32 for the mixed modes) whatever ``spec.dtype`` says, and a 4-bit base computes in
    the plan's compute dtype."""
    from engine.core import heartbeat

    resolved = resolve_source(spec.source)
    with heartbeat.activity(f"loading {spec.source}"):
        location, extra = resolved.weights_args()
        return _load_model(spec, resolved, location, extra, device, trainable, precision)


def _damaged_weights_errors() -> tuple[type[BaseException], ...]:
    import pickle

    from safetensors import SafetensorError

    return (SafetensorError, pickle.UnpicklingError, EOFError)


_DAMAGED_WEIGHTS = _damaged_weights_errors()


def _load_model(spec: ModelSpec, resolved: ResolvedSource, location: str, extra: dict, device: str,
                trainable: bool, precision: Any) -> Any:
    from transformers import AutoModelForCausalLM

    dtype = precision.weights if precision is not None else pick_dtype(spec.dtype, device)
    qconfig = None
    if spec.load_in_4bit:

        skip = kernel_incompatible_linears(load_config(spec.source)) if device == "cpu" else []
        compute = precision.compute if precision is not None else dtype
        qconfig = quantization_config(True, compute_dtype=compute, skip_modules=skip)
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": spec.revision or None, **extra}
    if qconfig is not None:
        kwargs.update(quantization_config=qconfig, device_map={"": device})
    try:
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        if resolved.kind == "hub":
            raise _hub_error(spec.source, exc) from None
        raise EngineError(f"cannot load the model {spec.source} ({brief(exc, 200)}); check the folder or save the "
                          "model again.") from None
    except _DAMAGED_WEIGHTS as exc:  # a weight file cut short or overwritten: the user's to fix, not a crash
        raise EngineError(f"cannot read the weights of {spec.source} ({type(exc).__name__}: {brief(exc, 160)}); "
                          "the files are damaged or cut short, so save or download the model again.") from None
    except RuntimeError as exc:  # stored shapes the config does not describe ("look at the above report!")
        if "mismatch" not in str(exc) and "ignore_mismatched_sizes" not in str(exc):
            raise
        raise EngineError(f"the weights of {spec.source} do not have the shapes its config.json describes; put back "
                          "the config.json saved with these weights, or save the model again.") from None
    if qconfig is None:
        model.to(device)
    if not trainable:
        model.eval()
        model.requires_grad_(False)
    log.info("loaded %s (%s, %s, %.1f M parameters)", spec.source, device, dtype,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model


def apply_lora(model: Any, lora: LoraSpec) -> Any:
    """Wrap ``model`` with LoRA adapters (peft); only the adapters train."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    targets = lora.target_modules if lora.target_modules == "all-linear" else \
        [t.strip() for t in lora.target_modules.split(",") if t.strip()]
    config = LoraConfig(task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=targets)
    return get_peft_model(model, config)


def load_config(source: str) -> Any:
    """The model's transformers config, read without loading weights (GGUF: from its metadata)."""
    from transformers import AutoConfig

    resolved = resolve_source(source)
    location, extra = resolved.from_pretrained_args()
    try:
        return AutoConfig.from_pretrained(location, **extra)
    except Exception as exc:  # noqa: BLE001 - a damaged config.json raises anything (TypeError on null, …)
        if resolved.kind == "hub" and isinstance(exc, (OSError, ValueError)):
            raise _hub_error(source, exc) from None
        raise EngineError(f"cannot read the config of {source} ({type(exc).__name__}: {brief(exc, 200)}); check "
                          "its config.json or re-save the model with save_pretrained.") from None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def check_source(source: str) -> None:
    """A model source is usable before any run folder exists: it resolves, its config reads as a known
    architecture, and a local folder carries a tokenizer that loads and weights whose stored shapes agree with
    the config (engine/models/source_checks.py; headers only, no weights read)."""
    load_config(source)
    resolved = resolve_source(source)
    if resolved.kind in ("folder", "demo") and not any((Path(resolved.location) / name).is_file()
                                                       for name in _TOKENIZER_FILES):
        raise EngineError(f"{resolved.location} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); save the "
                          "tokenizer next to the model (tokenizer.save_pretrained(folder)).")
    if resolved.kind == "folder":  # tokenizer files, JSON files and tensor shapes, file by file (no weights)
        from engine.models.source_checks import check_folder

        check_folder(source, Path(resolved.location), load_config(source))


_PLACEHOLDER = re.compile(r"^(\[PAD\d+\]|<\|PAD_TOKEN\d*\|>|<pad_\d+>)$")


def real_vocab(tokenizer: Any) -> dict[str, int]:
    """The tokenizer's vocabulary without the placeholder entries a GGUF converter pads it with up to the
    model's embedding rows (llama.cpp writes ``[PAD151665]``… for Qwen2.5): no text ever encodes to them."""
    return {t: i for t, i in tokenizer.get_vocab().items() if not _PLACEHOLDER.match(t)}


def check_token_kd_compatible(teacher_tokenizer: Any, student_tokenizer: Any) -> None:
    """Token-level KD compares distributions token by token: both models must number every real token alike.
    Placeholder padding (see :func:`real_vocab`) is ignored, so a GGUF teacher pairs with its hub student."""
    teacher_vocab, student_vocab = real_vocab(teacher_tokenizer), real_vocab(student_tokenizer)
    if teacher_vocab != student_vocab:
        only_t = len(set(teacher_vocab) - set(student_vocab))
        only_s = len(set(student_vocab) - set(teacher_vocab))
        mismatched = [t for t, i in teacher_vocab.items() if t in student_vocab and student_vocab[t] != i][:3]
        if not only_t and not only_s and mismatched:
            raise EngineError(f"teacher and student number their tokens differently (e.g. {mismatched}); use "
                              "sequence-level KD (distill.method: sequence) instead.")
        raise EngineError(f"teacher and student do not share a vocabulary ({len(teacher_vocab)} vs "
                          f"{len(student_vocab)} tokens; {only_t} only in the teacher's, {only_s} only in the "
                          "student's), so token-level KD cannot compare their distributions; use sequence-level "
                          "KD (distill.method: sequence) instead.")


def restore_use_cache(model: Any) -> None:
    """Training turns the KV cache off (gradient checkpointing, TRL); a saved model is for generation, where the
    cache saves recomputing every earlier token at every step, so it is switched back on in config.json and
    generation_config.json."""
    config = getattr(model, "config", None)
    if config is not None:
        config.use_cache = True
        text_config = getattr(config, "text_config", None)  # multimodal configs keep it on their text part
        if text_config is not None and hasattr(text_config, "use_cache"):
            text_config.use_cache = True
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.use_cache = True


def save_model(model: Any, tokenizer: Any, out_dir: Path, card: str) -> Path:
    """Save a plain transformers folder (LoRA merged in) with a model card; atomic, so a crash mid-save never
    leaves a folder that looks finished."""
    out_dir = Path(out_dir)
    from engine.core.ranks import is_main_process

    if not is_main_process():  # rank-aware (engine/runner/launch.py): rank 0 saves; the pipeline's barrier follows
        return out_dir
    from engine.core import heartbeat

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(model, "merge_and_unload") and not getattr(model, "is_loaded_in_4bit", False):
        model = model.merge_and_unload()
    restore_use_cache(model)
    with heartbeat.activity(f"saving the model to {out_dir.name}"):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    # The previous model (a re-run stage) is moved aside, not deleted, until the new one is in place: at every
    # instant one complete model exists under a known name.
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.is_symlink():
        out_dir.unlink()  # a link planted in the run folder is replaced, never written through
    elif out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir


def kernel_incompatible_linears(config: Any) -> list[str]:
    """Linear layers bitsandbytes' CPU kernel cannot run in 4 bits: its AVX-512 repacking needs
    in_features % 64 == 0 and out_features % 32 == 0 (Qwen's real sizes pass; toy widths such as 96 do not).
    They stay in full precision so the saved model runs on every device. Found on the meta device: no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"
            and (m.in_features % 64 or m.out_features % 32)]

