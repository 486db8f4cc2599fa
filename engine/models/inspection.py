"""What the studio shows of a model before loading it (`inspect_model`): architecture, exact parameter count built
on the meta device, sizes and the dtype the weights load in; split from loading.py, which loads and saves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.contract.model_info import ModelInfo
from engine.core.context import EngineError
from engine.models.loading import DEMO_PREFIX, load_config
from engine.models.source_checks import brief


def inspect_model(source: str) -> ModelInfo:
    """What the studio shows before loading: architecture (the class transformers builds), parameter count
    (exact, built on the meta device), vocabulary, width, depth and the dtype the engine loads the weights in —
    for a GGUF file the same answer before and after its unpacking. A hub id of the paper's models that cannot
    be read offline is described from its published config, with a note saying that its weights are not here."""
    from transformers import AutoModelForCausalLM

    note = ""
    try:
        config = load_config(source)
    except EngineError as exc:
        config = _published_config(source)
        if config is None:
            raise
        note = f"{exc} The sizes shown come from its published config."
    try:
        named = getattr(config, "architectures", None)
        if named is not None and not (isinstance(named, list) and all(isinstance(a, str) for a in named)):
            raise TypeError(f"architectures must be a list of class names, got {str(named)[:60]}")
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # noqa: BLE001 - a config with impossible sizes (0 heads, -1 tokens…), odd fields
        raise EngineError(f"the config of {source} does not describe a model transformers can build "
                          f"({type(exc).__name__}: {brief(exc, 200)}); check its config.json or re-save the "
                          "model.") from None
    parameters = sum(p.numel() for p in model.parameters())
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelInfo(source=source, architecture=type(model).__name__,
                     model_type=config.model_type, parameters=parameters,
                     vocab_size=getattr(text, "vocab_size", None), hidden_size=getattr(text, "hidden_size", None),
                     layers=getattr(text, "num_hidden_layers", None), dtype=_stored_dtype(source, config),
                     tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)), note=note)


def _stored_dtype(source: str, config: Any) -> str:
    """The weights' dtype as a plain name ("float16"); a GGUF file: the dtype its unpacked folder holds (or will
    hold: engine/models/gguf_source.py decides it from the header), never the header's missing value."""
    if not source.startswith(DEMO_PREFIX) and source.lower().endswith(".gguf"):
        from engine.models import gguf_source

        path = Path(source).expanduser()
        folder = gguf_source.cached_folder(path)
        recorded = gguf_source.source_info(folder).get("dtype") if folder is not None else None
        return recorded or str(gguf_source._storage_dtype(gguf_source.check_supported(path)["types"])).replace(
            "torch.", "")
    named = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(named).replace("torch.", "") if named else ""


def _published_config(source: str) -> Any:
    """The transformers config of a hub id among the paper's models (engine/models/known_configs.py), or
    None for any other source."""
    from transformers import AutoConfig

    from engine.models.known_configs import KNOWN_CONFIGS, known_config_name

    name = known_config_name(source)
    if name is None:
        return None
    known = dict(KNOWN_CONFIGS[name])
    return AutoConfig.for_model(known.pop("model_type"), **known)
