"""The wizard's method page offers the distillation methods the teacher/student pair allows, with the reason:
a teacher with another tokenizer turns token-level KD (and the pipeline, whose KD is token-level) off and picks
cross-tokenizer KD, which reaches the spec."""
from __future__ import annotations

import pytest

from engine.contract.model_info import ModelInfo

pytestmark = pytest.mark.usefixtures("home")


def test_different_tokenizers_offer_cross_tokenizer_kd_with_the_reason(window):
    window.go_to("New run")
    wizard = window.wizard
    models = wizard.models_page
    models.name.setText("cross-run")
    models.teacher.source.setEditText("demo:teacher_bpe")
    models.student.source.setEditText("demo:student")
    models._on_inspector_inspected("demo:teacher_bpe", ModelInfo("demo:teacher_bpe", vocab_size=1024,
                                                                 tokenizer_tokens=1024, vocab_digest="bpe"))
    models._on_inspector_inspected("demo:student", ModelInfo("demo:student", vocab_size=1472,
                                                             tokenizer_tokens=1430, vocab_digest="qwen"))
    assert "Different tokenizers" in models.compat.text()
    wizard.next()
    wizard.next()
    method = wizard.method_page
    assert "Different tokenizers" in method.pairing.text() and "cross-tokenizer KD" in method.pairing.text()
    assert not method.buttons["token_kd"].isEnabled() and not method.buttons["on_policy_kd"].isEnabled()
    assert not method.buttons["pipeline"].isEnabled()
    assert method.buttons["sequence_kd"].isEnabled() and method.method() == "cross_tokenizer_kd"
    assert method.validatePage()
    assert wizard.choices.method == "cross_tokenizer_kd"

    models._on_inspector_inspected("demo:teacher_bpe", ModelInfo("demo:teacher_bpe", vocab_size=1472,
                                                                 tokenizer_tokens=1430, vocab_digest="qwen"))
    method.initializePage()  # the same vocabulary: every method again
    assert method.buttons["token_kd"].isEnabled() and "Same vocabulary" in method.pairing.text()
