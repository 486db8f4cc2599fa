"""The wizard's data page with chat files and hub data sets: a ShareGPT file previews as conversations (no column
mapping asked for), a chat row without an answer is refused at its line, and a hub data set's id, config, split
and format reach the spec."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("home")


@pytest.fixture
def data_page(window):
    window.go_to("New run")
    window.wizard.next()
    return window.wizard.data_page


def _chat(question: str, answer: str | None) -> dict:
    turns = [{"from": "system", "value": "Be brief."}, {"from": "human", "value": question}]
    return {"conversations": turns + ([{"from": "gpt", "value": answer}] if answer else [])}


def test_a_chat_file_previews_as_conversations(data_page, window, tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(_chat(f"What is {i} + 1?", str(i + 1))) + "\n" for i in range(5)))
    data_page.set_preset("local")
    data_page.set_path(str(path))
    preview = data_page.last_preview
    assert preview.ok and len(preview.rows) == 5 and data_page.mapping_box.isHidden()
    headers = [data_page.table.horizontalHeaderItem(c).text() for c in range(data_page.table.columnCount())]
    assert headers[0] == "conversation"
    assert data_page.table.item(0, 0).toolTip() == "system: Be brief.\nuser: What is 0 + 1?\nassistant: 1"
    path.write_text(path.read_text() + json.dumps(_chat("Unanswered?", None)) + "\n")
    data_page.refresh_preview()
    window.wizard.next()
    assert window.wizard.currentPage() is data_page
    assert f"{path}:6: has no assistant turn" in data_page.error_label.text()


def test_hub_fields_reach_the_spec(data_page, window):
    assert data_page.hub_row.isHidden()
    data_page.set_preset("hub")
    assert not data_page.hub_row.isHidden()
    window.wizard.next()  # no id yet: refused with the spec's sentence
    assert window.wizard.currentPage() is data_page and "data.hub_id" in data_page.error_label.text()
    data_page.hub_id.setText("HuggingFaceH4/no_robots")
    data_page.split.setText("train_sft")
    data_page.format.setCurrentIndex(data_page.format.findData("messages"))
    window.wizard.next()
    assert window.wizard.currentPage() is window.wizard.method_page
    data = window.wizard.choices.data
    assert (data.preset, data.hub_id, data.hub_config, data.split, data.format) == \
        ("hub", "HuggingFaceH4/no_robots", "", "train_sft", "messages")


def test_a_file_given_under_a_demo_preset_becomes_the_local_data(data_page, window, tmp_path):
    """Typing a file's path while the demo kit is chosen used to keep the demo (the file silently unused, no
    preview, no mapping): the file is the user's data, so the page switches to it and asks for its columns."""
    path = tmp_path / "qa.csv"
    path.write_text("q,a\nWhat is 2+2?,4\nName a colour,red\n")
    assert data_page.preset_key() == "demo"
    data_page.path.setText(str(path))
    data_page.path.editingFinished.emit()
    assert data_page.preset_key() == "local" and not data_page.mapping_box.isHidden()
    assert data_page.mapping["instruction"].findText("q") >= 0  # the file's columns are offered
    data_page.set_column("instruction", "q")
    data_page.set_column("response", "a")
    window.wizard.next()
    data = window.wizard.choices.data
    assert (data.preset, data.path, data.columns) == ("local", str(path), {"instruction": "q", "response": "a"})
