"""Every choice list of a spec in one place — presets, data formats, divergences, KD methods, rewards, devices,
dtypes, precisions, experiment trackers, GGUF formats, stage kinds — read by the spec's checks, the wizard's
lists and the engine alike. Stdlib only."""
from __future__ import annotations

from engine.contract.data.chat import FORMATS
from engine.contract.data.presets import PRESETS

DATA_PRESETS = tuple(PRESETS)  # one home: engine/contract/data/presets.py
DATA_FORMATS = FORMATS  # one home: engine/contract/data/chat.py
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
QUANT_TYPES = ("nf4", "fp4")
KD_METHODS = ("token", "sequence", "on_policy")
REWARDS = ("format_strict", "format_lenient", "reasoning_structure", "length", "answer_correct", "code_tests")
DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = ("auto", "float32", "bfloat16", "float16")
BASE_MODELS = ("teacher", "student")
PRECISIONS = ("auto", "bf16-mixed", "fp16-mixed", "bf16-pure", "fp32")
# report_to integrations (transformers' names) → the pip package each needs
REPORT_TO = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio",
             "comet_ml": "comet-ml", "clearml": "clearml", "neptune": "neptune", "dvclive": "dvclive",
             "swanlab": "swanlab", "codecarbon": "codecarbon"}
GGUF_FORMATS = ("f16", "q8_0", "q4_0", "q4_k_m")
STAGE_KINDS = ("sft", "distill", "grpo", "quantize", "evaluate", "export")
