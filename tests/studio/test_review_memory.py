"""The review page shows the engine's memory estimate (``compression-engine preflight``, run in the background):
the line says whether the plan fits and, when it does not, the engine's sentence with the cheapest change."""
from __future__ import annotations

import pytest

from studio.model.memory_summary import memory_summary

pytestmark = pytest.mark.usefixtures("home")


def test_memory_summary_lines() -> None:
    report = {"device": "cuda", "available_bytes": 80e9, "peak_bytes": 58e9, "fits": True,
              "stages": [{"stage": "teacher_sft", "peak_bytes": 58e9, "fits": True},
                         {"stage": "kd", "peak_bytes": 19.4e9, "fits": True},
                         {"stage": "eval", "peak_bytes": 0, "fits": None, "error": "offline"}]}
    line = memory_summary(report)
    assert "peak 58.0 GB of 80.0 GB GPU available — fits" in line and "kd 19.4 GB" in line
    assert "eval (no estimate)" in line
    refused = memory_summary({**report, "fits": False, "refusal": "stage teacher_sft needs <a lot>"})
    assert "does not fit" in refused and "&lt;a lot&gt;" in refused  # the engine's sentence, escaped
    unknown = memory_summary({**report, "fits": None, "peak_bytes": None,
                              "unknown": "the memory of stage eval cannot be estimated (offline)"})
    assert "peak unknown" in unknown and "— fits" not in unknown and "cannot be estimated (offline)" in unknown


def test_review_page_shows_the_engines_estimate(window, qtbot, monkeypatch) -> None:
    from engine.contract.spec import RunSpec, build

    monkeypatch.setenv("FAKE_ENGINE_MEMORY_GB", "24")
    window.go_to("New run")
    wizard = window.wizard
    spec = build(RunSpec, {"name": "mem", "stages": [{"kind": "sft", "name": "teacher_sft", "model": "teacher"}]})
    wizard.open_spec("unused.yaml", spec)
    review = wizard.review_page
    assert wizard.currentPage() is review
    qtbot.waitUntil(lambda: review.memory_report is not None, timeout=20000)
    assert review.memory_report["fits"] is False
    assert "does not fit" in review.memory.text() and "cheapest change that fits" in review.memory.text()


def test_an_invalid_edit_says_why_memory_is_unknown(window, qtbot, monkeypatch) -> None:
    from engine.contract.spec import RunSpec, build

    monkeypatch.setenv("FAKE_ENGINE_MEMORY_GB", "24")
    window.go_to("New run")
    wizard = window.wizard
    spec = build(RunSpec, {"name": "mem", "stages": [{"kind": "sft", "name": "teacher_sft", "model": "teacher"}]})
    wizard.open_spec("unused.yaml", spec)
    review = wizard.review_page
    qtbot.waitUntil(lambda: review.memory_report is not None, timeout=20000)
    review.yaml.setPlainText(review.yaml.toPlainText().replace("name: mem", "name: [", 1))
    assert not review.apply_yaml()
    assert "Memory</b>: unknown — the spec above has an error" in review.memory.text()
    review.show_memory({"fits": True, "peak_bytes": 1e9, "available_bytes": 8e9, "stages": []})  # a late answer
    assert "unknown — the spec above has an error" in review.memory.text() and review.memory_report is None
