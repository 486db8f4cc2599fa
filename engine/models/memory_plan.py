"""Memory checked before loading: each stage's peak estimated from the models' configs (parameters counted on
the meta device, no weight read), a refusal when it does not fit, and the cheapest change of the spec that fits.

Per training stage the peak is the sum of (bytes):

* weights ``P · w`` (w = 4 in fp32, 2 in bf16/fp16; 4-bit linears as in engine/models/memory.py) and, for LoRA, the
  adapters' ``r · (in + out)`` per adapted linear;
* gradients and AdamW state for the trainable parameters: ``T · (g + 8)`` (two fp32 moments; an 8-bit optimizer
  ``T · (g + 2)``);
* activations kept for backward: per layer and token ``a · (ACT_H · h + ACT_I · I + ACT_KV · kv)`` (a = 4 in
  fp32, 2 under bf16/fp16 autocast), for ``batch × max_length`` tokens (the worst padded batch); with gradient
  checkpointing only each layer's input ``a · h`` is kept, plus one layer's set while it is recomputed;
* the loss: the transformers default holds the batch's ``[B, L, V]`` logits several times (LOGIT_COPIES, fp32);
  the chunked losses (engine/training/chunked_losses.py, engine/training/losses.py) hold 2-3 ``[chunk, V]`` fp32 buffers
  and an fp32 ``[V, H]`` gradient of the head;
* token KD: the teacher's weights and hidden states (live), or nothing of the teacher while training from its
  cached targets (building the cache is a separate, smaller phase: teacher weights + a no-grad forward);
* generation (teacher answers, GRPO, evaluation): the KV cache ``2 · layers · kv · a`` per token of
  ``batch × (max_length + max_new_tokens)``.

The constants were fitted to measured CPU peaks (bench/memory_check.py, bench/RESULTS.md: within ±25 %).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

from engine.contract.errors import echo
from engine.contract.stage_kinds import stage_kind
from engine.core.context import EngineError
from engine.models import memory
from engine.models.memory_sentences import refusal, unknown_sentence
from engine.models.known_configs import KNOWN_CONFIGS, known_config_name  # the table moved; its readers here stay

log = logging.getLogger(__name__)

ACT_H, ACT_I, ACT_KV = 16, 4, 4  # saved activations per layer and token, in units of h, I and the kv width
LOGIT_COPIES = 4  # the default causal-LM loss: logits, their fp32 copy, log-softmax, gradient
# [chunk, V] fp32 buffers alive at once in the chunked losses (logits consumed in place into the gradient):
CHUNK_COPIES = {"sft": 2, "cached": 3, "live": 3}
CUDA_CONTEXT_BYTES = 600 * 2**20  # CUDA context, cuBLAS workspace, allocator reserve
SLACK = 1.10  # allocator fragmentation
GB = 1e9


def config_of(source: str) -> dict:
    """The (text) config of a model source; hub ids of the paper's models work offline (KNOWN_CONFIGS)."""
    name = source.rsplit("/", 1)[-1].lower().replace("-instruct", "").replace("-coder", "")
    if known_config_name(source):
        return dict(KNOWN_CONFIGS[name])  # a hub id of the paper's models: no network round trip
    try:
        config = memory._config_dict(source)
    except (EngineError, OSError, ValueError) as exc:
        if name in KNOWN_CONFIGS:
            return dict(KNOWN_CONFIGS[name])
        raise EngineError(f"cannot estimate the memory of {echo(source)}: its config is unreadable ({exc})") from None
    for key in ("hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads"):
        value = config.get(key, 1 if key == "num_attention_heads" else None)  # every size the estimate divides by
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise EngineError(f"cannot estimate the memory of {echo(source)}: its config's {key} is {echo(value)}, "
                              "not a positive whole number; check its config.json or re-save the model.")
    return config


@dataclasses.dataclass
class Dims:
    params: int
    lora_params: int  # adapters of every linear in the blocks at rank 1 (multiply by r)
    hidden: int
    inter: int
    layers: int
    kv_width: int
    vocab: int
    config: dict


def dims(config: dict) -> Dims:
    """Parameter counts from the config (on the meta device when transformers knows the architecture)."""
    c = config
    h, layers = int(c["hidden_size"]), int(c["num_hidden_layers"])
    n_q = int(c.get("num_attention_heads") or 1)
    d = int(c.get("head_dim") or h // n_q)
    kv = int(c.get("num_key_value_heads") or n_q) * d
    inter = int(c.get("intermediate_size") or 4 * h)
    params = memory.count_parameters(c)["total"]
    # adapters at rank 1 on q, k, v, o, gate, up, down: (in + out) each
    lora = layers * ((h + n_q * d) * 2 + 2 * (h + kv) + 3 * (h + inter))
    try:
        params = _meta_parameters(c)
    except Exception as exc:  # noqa: BLE001 - an unknown architecture: the formula's count stands
        log.debug("meta-device count failed (%s); using the formula", exc)
    return Dims(params, lora, h, inter, layers, kv, int(c["vocab_size"]), c)


def _meta_parameters(config: dict) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def _weights(d: Dims, width: int, four_bit: bool) -> int:
    if four_bit:
        return memory.weight_bytes(d.config, "float32" if width == 4 else "bfloat16", True)["total"]
    return d.params * width


def _activations(d: Dims, tokens: int, act: int, checkpointing: bool) -> int:
    per_layer_token = act * (ACT_H * d.hidden + ACT_I * d.inter + ACT_KV * d.kv_width)
    if checkpointing:
        return tokens * (d.layers * act * d.hidden + per_layer_token)
    return tokens * d.layers * per_layer_token


def _kv_cache(d: Dims, sequences: int, length: int, act: int) -> int:
    return 2 * d.layers * d.kv_width * act * sequences * length


def _widths(spec: Any, stage: Any, model_spec: Any, device: str) -> tuple[int, int]:
    """(bytes per trained weight, bytes per activation) for a stage on a device."""
    if device != "cuda":
        return 4, 4
    precision = getattr(stage.train, "precision", None)
    if precision == "bf16-pure":
        return 2, 2
    if precision == "fp32":
        return 4, 4
    if precision is not None:  # auto / bf16-mixed / fp16-mixed: fp32 master weights, 16-bit activations
        return 4, 2
    width = 4 if model_spec.dtype == "float32" else 2  # without a precision setting, dtype auto trains in bf16
    return width, width


def _frozen_width(model_spec: Any, device: str) -> int:
    if model_spec.dtype == "float32" or (model_spec.dtype == "auto" and device != "cuda"):
        return 4
    return 2


def _base_spec(spec: Any, ref: str) -> tuple[Any, bool]:
    """(ModelSpec, is a base model) of a stage's model reference: a stage output keeps its base's config and
    dtype and is saved in full precision."""
    from engine.contract.spec import BASE_MODELS, ModelSpec, base_model_of

    base = base_model_of(spec, ref)
    model_spec = getattr(spec, base) if base in BASE_MODELS else ModelSpec(source=base)
    if base != ref:
        return dataclasses.replace(model_spec, load_in_4bit=False), False
    return model_spec, True


def _training(spec: Any, stage: Any, device: str, dims_of: Any, tokens: int) -> dict[str, int]:
    model_spec, _ = _base_spec(spec, stage.model)
    d = dims_of(model_spec.source)
    t = stage.train
    w, act = _widths(spec, stage, model_spec, device)
    four_bit = model_spec.load_in_4bit or getattr(t.lora, "quantized_base", False)  # QLoRA
    lora = t.lora.enabled or four_bit  # 4-bit weights train only through adapters
    trainable = d.lora_params * t.lora.r if lora else d.params
    eight_bit = "8bit" in str(getattr(t, "optimizer", "")).replace("-", "")
    head_grad = 0 if lora else d.vocab * d.hidden * 4  # the chunked losses' fp32 head-gradient accumulator
    activations = _activations(d, tokens, act, t.gradient_checkpointing) + head_grad
    if lora and t.lora.dropout > 0 and not t.gradient_checkpointing:
        # peft keeps each adapted linear's dropped-out input: q/k/v/o/gate/up take h wide inputs, down I wide
        activations += tokens * d.layers * act * (6 * d.hidden + d.inter)
    return {"weights": _weights(d, w, four_bit) + (trainable * 4 if lora else 0),
            "gradients": trainable * (4 if lora else w), "optimizer": trainable * (2 if eight_bit else 8),
            "activations": activations}


def _teacher(spec: Any, stage: Any, device: str, dims_of: Any, tokens: int, gen: int = 0) -> dict[str, int]:
    """A frozen teacher: weights, hidden states and one layer's no-grad forward; ``gen`` tokens of KV cache."""
    teacher_spec, _ = _base_spec(spec, stage.teacher)
    d = dims_of(teacher_spec.source)
    w = _frozen_width(teacher_spec, device)
    forward = tokens * w * (2 * d.hidden + 2 * d.inter)
    return {"teacher": _weights(d, w, teacher_spec.load_in_4bit) + forward + _kv_cache(d, 1, gen, w)}


def _chunk(stage: Any, data: Any, n: int, vocab: int, kind: str = "live") -> int:
    """The chunked losses' fp32 [chunk, V] buffers for ``n``-token chunks of the stage's batch."""
    return CHUNK_COPIES[kind] * min(n, stage.train.batch_size * data.max_length) * vocab * 4


def _sft_parts(spec: Any, stage: Any, device: str, dims_of: Any) -> dict[str, int]:
    tokens = stage.train.batch_size * spec.data.max_length
    d = dims_of(_base_spec(spec, stage.model)[0].source)
    return {**_training(spec, stage, device, dims_of, tokens), "loss": _chunk(stage, spec.data, 256, d.vocab, "sft")}


def _distill_parts(spec: Any, stage: Any, device: str, dims_of: Any) -> dict[str, int]:
    data, dist = spec.data, stage.distill
    tokens = stage.train.batch_size * data.max_length
    d = dims_of(_base_spec(spec, stage.model)[0].source)
    gen_tokens = stage.generation.batch_size * (data.max_length + dist.max_new_tokens)
    if (dist.method == "token" and dist.teacher_cache.enabled) or dist.method == "cross_tokenizer":
        train = {**_training(spec, stage, device, dims_of, tokens),
                 "loss": _chunk(stage, data, dist.chunk_size, d.vocab, "cached")}
        build = _teacher(spec, stage, device, dims_of, dist.teacher_cache.batch_size * data.max_length)
        build["loss"] = 3 * 256 * d.vocab * 4
        answers = _teacher(spec, stage, device, dims_of, 0, gen_tokens) if stage.references < 1 else {}
        return max((train, build, answers), key=lambda p: sum(p.values()))
    if dist.method == "sequence":
        return _sft_parts(spec, stage, device, dims_of)
    parts = {**_training(spec, stage, device, dims_of, tokens), "loss": _chunk(stage, data, dist.chunk_size, d.vocab)}
    extra = gen_tokens if dist.method == "on_policy" or stage.references < 1 else 0
    return {**parts, **_teacher(spec, stage, device, dims_of, tokens, extra)}


def _grpo_parts(spec: Any, stage: Any, device: str, dims_of: Any) -> dict[str, int]:
    g, batch = stage.grpo, stage.train.batch_size
    d = dims_of(_base_spec(spec, stage.model)[0].source)
    seq = spec.data.max_length + g.max_completion_length
    parts = _training(spec, stage, device, dims_of, batch * seq)
    act = _widths(spec, stage, _base_spec(spec, stage.model)[0], device)[1]
    parts["loss"] = LOGIT_COPIES * batch * g.max_completion_length * d.vocab * 4
    parts["kv_cache"] = _kv_cache(d, batch, seq, act)
    if g.beta > 0:
        parts["reference"] = d.params * act
    return parts


def _quantize_parts(spec: Any, stage: Any, device: str, dims_of: Any) -> dict[str, int]:
    config = config_of(_base_spec(spec, stage.model)[0].source)
    return {"weights": memory.estimate_model_bytes(config, "bfloat16")
            + memory.estimate_model_bytes(config, "bfloat16", True)}


def _inference_parts(spec: Any, stage: Any, device: str, dims_of: Any) -> dict[str, int]:
    """One frozen model at a time, answering a batch (its weights and KV cache)."""
    sizes = []
    for ref in (getattr(stage, "models", None) or {stage.model: stage.model}).values():
        model_spec, _ = _base_spec(spec, ref)
        d, w, gen = dims_of(model_spec.source), _frozen_width(model_spec, device), stage.generation
        sizes.append(_weights(d, w, model_spec.load_in_4bit)
                     + _kv_cache(d, gen.batch_size, spec.data.max_length + gen.max_new_tokens, w))
    return {"weights": max(sizes)}


def _weights_parts(spec: Any, stage: Any, device: str, dims_of: Any) -> dict[str, int]:
    """A model read to be written out again (GGUF export): its weights, nothing generated."""
    model_spec, _ = _base_spec(spec, stage.model)
    return {"weights": _weights(dims_of(model_spec.source), _frozen_width(model_spec, device),
                                model_spec.load_in_4bit)}


# the estimate of each entry the contract's stage-kind table names (StageKind.memory)
ESTIMATES = {"sft": _sft_parts, "distill": _distill_parts, "grpo": _grpo_parts, "quantize": _quantize_parts,
             "inference": _inference_parts, "weights": _weights_parts}


def stage_parts(spec: Any, stage: Any, device: str, dims_of: Any) -> dict[str, int]:
    """Bytes by part at the stage's peak (before slack and the CUDA context)."""
    return ESTIMATES[stage_kind(stage).memory](spec, stage, device, dims_of)


def _dims_cache() -> Any:
    cache: dict[str, Dims] = {}

    def dims_of(source: str) -> Dims:
        if source not in cache:
            cache[source] = dims(config_of(source))
        return cache[source]

    return dims_of


def stage_peak(spec: Any, stage: Any, device: str, dims_of: Any = None) -> tuple[int, dict[str, int]]:
    parts = stage_parts(spec, stage, device, dims_of or _dims_cache())
    fixed = CUDA_CONTEXT_BYTES if device == "cuda" else 0
    return int(sum(parts.values()) * SLACK) + fixed, parts


def _changes(spec: Any, stage: Any) -> list[tuple[str, Any]]:
    """Changes that lower a stage's peak, cheapest first (least effect on the result), each (text, apply)."""
    out: list[tuple[str, Any]] = []
    trains = stage_kind(stage).trains
    t = stage.train if trains else None
    if trains and not t.gradient_checkpointing:
        out.append(("train.gradient_checkpointing: true", lambda s, st: setattr(st.train, "gradient_checkpointing",
                                                                                True)))
    if stage.kind == "distill" and stage.distill.method == "token" and not stage.distill.teacher_cache.enabled:
        out.append(("distill.teacher_cache.enabled: true",
                    lambda s, st: setattr(st.distill.teacher_cache, "enabled", True)))
    if stage.kind == "distill" and stage.teacher in ("teacher", "student") and \
            not getattr(spec, stage.teacher).load_in_4bit:
        out.append((f"{stage.teacher}.load_in_4bit: true (a 4-bit teacher)",
                    lambda s, st: setattr(getattr(s, st.teacher), "load_in_4bit", True)))
    if trains and t.batch_size > 1:
        half = t.batch_size // 2
        out.append((f"train.batch_size: {half} with train.gradient_accumulation: {t.gradient_accumulation * 2} "
                    "(the same effective batch)",
                    lambda s, st: (setattr(st.train, "batch_size", half),
                                   setattr(st.train, "gradient_accumulation", st.train.gradient_accumulation * 2))))
    if trains and hasattr(t, "optimizer") and "8bit" not in str(t.optimizer):
        out.append(("train.optimizer: adamw_8bit (an 8-bit optimizer)",
                    lambda s, st: setattr(st.train, "optimizer", "adamw_8bit")))
    if trains and not t.lora.enabled:
        out.append(("train.lora.enabled: true (LoRA)", lambda s, st: setattr(st.train.lora, "enabled", True)))
    if trains and hasattr(t.lora, "quantized_base") and not t.lora.quantized_base:
        out.append(("train.lora.quantized_base: true (QLoRA)",
                    lambda s, st: (setattr(st.train.lora, "enabled", True),
                                   setattr(st.train.lora, "quantized_base", True))))
    if spec.data.max_length >= 32:
        out.append((f"data.max_length: {spec.data.max_length // 2} (shorter sequences)",
                    lambda s, st: setattr(s.data, "max_length", s.data.max_length // 2)))
    return out


def cheapest_fit(spec: Any, stage: Any, device: str, available: int, dims_of: Any) -> tuple[str, int] | None:
    """The first single change that fits, else the shortest run of them (in order) that does; None if none."""
    changes = _changes(spec, stage)
    index = spec.stages.index(stage)
    for text, apply in changes:
        trial = copy.deepcopy(spec)
        apply(trial, trial.stages[index])
        peak, _ = stage_peak(trial, trial.stages[index], device, dims_of)
        if peak <= available:
            return text, peak
    trial, texts = copy.deepcopy(spec), []
    for text, apply in changes:
        apply(trial, trial.stages[index])
        texts.append(text)
        peak, _ = stage_peak(trial, trial.stages[index], device, dims_of)
        if peak <= available:
            return "; ".join(texts), peak
    return None


def lowering_change(spec: Any, stage: Any, device: str) -> str | None:
    """The cheapest single change that lowers ``stage``'s estimated peak (what to try after it ran out of memory
    although the estimate fitted); None when no listed change lowers it."""
    dims_of = _dims_cache()
    peak, _ = stage_peak(spec, stage, device, dims_of)
    index = spec.stages.index(stage)
    for text, apply in _changes(spec, stage):
        trial = copy.deepcopy(spec)
        apply(trial, trial.stages[index])
        if stage_peak(trial, trial.stages[index], device, dims_of)[0] < peak:
            return text
    return None


def plan(spec: Any, device: str, available: int | None = None) -> dict:
    """Every stage's estimated peak, whether it fits in ``available`` bytes (default: what the device has
    free), and for those that do not, the cheapest change that fits."""
    available = memory.available_bytes(device) if available is None else int(available)
    dims_of = _dims_cache()
    stages = []
    for stage in spec.stages:
        try:
            peak, parts = stage_peak(spec, stage, device, dims_of)
        except EngineError as exc:  # e.g. a hub config without network: the load itself will say what is wrong
            stages.append({"stage": stage.name, "kind": stage.kind, "peak_bytes": None, "fits": None,
                           "error": str(exc)})
            continue
        entry = {"stage": stage.name, "kind": stage.kind, "peak_bytes": peak, "fits": peak <= available,
                 "parts": {k: int(v) for k, v in parts.items() if v}}
        if not entry["fits"]:
            fix = cheapest_fit(spec, stage, device, available, dims_of)
            entry["fix"] = None if fix is None else {"change": fix[0], "peak_bytes": fix[1]}
        stages.append(entry)
    verdicts = [s["fits"] for s in stages]
    # unknown is not "fits": one stage that cannot be estimated leaves the whole plan unknown (unless another
    # stage already does not fit), and the peak is only given when every stage has one
    fits = False if False in verdicts else None if None in verdicts else True
    peaks = [s["peak_bytes"] for s in stages if s["peak_bytes"] is not None]
    report = {"device": device, "available_bytes": available, "fits": fits,
              "peak_bytes": max(peaks) if peaks and len(peaks) == len(stages) else None, "stages": stages}
    if fits is None:
        report["unknown"] = unknown_sentence(report)
    return report


def check_plan(spec: Any, device: str, available: int | None = None) -> dict:
    """Raise EngineError (one sentence) when a stage will not fit; returns the plan otherwise."""
    report = plan(spec, device, available)
    message = refusal(report)
    if message:
        raise EngineError(message)
    return report
