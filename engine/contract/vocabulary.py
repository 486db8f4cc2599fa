"""Every choice list of a spec in one place — presets, data formats, divergences, KD methods, rewards, devices,
dtypes, precisions, schedulers, distributed strategies, experiment trackers, GGUF formats — read by the
spec's checks, the wizard's lists, the command line's choices and the engine alike (the stage kinds are a table
of their own: stage_kinds.py). Add a choice here (and
its implementation where it is used); never write a list of them again elsewhere. Stdlib only."""
from __future__ import annotations

from engine.contract.data.chat import FORMATS
from engine.contract.data.presets import PRESETS

DATA_PRESETS = tuple(PRESETS)  # one home: engine/contract/data/presets.py
DATA_FORMATS = FORMATS  # one home: engine/contract/data/chat.py
# the presets whose data the embedded demo kit generates (no network); a preset's category says so
DEMO_PRESETS = tuple(name for name, preset in PRESETS.items() if preset.category == "demo")
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
QUANT_TYPES = ("nf4", "fp4")
KD_METHODS = ("token", "sequence", "on_policy", "cross_tokenizer")
# how an SFT stage writes its examples: the preset's prompt and response, or the chain-of-thought template
# (engine/contract/cot_template.py) that GRPO asks in and its rewards parse
SFT_FORMATS = ("plain", "cot_template")
REWARDS = ("format_strict", "format_lenient", "reasoning_structure", "length", "answer_correct", "code_tests")
DEVICES = ("auto", "cuda", "mps", "cpu")
# dtypes weights are computed in (4-bit matmuls de-quantize to one of these); "auto" picks one by device
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
DTYPES = ("auto", *COMPUTE_DTYPES)
BASE_MODELS = ("teacher", "student")
PRECISIONS = ("auto", "bf16-mixed", "fp16-mixed", "bf16-pure", "fp32")
SCHEDULERS = ("cosine", "linear", "constant")  # transformers' lr_scheduler_type names
# accelerate launch's strategies (engine/runner/launch.py maps each to its flags); a spec may instead name a
# full accelerate config as "config:/path/to/accelerate.yaml"
DISTRIBUTED_STRATEGIES = ("ddp", "fsdp", "deepspeed")
DISTRIBUTED_CONFIG_PREFIX = "config:"
# report_to integrations (transformers' names) → the pip package each needs
REPORT_TO = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio",
             "comet_ml": "comet-ml", "clearml": "clearml", "neptune": "neptune", "dvclive": "dvclive",
             "swanlab": "swanlab", "codecarbon": "codecarbon"}
# GGUF file types the export writes → what each is (the export dialog's labels)
GGUF_FORMAT_NOTES = {"f16": "full quality, 2 bytes per weight", "q8_0": "8-bit, near-lossless",
                     "q4_0": "4-bit, no extra package", "q4_k_m": "4-bit k-quant; needs llama-cpp-python"}
GGUF_FORMATS = tuple(GGUF_FORMAT_NOTES)
