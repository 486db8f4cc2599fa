"""Chat-format and hub data: ShareGPT, OpenAI messages and Alpaca rows (built from real Dolly rows) become
records whose training labels sit on every assistant turn and nowhere else (checked token by token, with and
without a chat template); bad rows and hub tables missing the mapped column are refused with one sentence; any
hub data set id with config and split loads through ``datasets.load_dataset`` (replaced here: no network)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from engine.core.context import EngineError
from engine.contract.data.preview import preview_file
from engine.training_data.loading import load_records
from engine.training_data.formatting import IGNORE_INDEX, encode_example, prompt_texts
from engine.contract.spec import DataSpec, SpecError

sys.path.insert(0, str(Path(__file__).parents[1]))
from data_helpers import tiny_tokenizer, write_jsonl

DOLLY = [json.loads(line) for line in
         (Path(__file__).parents[1] / "fixtures" / "dolly_en_sample.jsonl").read_text(encoding="utf-8").splitlines()]
SYSTEM = "You answer briefly and accurately."


def _messages(pairs: list[dict], system: bool = True) -> list[dict]:
    turns = [{"role": "system", "content": SYSTEM}] if system else []
    for row in pairs:
        turns += [{"role": "user", "content": row["instruction"]}, {"role": "assistant", "content": row["response"]}]
    return turns


def _sharegpt(pairs: list[dict]) -> list[dict]:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [{"from": names[t["role"]], "value": t["content"]} for t in _messages(pairs)]


def _runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) spans of consecutive labelled positions."""
    spans, start = [], None
    for i, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_the_three_formats_load_from_files(tmp_path: Path) -> None:
    sharegpt = write_jsonl(tmp_path / "sharegpt.jsonl", [{"conversations": _sharegpt(DOLLY[i:i + 3])}
                                                         for i in range(0, 12, 3)])
    messages = write_jsonl(tmp_path / "messages.jsonl", [{"messages": _messages(DOLLY[i:i + 2]), "id": f"c{i}"}
                                                         for i in range(0, 8, 2)])
    alpaca = write_jsonl(tmp_path / "alpaca.jsonl", [{"instruction": r["instruction"], "input": r["context"],
                                                      "output": r["response"]} for r in DOLLY[:5]])
    records = load_records(DataSpec(preset="local", path=str(sharegpt)))
    assert len(records) == 4 and [t["role"] for t in records[0]["messages"]] == \
        ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert records[1]["instruction"] == DOLLY[5]["instruction"] and records[1]["response"] == DOLLY[5]["response"]
    assert load_records(DataSpec(preset="local", path=str(messages), format="messages"))[2]["id"] == "c4"
    rows = load_records(DataSpec(preset="local", path=str(alpaca)))
    assert [(r["instruction"], r["context"], r["response"], r["messages"]) for r in rows] == \
        [(d["instruction"], d["context"], d["response"], None) for d in DOLLY[:5]]
    preview = preview_file(sharegpt, limit=2)  # the wizard's preview reads chat files the same way
    assert preview.ok and preview.columns == ["conversations"] and preview.rows[0]["messages"][0]["role"] == "system"


@pytest.mark.parametrize("template", [True, False])
def test_labels_sit_on_every_assistant_turn_and_nowhere_else(template: bool, tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer(chat_template=template)
    path = write_jsonl(tmp_path / "chats.jsonl", [{"messages": _messages(DOLLY[:3])}])
    record = load_records(DataSpec(preset="local", path=str(path)))[0]
    example = encode_example(tokenizer, record, "local", 4096)
    ids, labels = example["input_ids"], example["labels"]
    assert len(ids) == len(labels) == len(example["attention_mask"])
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels))  # labels are the inputs
    spans = _runs(labels)
    assert len(spans) == 3  # one labelled span per assistant turn
    eos = tokenizer.eos_token
    assert [tokenizer.decode(ids[a:b]) for a, b in spans] == [DOLLY[i]["response"] + eos for i in range(3)]
    unlabelled = tokenizer.decode([t for t, label in zip(ids, labels) if label == IGNORE_INDEX])
    assert SYSTEM in unlabelled and all(DOLLY[i]["instruction"] in unlabelled for i in range(3))
    assert DOLLY[0]["response"] not in unlabelled and DOLLY[2]["response"] not in unlabelled  # ("Tope" is also in
    # the second question)
    # generation prompts (evaluation, KD, GRPO) are the conversation before the last answer
    prompt = prompt_texts(tokenizer, [record], "local")[0]
    assert tokenizer.decode(ids).startswith(prompt.rstrip()) and DOLLY[2]["instruction"] in prompt
    assert DOLLY[2]["response"] not in prompt and DOLLY[1]["response"] in prompt
    # truncated: later turns go first, labels stay on the answers that remain
    short = encode_example(tokenizer, record, "local", spans[1][0] + 3)
    assert len(short["input_ids"]) == spans[1][0] + 3 and len(_runs(short["labels"])) == 2


def test_bad_chat_rows_are_one_sentence_with_file_and_line(tmp_path: Path) -> None:
    rows = [{"messages": _messages(DOLLY[:1])},
            {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello?"}]}]
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    with pytest.raises(EngineError) as info:
        load_records(DataSpec(preset="local", path=str(path)))
    assert str(info.value) == (f"{path}:2: has no assistant turn (roles here: system, user); a chat record needs at "
                               "least one assistant message to learn from — add one, remove the row, or map your "
                               "answer role in data.roles.")
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"conversations": [{"from": "asker", "value": "2+2?"},
                                                                  {"from": "gpt", "value": "4"}]}])
    with pytest.raises(EngineError, match=r"odd.jsonl:1: conversations\[0\] has role 'asker'; map it to user"):
        load_records(DataSpec(preset="local", path=str(odd)))
    assert load_records(DataSpec(preset="local", path=str(odd), roles={"asker": "user"}))[0]["instruction"] == "2+2?"


class _FakeHub:
    """Stands in for datasets.load_dataset: records the arguments, returns a local Dataset."""

    def __init__(self, columns: dict) -> None:
        self.columns, self.calls = columns, []

    def __call__(self, path, name=None, split=None, revision=None, **kwargs):
        from datasets import Dataset

        self.calls.append((path, name, split))
        return Dataset.from_dict(self.columns)


def test_any_hub_data_set_with_config_split_and_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    chats = _FakeHub({"messages": [_messages(DOLLY[i:i + 2]) for i in range(0, 6, 2)], "source": ["a", "b", "c"]})
    monkeypatch.setattr(datasets, "load_dataset", chats)
    spec = DataSpec(preset="hub", hub_id="HuggingFaceH4/no_robots", hub_config="default", split="train_sft",
                    max_samples=2)
    records = load_records(spec)
    assert chats.calls == [("HuggingFaceH4/no_robots", "default", "train_sft[:2]")]
    assert len(records) == 2 and records[1]["response"] == DOLLY[3]["response"]

    pairs = _FakeHub({"prompt": [r["instruction"] for r in DOLLY[:3]],
                      "completion": [r["response"] for r in DOLLY[:3]]})
    monkeypatch.setattr(datasets, "load_dataset", pairs)
    with pytest.raises(EngineError) as info:
        load_records(DataSpec(preset="hub", hub_id="someone/pairs"))
    assert str(info.value) == ("data.columns.instruction: someone/pairs (train) has no column instruction; its "
                               "columns are prompt, completion; map instruction to one of them in data.columns.")
    mapped = load_records(DataSpec(preset="hub", hub_id="someone/pairs",
                                   columns={"instruction": "prompt", "response": "completion"}))
    assert [r["response"] for r in mapped] == [r["response"] for r in DOLLY[:3]]


def test_hub_data_set_offline_and_spec_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(EngineError) as info:
        load_records(DataSpec(preset="hub", hub_id="tatsu-lab/alpaca"))
    assert str(info.value).startswith("data.hub_id needs tatsu-lab/alpaca from the Hugging Face hub, which cannot "
                                      "be reached (ConnectionError); to use a copy instead, set data.path")
    with pytest.raises(SpecError, match="data.hub_id: '' is not a hub data set id"):
        DataSpec(preset="hub")
    with pytest.raises(SpecError, match="data.format: 'chatml' is not one of auto, columns, alpaca"):
        DataSpec(format="chatml")
    with pytest.raises(SpecError, match="data.roles: must map role names"):
        DataSpec(roles={"human": "person"})
