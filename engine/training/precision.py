"""Training precision: which dtype the trainable weights live in and whether the Trainer autocasts.

``train.precision`` is one of :data:`engine.contract.spec.PRECISIONS`:

* ``auto``: fp32 master weights with bf16 autocast on a GPU that supports bf16, fp16 autocast with loss scaling
  on one that does not, plain fp32 on the CPU and MPS (small models gain nothing from autocast there);
* ``bf16-mixed`` / ``fp16-mixed``: fp32 master weights, matmuls autocast to 16 bits (the Trainer's ``bf16`` /
  ``fp16`` flags; fp16 adds a gradient scaler);
* ``bf16-pure``: the weights themselves in bf16. At the paper's learning rates (1e-5 … 5e-5) most AdamW updates
  are smaller than bf16's resolution (2⁻⁸ relative) and round away, so this is only ever an explicit choice;
* ``fp32``: no autocast.

Frozen models (a teacher, a reference model) are not trained and keep their load dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.contract.errors import echo
from engine.core.context import EngineError

PURE_BF16_WARNING = ("train.precision is bf16-pure: the weights themselves are bfloat16, so AdamW updates smaller "
                     "than 1/256 of a weight round away (most of them at learning rates around 1e-5); use "
                     "bf16-mixed unless memory forces this.")


@dataclass(frozen=True)
class PrecisionPlan:
    name: str  # the resolved mode: bf16-mixed, fp16-mixed, bf16-pure or fp32
    weights: torch.dtype  # dtype of the trainable weights (the master copy the optimizer updates)
    compute: torch.dtype  # dtype the matmuls run in (also a 4-bit base's compute dtype)

    @property
    def trainer_flags(self) -> dict[str, bool]:
        """TrainingArguments' autocast switches (accelerate's mixed precision); pure modes need none."""
        return {"bf16": self.name == "bf16-mixed", "fp16": self.name == "fp16-mixed"}

    @property
    def pure_bf16(self) -> bool:
        return self.name == "bf16-pure"


_PLANS = {"bf16-mixed": (torch.float32, torch.bfloat16), "fp16-mixed": (torch.float32, torch.float16),
          "bf16-pure": (torch.bfloat16, torch.bfloat16), "fp32": (torch.float32, torch.float32)}


def _cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(requested: str, device: str, where: str = "train.precision") -> PrecisionPlan:
    """The plan for ``requested`` on ``device``; EngineError (one sentence naming ``where``) when the device
    cannot do it."""
    kind = device.split(":")[0]
    if requested == "auto":
        name = ("bf16-mixed" if _cuda_bf16() else "fp16-mixed") if kind == "cuda" else "fp32"
        return PrecisionPlan(name, *_PLANS[name])
    if requested not in _PLANS:
        raise EngineError(f"{where}: {echo(requested)} is not one of auto, {', '.join(_PLANS)}.")
    if requested == "fp16-mixed" and kind != "cuda":
        raise EngineError(f"{where} is fp16-mixed, which needs a CUDA GPU (its loss scaler and fp16 kernels), but "
                          f"the run trains on {kind}; use auto, bf16-mixed or fp32.")
    if requested.startswith("bf16") and kind == "cuda" and not _cuda_bf16():
        raise EngineError(f"{where} is {requested}, but this GPU does not support bfloat16; use auto (fp16 with "
                          "loss scaling) or fp32.")
    if requested == "bf16-mixed" and kind == "mps":
        raise EngineError(f"{where} is bf16-mixed, which the Trainer cannot autocast on MPS; use auto or fp32.")
    return PrecisionPlan(requested, *_PLANS[requested])
