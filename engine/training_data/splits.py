"""Train / validation / test splits: seeded, deterministic, and never silently empty.

Records are shuffled with ``random.Random(seed)``; the test and validation parts take ``round(n × fraction)``
records each, at least one when their fraction is above zero; the rest trains. Each split keeps the records'
source order, so the same seed and data always give the same three lists.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from engine.core.context import EngineError
from engine.contract.spec import DataSpec


@dataclass
class Splits:
    train: list[dict] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def _count(n: int, fraction: float) -> int:
    return max(1, round(n * fraction)) if fraction > 0 else 0


def split_records(records: list[dict], spec: DataSpec) -> Splits:
    """Split ``records`` by ``spec.test_fraction`` / ``spec.validation_fraction`` with ``spec.seed``."""
    n = len(records)
    if n == 0:
        raise EngineError("data: there are no records to split; check data.path, data.preset and data.max_samples.")
    n_test = _count(n, spec.test_fraction)
    n_validation = _count(n, spec.validation_fraction)
    if n - n_test - n_validation < 1:
        raise EngineError(f"data.test_fraction: {n} records leave none for training after {n_test} for test and "
                          f"{n_validation} for validation; add records (data.max_samples) or lower "
                          f"data.test_fraction / data.validation_fraction.")
    order = list(range(n))
    random.Random(spec.seed).shuffle(order)
    test = sorted(order[:n_test])
    validation = sorted(order[n_test:n_test + n_validation])
    train = sorted(order[n_test + n_validation:])
    return Splits(train=[records[i] for i in train], validation=[records[i] for i in validation],
                  test=[records[i] for i in test])
