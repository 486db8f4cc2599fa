"""Shared by the quantization, chat and memory tests: a tiny Qwen2 model with a small byte-level BPE tokenizer
and a chat template, saved as a normal transformers folder (no network, a second to build)."""
from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Distillation teaches a small model from a large one.",
    "Quantization stores weights in four bits.", "def add(a, b):\n    return a + b\n",
    "What is the capital of France? Paris is the capital of France.", "0 1 2 3 4 5 6 7 8 9 10 11 12",
]


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model(folder: Path, seed: int = 0, layers: int = 2, hidden: int = 64, vocab_size: int = 0) -> Path:
    """A random tiny Qwen2 (float32) + tokenizer in ``folder``; varied enough weights for non-trivial outputs.
    ``vocab_size`` larger than the tokenizer pads the embedding rows, as Qwen2.5 does (151,936 rows for a
    151,665-entry tokenizer)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = tiny_tokenizer()
    config = Qwen2Config(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=max(vocab_size, len(tokenizer)),
                         tie_word_embeddings=True, max_position_embeddings=512, initializer_range=0.2,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def write_gguf(hf_folder: Path, path: Path, *, quantized: bool = False, arch: str = "qwen2",
               raw_types: dict[str, str] | None = None) -> Path:
    """The tiny model as a GGUF file (llama.cpp's tensor names, GPT-2-style BPE tokenizer metadata), the way
    llama.cpp's converter writes a Qwen2 model; transformers reads it back through ``gguf_file``.

    Float32 by default; ``quantized`` stores embeddings and attention in Q8_0 and the MLP in Q4_0 (norms and
    biases stay F32, as llama.cpp keeps them). Like the converter, the token list is padded with ``[PAD<id>]``
    placeholders up to the model's embedding rows. ``arch`` writes another architecture name; ``raw_types``
    (tensor-name suffix → GGML type name) stores zero bytes of that type, for types nothing can de-quantize."""
    import json

    import gguf
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_folder)
    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(cfg, "rope_theta", 1e6)
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = set(tokenizer.all_special_tokens)
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t, _ in vocab]
    padding = [f"[PAD{i}]" for i in range(len(vocab), cfg.vocab_size)]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t for t, _ in vocab] + padding)
    writer.add_token_types(types + [gguf.TokenType.UNUSED] * len(padding))
    merges = state["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        data = tensor.float().numpy()
        raw = next((t for suffix, t in (raw_types or {}).items() if gguf_name.endswith(suffix)), None)
        if raw is not None:
            qtype = gguf.GGMLQuantizationType[raw]
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            nbytes = data.shape[0] * data.shape[1] // block * size
            writer.add_tensor(gguf_name, np.zeros((data.shape[0], nbytes // data.shape[0]), dtype=np.uint8),
                              raw_dtype=qtype)
        elif quantized and data.ndim == 2:
            qtype = gguf.GGMLQuantizationType.Q4_0 if "ffn" in gguf_name else gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
