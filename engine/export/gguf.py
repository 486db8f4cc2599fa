"""GGUF export for llama.cpp, Ollama and LM Studio: a saved transformers model folder → ``<name>-<fmt>.gguf``
files (f16, q8_0, q4_0, q4_k_m) and an Ollama ``Modelfile``.

Which converter, and why. No package on PyPI installs llama.cpp's own HF→GGUF converter
(``convert_hf_to_gguf.py`` ships only inside llama.cpp's source tree and the llama-cpp-python sdist, not as an
importable module), so the f16 / q8_0 / q4_0 files are written here with ``gguf`` (gguf-py), the library
that converter is built on, following its Qwen2 path step for step: the tensor names come from
``gguf.get_tensor_name_map(MODEL_ARCH.QWEN2)``, norms and biases stay F32, 2-D weights become F16 or are
quantized by ``gguf.quants`` (falling back to F16 where a row does not split into blocks, as the converter
does), and the tokenizer is written as its ``_set_vocab_gpt2`` writes it (gpt2 BPE model, ``qwen2``
pre-tokenizer, tokens with their types, merges, special ids and the chat template via ``gguf.SpecialVocab``).

gguf-py can only *de*-quantize the k-quants, so Q4_K_M comes from llama.cpp's own quantizer,
``llama_model_quantize``, reached through llama-cpp-python (an optional extra: it compiles llama.cpp when
installed). Without it q4_k_m is left out, the other formats asked for are written, and the result names it with
the install command (``skipped``); asked for alone, it is refused with a sentence that offers q4_0 or q8_0.

Every file is written under a hidden temporary name of its own and all are renamed when complete; a file the
user already has under a target name is refused up front (or replaced only with ``overwrite``), and on any
failure or cancel only this export's own files are removed (engine/export/output_files.py).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.contract.vocabulary import GGUF_FORMATS as FORMATS
from engine.contract.errors import echo, shorten
from engine.contract.safe_json import safe_json_loads
from engine.core.context import EngineError
from engine.export.llama_cpp_quantize import LLAMA_CPP_INSTALL, llama_cpp_available, quantize_with_llama_cpp
from engine.export.output_files import StagedFiles, probe_writable, refuse_existing
from engine.export.ollama_modelfile import chatml_stop_tokens, default_system_prompt, modelfile_text

log = logging.getLogger(__name__)

#: transformers architectures this exporter converts → llama.cpp architecture name (gguf.MODEL_ARCH member).
SUPPORTED_ARCHITECTURES = {"Qwen2ForCausalLM": "QWEN2"}

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class ExportResult:
    files: dict[str, Path]  # format → .gguf path
    modelfile: Path | None
    sizes: dict[str, int]  # format → bytes
    skipped: dict[str, str] = field(default_factory=dict)  # format not written → why, and what to install


def read_config(model_dir: Path) -> dict:
    """The model's config.json, or an EngineError naming what is missing."""
    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        raise EngineError(f"{model_dir} is not a model folder (it has no config.json); export a folder saved "
                          "with save_pretrained, such as a run's models/<stage>.")
    try:
        config = safe_json_loads(config_path.read_bytes())
    except (OSError, ValueError) as exc:  # JSONProblem: not JSON, not UTF-8, huge numbers, deep nesting
        raise EngineError(f"{config_path} cannot be read as JSON ({shorten(exc, 160)}); re-save the model.") \
            from None
    if not isinstance(config, dict):
        raise EngineError(f"{config_path} holds {type(config).__name__} instead of a JSON object of settings; "
                          "re-save the model with save_pretrained.")
    return config


def check_architecture(architecture: str, where: str) -> None:
    """The one-sentence refusal for a model this exporter cannot convert."""
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise EngineError(f"{where} is a {architecture} model, which this GGUF export cannot convert (it converts "
                          f"{', '.join(SUPPORTED_ARCHITECTURES)}); use llama.cpp's convert_hf_to_gguf.py for "
                          "other architectures.")


def check_output(out_dir: Path, name: str) -> None:
    """The output folder can be a folder and the file name stem stays inside it (no '/', no '..')."""
    out_dir = Path(out_dir)
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)  # what mkdir would build on
    if existing is not None and not existing.is_dir():
        where = f"--out {out_dir}" if existing == out_dir else f"{existing} (in --out {out_dir})"
        raise EngineError(f"{where} is a file; give a folder for the .gguf files (it is created if missing).")
    if name and not re.fullmatch(r"[\w][\w.+-]{0,127}", name):
        raise EngineError(f"--name {echo(name)} must be a plain file name stem (letters, digits, '_', '.', '+', "
                          "'-'; no folders), e.g. my-model.")
    probe_writable(out_dir)  # /proc/…, a read-only disk, no permission: a sentence now, not a traceback later


def export_name(model_dir: Path, name: str = "") -> str:
    """The file name stem: the one given, else the model folder's name made safe."""
    return name or re.sub(r"[^\w.+-]", "_", Path(model_dir).name).lstrip(".") or "model"


def check_targets(model_dir: Path, out_dir: Path, formats: list[str], *, name: str = "", ollama: bool = True,
                  overwrite: bool = False) -> None:
    """Refuse (EngineError) when a file this export would write is already there, unless ``overwrite``."""
    stem = export_name(model_dir, name)
    names = [f"{stem}-{fmt}.gguf" for fmt in dict.fromkeys(formats)] + (["Modelfile"] if ollama else [])
    refuse_existing([Path(out_dir) / n for n in names], overwrite)


def split_formats(formats: list[str]) -> tuple[list[str], dict[str, str]]:
    """Known formats split into those this machine can write and those it cannot (format → the sentence saying
    why and what to install): a missing quantizer costs only its own format. EngineError for an unknown format,
    or when not one asked-for format can be written."""
    if not formats:
        raise EngineError(f"no GGUF format given; use one or more of {', '.join(FORMATS)}.")
    for fmt in formats:
        if fmt not in FORMATS:
            raise EngineError(f"GGUF format {echo(fmt)} is not one of {', '.join(FORMATS)}.")
    skipped = {}
    if "q4_k_m" in formats and not llama_cpp_available():
        skipped["q4_k_m"] = f"q4_k_m needs llama.cpp's quantizer, which is not installed; install it with " \
                            f"{LLAMA_CPP_INSTALL}."
    writable = [f for f in dict.fromkeys(formats) if f not in skipped]
    if not writable:
        raise EngineError(f"{skipped['q4_k_m'][:-1]}, or export q4_0 or q8_0 instead.")
    return writable, skipped


def check_formats(formats: list[str]) -> dict[str, str]:
    """Known formats, at least one of them writable here; returns the skipped ones (see :func:`split_formats`)."""
    return split_formats(formats)[1]


def check_exportable(model_dir: Path, formats: list[str]) -> dict:
    """Everything checkable before a byte is written: the folder, the architecture, the weights, the formats
    and the quantizer they need. Returns the config."""
    split_formats(formats)  # the cheapest check first: a typo in --format is said before the folder is read
    config = read_config(model_dir)
    architectures = config.get("architectures")
    check_architecture(str(architectures[0] if isinstance(architectures, list) and architectures
                           else config.get("model_type", "unknown")), str(model_dir))
    if config.get("quantization_config"):
        raise EngineError(f"{model_dir} holds already-quantized weights "
                          f"({config['quantization_config'].get('quant_method', 'unknown')}); export the "
                          "full-precision model it was made from instead.")
    if not list(Path(model_dir).glob("*.safetensors")):
        raise EngineError(f"{model_dir} has no .safetensors weights; re-save the model with save_pretrained.")
    if not (Path(model_dir) / "tokenizer.json").is_file():
        raise EngineError(f"{model_dir} has no tokenizer.json; save the tokenizer next to the model.")
    return config


# ----------------------------------------------------------------------------------------------- weights


def _iter_weights(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32 array) for every tensor of every safetensors shard, one at a time (memory)."""
    from safetensors import safe_open

    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():  # safe_open is not a mapping
                yield name, f.get_tensor(name).float().numpy()


def _tensor_type(gguf_name: str, data: np.ndarray, fmt: str) -> Any:
    """The GGML type of one tensor, as convert_hf_to_gguf.py picks it: 1-D tensors, norms and biases stay F32;
    2-D weights take the format's type (q4_0 keeps the embedding / output in Q8_0, as llama.cpp's
    --token-embedding-type / --output-tensor-type would)."""
    import gguf

    t = gguf.GGMLQuantizationType
    if data.ndim <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
        return t.F32
    if fmt == "q4_0" and gguf_name.split(".")[0] in ("token_embd", "output"):
        return t.Q8_0
    return {"f16": t.F16, "q8_0": t.Q8_0, "q4_0": t.Q4_0}[fmt]


def _add_tensors(writer: Any, model_dir: Path, config: dict, fmt: str, on_tensor: Callable[[], None]) -> None:
    import gguf

    arch = getattr(gguf.MODEL_ARCH, SUPPORTED_ARCHITECTURES[config["architectures"][0]])
    name_map = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    for hf_name, data in _iter_weights(model_dir):
        if config.get("tie_word_embeddings") and hf_name == "lm_head.weight":
            continue  # tied: llama.cpp reuses token_embd, as the converter does
        new_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise EngineError(f"{model_dir}: tensor {echo(hf_name)} has no GGUF name for this architecture; the "
                              "model does not match its config.json.")
        qtype = _tensor_type(new_name, data, fmt)
        try:
            packed = gguf.quants.quantize(data, qtype)
        except gguf.QuantError:  # rows that do not split into 32-blocks: F16, like the converter
            qtype = gguf.GGMLQuantizationType.F16
            packed = gguf.quants.quantize(data, qtype)
        writer.add_tensor(new_name, packed, raw_dtype=qtype)
        on_tensor()


# --------------------------------------------------------------------------------------------- metadata


def _rope_theta(config: dict) -> float | None:
    rope = config.get("rope_parameters") or {}
    return rope.get("rope_theta", config.get("rope_theta"))


def _add_hparams(writer: Any, config: dict, name: str, fmt: str) -> None:
    """The keys TextModel.set_gguf_parameters writes for a Qwen2 model."""
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads", config["num_attention_heads"]))
    if (theta := _rope_theta(config)) is not None:
        writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
             "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[fmt]
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def vocab_tokens(tokenizer: Any, model_dir: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and token types for every embedding row, as get_vocab_base writes them: rows no token uses are
    ``[PAD<i>]`` UNUSED, added special tokens CONTROL, other added tokens USER_DEFINED."""
    import gguf

    reverse = {i: tok for tok, i in tokenizer.get_vocab().items()}
    if max(reverse) >= vocab_size:
        raise EngineError(f"{model_dir}: the tokenizer has token id {max(reverse)} but the model only "
                          f"{vocab_size} embedding rows; the folder mixes two models.")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _add_vocab(writer: Any, model_dir: Path, vocab: tuple[list[str], list[int]]) -> str | None:
    """gpt2 BPE vocabulary with the qwen2 pre-tokenizer, merges, special ids and chat template; returns the
    chat template written (None when the model has none)."""
    import gguf

    tokens, types = vocab
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(str(model_dir), load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise EngineError(f"{model_dir}/tokenizer.json has no BPE merges; a Qwen2 tokenizer must have them.")
    special.add_to_gguf(writer)
    template = special.chat_template
    return template if isinstance(template, str) else None


# ------------------------------------------------------------------------------------------------ files


def _write_direct(model_dir: Path, config: dict, fmt: str, name: str, vocab: tuple[list[str], list[int]],
                  target: Path, on_tensor: Callable[[], None]) -> str | None:
    """One GGUF written with gguf-py (f16, q8_0, q4_0); returns its chat template."""
    import gguf

    writer = gguf.GGUFWriter(str(target), arch="qwen2")
    try:
        _add_hparams(writer, config, name, fmt)
        template = _add_vocab(writer, model_dir, vocab)
        _add_tensors(writer, model_dir, config, fmt, on_tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return template


def _generation_eos(model_dir: Path, config: dict) -> dict:
    """config.json with eos_token_id taken from generation_config.json when it lists more (Qwen stops on
    <|im_end|> and <|endoftext|>)."""
    gen = Path(model_dir) / "generation_config.json"
    if gen.is_file():
        try:
            eos = safe_json_loads(gen.read_bytes()).get("eos_token_id")
        except (OSError, ValueError, AttributeError) as exc:
            raise EngineError(f"{gen} cannot be read as JSON settings ({shorten(exc, 160)}); re-save the "
                              "model.") from None
        if eos is not None:
            return {**config, "eos_token_id": eos}
    return config


def export_gguf(model_dir: Path, out_dir: Path, formats: list[str], *, name: str = "", ollama: bool = True,
                on_progress: Progress | None = None, overwrite: bool = False) -> ExportResult:
    """Convert ``model_dir`` into one GGUF per format (plus a Modelfile) in ``out_dir``; all or nothing for the
    formats this machine can write (a format it cannot, q4_k_m without llama.cpp, is left out and named in
    ``ExportResult.skipped``). A file
    already at a target name is refused up front unless ``overwrite``; every file is written under a temporary
    name of its own and renamed only when all are complete, so a failure or cancel removes only this export's
    files (engine/export/output_files.py)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    formats, skipped = split_formats(list(dict.fromkeys(formats)))
    config = check_exportable(model_dir, formats)
    name = export_name(model_dir, name)
    check_output(out_dir, name)
    check_targets(model_dir, out_dir, formats, name=name, ollama=ollama, overwrite=overwrite)
    finals = {fmt: f"{name}-{fmt}.gguf" for fmt in formats}
    # q4_k_m is quantized by llama.cpp from an f16 file: a requested one, or a hidden intermediate
    direct = [f for f in formats if f != "q4_k_m"]
    if "q4_k_m" in formats and "f16" not in direct:
        direct.insert(0, "f16")
    n_tensors = sum(1 for _ in _tensor_names(model_dir, config))
    progress = _Ticker(n_tensors * len(direct) + ("q4_k_m" in formats), on_progress)
    staged = StagedFiles(out_dir, overwrite)
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        tokens, types = vocab_tokens(tokenizer, model_dir, config["vocab_size"])
        template, written = None, {}
        for fmt in direct:
            written[fmt] = staged.temp(f"{name}-{fmt}.gguf")
            template = _write_direct(model_dir, config, fmt, name, (tokens, types), written[fmt],
                                     lambda f=fmt: progress.tick(f"writing {f}"))
        if "q4_k_m" in formats:
            written["q4_k_m"] = staged.temp(finals["q4_k_m"])
            quantize_with_llama_cpp(written["f16"], written["q4_k_m"], "q4_k_m")
            progress.tick("quantizing q4_k_m")
        commits = {written[fmt]: finals[fmt] for fmt in formats}
        if ollama:
            stops = chatml_stop_tokens(_generation_eos(model_dir, config), tokens)
            text = modelfile_text(finals[_smallest(formats)], template, stops, default_system_prompt(tokenizer))
            modelfile_tmp = staged.temp("Modelfile")
            modelfile_tmp.write_text(text, encoding="utf-8")
            commits[modelfile_tmp] = "Modelfile"
        claimed = staged.commit(commits)  # only now are the final names taken
    except BaseException:
        staged.discard()
        raise
    staged.discard(finals_too=False)  # the hidden f16 a q4_k_m was made from
    files = {fmt: claimed[written[fmt]] for fmt in formats}
    modelfile = out_dir / "Modelfile" if ollama else None
    return ExportResult(files=files, modelfile=modelfile, sizes={f: p.stat().st_size for f, p in files.items()},
                        skipped=skipped)


class _Ticker:
    def __init__(self, total: int, on_progress: Progress | None) -> None:
        self.total, self.done, self.on_progress = total, 0, on_progress

    def tick(self, phase: str) -> None:
        self.done += 1
        if self.on_progress:
            self.on_progress(phase, self.done, self.total)


def _smallest(formats: list[str]) -> str:
    """The format the Modelfile points at: the most compressed one exported (what Ollama users pull)."""
    return next(f for f in ("q4_k_m", "q4_0", "q8_0", "f16") if f in formats)


def _tensor_names(model_dir: Path, config: dict) -> Iterator[str]:
    from safetensors import safe_open

    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():  # safe_open is not a mapping
                if not (config.get("tie_word_embeddings") and key == "lm_head.weight"):
                    yield key
