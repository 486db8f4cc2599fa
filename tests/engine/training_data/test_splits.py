"""engine.training_data.splits: seeded, deterministic, disjoint, non-empty where asked, clear errors otherwise."""
from __future__ import annotations

import pytest

from engine.core.context import EngineError
from engine.training_data.splits import split_records
from engine.contract.spec import DataSpec


def _records(n: int) -> list[dict]:
    return [{"id": f"r{i}", "instruction": f"q{i}", "response": f"a{i}"} for i in range(n)]


def test_sizes_disjoint_and_complete():
    records = _records(200)
    splits = split_records(records, DataSpec(validation_fraction=0.05, test_fraction=0.1, seed=3))
    assert splits.sizes() == {"train": 170, "validation": 10, "test": 20}
    ids = [r["id"] for part in (splits.train, splits.validation, splits.test) for r in part]
    assert sorted(ids) == sorted(r["id"] for r in records)
    assert [r["id"] for r in splits.test] == sorted((r["id"] for r in splits.test), key=lambda s: int(s[1:]))


def test_seeded_and_deterministic():
    records = _records(100)
    a = split_records(records, DataSpec(seed=1))
    b = split_records(records, DataSpec(seed=1))
    c = split_records(records, DataSpec(seed=2))
    assert a == b
    assert [r["id"] for r in a.test] != [r["id"] for r in c.test]
    assert [r["id"] for r in a.test] != [r["id"] for r in records[:len(a.test)]]  # shuffled, not the head


def test_small_data_gets_one_record_per_nonzero_split():
    splits = split_records(_records(3), DataSpec(validation_fraction=0.01, test_fraction=0.01))
    assert splits.sizes() == {"train": 1, "validation": 1, "test": 1}
    splits = split_records(_records(5), DataSpec(validation_fraction=0.0, test_fraction=0.2))
    assert splits.sizes() == {"train": 4, "validation": 0, "test": 1}


def test_empty_splits_are_errors_naming_the_field():
    with pytest.raises(EngineError, match=r"^data.test_fraction: 2 records leave none for training"):
        split_records(_records(2), DataSpec(validation_fraction=0.05, test_fraction=0.1))
    with pytest.raises(EngineError, match="no records"):
        split_records([], DataSpec())
