"""Batches for training and scoring: right-padded ids, attention mask and labels (-100 where no loss is taken)."""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

import torch
from torch import Tensor

from engine.training_data.formatting import IGNORE_INDEX


def pad_collator(pad_id: int, pad_to_multiple_of: int | None = None) -> Callable[[list[dict]], dict[str, Tensor]]:
    """A collator that right-pads input_ids (pad_id), attention_mask (0) and labels (-100) to the longest row."""

    def collate(rows: list[dict[str, Any]]) -> dict[str, Tensor]:
        longest = max(len(r["input_ids"]) for r in rows)
        if pad_to_multiple_of:
            longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for r in rows:
            ids = list(r["input_ids"])
            gap = longest - len(ids)
            mask = list(r.get("attention_mask", [1] * len(ids)))
            labels = list(r.get("labels", ids))
            batch["input_ids"].append(ids + [pad_id] * gap)
            batch["attention_mask"].append(mask + [0] * gap)
            batch["labels"].append(labels + [IGNORE_INDEX] * gap)
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}  # each [B, L]
        # the row numbers cached teacher targets are looked up by (engine/training/teacher_targets.py)
        if "row" in rows[0]:
            out["row"] = torch.tensor([r["row"] for r in rows], dtype=torch.long)  # [B]
        return out

    return collate
