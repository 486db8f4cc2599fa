"""The pre-run check of a local model folder, file by file, without reading a weight: every JSON file parses,
the tokenizer loads (tokenizer.json through the tokenizers library, then the folder through AutoTokenizer) and
fits the embedding, and the tensor shapes in the weight files' headers agree with what config.json describes
(embedding and head ``[vocab, hidden]``, the layer count, every other tensor). A pickled ``.bin`` is opened only
with ``torch.load(weights_only=True)``: a file that would call code is refused, and nothing in it runs.

Each failure is one EngineError naming the file that is wrong and what to do, its quoted cause cut at a word
(:func:`brief`), never a traceback or transformers' "look at the above report!".
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from engine.core.context import EngineError

log = logging.getLogger(__name__)

# JSON files transformers reads from a model folder (config.json is read, and reported on, by load_config).
JSON_FILES = ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "generation_config.json",
              "added_tokens.json", "vocab.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_UNSUPPORTED = re.compile(r"[^\n]*unsupported[^\n]*", re.IGNORECASE)  # torch's line naming the refused global


def brief(exc: BaseException | str, limit: int = 240) -> str:
    """An error's text on one line, cut at a word boundary (with "…") when longer than ``limit``: a quoted cause
    never ends mid-word, and the sentence around it stays readable."""
    text = exc if isinstance(exc, str) else str(exc) or type(exc).__name__
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:([{")
    return (cut or text[:limit]) + "…"


def check_folder(source: str, folder: Path, config: Any) -> None:
    """All checks of a local model folder; the first problem found raises its sentence."""
    check_json_files(source, folder)
    check_tokenizer(source, folder, config)
    check_weight_shapes(source, folder, config)


def check_json_files(source: str, folder: Path) -> None:
    for name in JSON_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise EngineError(f"{path} is not valid JSON ({brief(exc, 120)}); the model folder {source} is damaged: "
                              "save the tokenizer and model again (save_pretrained) or download them again.") from None
        if not isinstance(value, dict):
            raise EngineError(f"{path} holds a JSON {type(value).__name__}, not an object; the model folder "
                              f"{source} is damaged: save or download the model again.")


def check_tokenizer(source: str, folder: Path, config: Any) -> None:
    """tokenizer.json builds in the tokenizers library, the folder's tokenizer loads, and its ids fit the
    embedding (an id past the last row fails mid-training with an index error)."""
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:  # noqa: BLE001 - the Rust parser raises plain Exception with serde's text
            raise EngineError(f"{tokenizer_json} does not describe a tokenizer ({brief(exc, 160)}); save the "
                              "tokenizer again (tokenizer.save_pretrained(folder)) or copy the one that came with "
                              "the model.") from None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - a damaged tokenizer_config raises anything (KeyError, TypeError…)
        raise EngineError(f"the tokenizer in {folder} does not load ({type(exc).__name__}: {brief(exc, 160)}); check "
                          "tokenizer_config.json and tokenizer.json, or save the tokenizer again.") from None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise EngineError(f"the tokenizer in {folder} has {len(tokenizer):,} tokens but config.json's vocab_size is "
                          f"{vocab:,}, so some token ids have no embedding row; use the tokenizer that was saved "
                          "with this model.")


def expected_shapes(config: Any) -> tuple[dict[str, tuple[int, ...]], list[set[str]]]:
    """Every tensor the config's model holds, with its shape (built on the meta device: no memory), and the
    groups of names that share one tensor (a tied head is stored once, under either name)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    groups: dict[int, set[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), set()).add(name)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict(keep_vars=True).items()}
    return shapes, list(groups.values())


def file_shapes(source: str, folder: Path) -> dict[str, tuple[dict[str, tuple[int, ...]], str]]:
    """Shapes stored in each weight file (safetensors headers; ``.bin`` only when there is no safetensors, as
    transformers prefers), keyed by file name."""
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return {s.name: (_safetensors_shapes(source, s), "safetensors") for s in shards}
    return {b.name: (_pickle_shapes(source, b), "bin") for b in sorted(folder.glob("*.bin"))
            if b.name != "training_args.bin"}


def _safetensors_shapes(source: str, shard: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(shard), framework="pt") as f:  # the header only, checked against the file size
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # safe_open is not a dict
    except (SafetensorError, OSError, ValueError) as exc:
        raise EngineError(f"cannot read the weights of {source} ({shard.name}: {brief(exc, 160)}); the files are "
                          "damaged or cut short, so save or download the model again.") from None


def _pickle_shapes(source: str, path: Path) -> dict[str, tuple[int, ...]]:
    """A pickled checkpoint read the only safe way (weights_only: plain tensors and containers, no code), memory
    mapped where the format allows so that the weights stay on disk."""
    import pickle

    import torch

    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        found = _UNSUPPORTED.search(str(exc))
        raise EngineError(f"{path.name} in {source} is a pickle that asks to run code, not only to hold weights "
                          f"({brief(found.group(0) if found else exc, 120)}); it was refused and nothing in it ran "
                          "(the engine reads .bin files only with torch.load(weights_only=True)); use the model's "
                          ".safetensors files or convert it from a source you trust.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise EngineError(f"cannot read the weights of {source} ({path.name}: {brief(exc, 160)}); the files are "
                          "damaged or cut short, so save or download the model again.") from None
    if not isinstance(state, dict):
        raise EngineError(f"{path.name} in {source} holds a {type(state).__name__}, not a state dict of tensors; "
                          "save the model again with save_pretrained.")
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def check_weight_shapes(source: str, folder: Path, config: Any) -> None:
    """Every stored tensor has the shape config.json implies; the layer count and the tensors a model needs are
    there. Skipped for quantized checkpoints (their packed shapes are not the config's) and for naming schemes
    this transformers version renames on load (no name in common)."""
    files = file_shapes(source, folder)
    if not files or getattr(config, "quantization_config", None):
        return
    expected, groups = expected_shapes(config)
    stored = {name: (shape, file) for file, (shapes, _) in files.items() for name, shape in shapes.items()}
    if not set(stored) & set(expected):
        log.debug("%s: no tensor name in common with the config's model; shapes not compared", source)
        return
    for name, (shape, file) in stored.items():
        if name in expected and expected[name] != shape:
            raise EngineError(f"{folder / file} stores {name} as {list(shape)} but config.json describes "
                              f"{list(expected[name])}{_dims_hint(config)}; the config and the weights come from "
                              "different models: put back the config.json saved with these weights, or save the "
                              "model again.")
    _check_layers(folder, config, stored)
    missing = [min(g) for g in groups if not g & set(stored)]
    if missing:
        raise EngineError(f"the weights in {folder} lack {len(missing)} tensor(s) that config.json describes (e.g. "
                          f"{missing[0]}); they would start from random values, so save or download the model "
                          "again.")


def _check_layers(folder: Path, config: Any, stored: dict) -> None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(text, "num_hidden_layers", None)
    indices = {int(m.group(1)) for name in stored for m in [_LAYER_INDEX.search(name)] if m}
    if isinstance(layers, int) and indices and max(indices) + 1 != layers:
        raise EngineError(f"the weights in {folder} hold {max(indices) + 1} layers but config.json says "
                          f"num_hidden_layers: {layers}; put back the config.json saved with these weights, or "
                          "save the model again.")


def _dims_hint(config: Any) -> str:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    dims = [f"{k} {getattr(text, k)}" for k in ("vocab_size", "hidden_size", "intermediate_size")
            if isinstance(getattr(text, k, None), int)]
    return f" ({', '.join(dims)})" if dims else ""
