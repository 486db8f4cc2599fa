"""engine.evaluation.scores on fixed strings whose ROUGE-L (LCS-based F1) is worked out by hand."""
from __future__ import annotations

import pytest

from engine.evaluation.scores import exact_match, retention, rouge_l, score_predictions, states_answer


def _f1(lcs: int, pred_len: int, ref_len: int) -> float:
    p, r = lcs / pred_len, lcs / ref_len
    return 2 * p * r / (p + r)


def test_rouge_l_by_hand():
    # LCS("the cat sat", "the cat sat on the mat") = 3 → P = 3/3, R = 3/6, F1 = 2/3
    assert rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    # order matters: LCS("b a", "a b") = 1 → P = R = 1/2
    assert rouge_l("b a", "a b") == pytest.approx(0.5)
    # LCS("the mat sat on the cat", "the cat sat on the mat") = "the sat on the" = 4 of 6 each
    assert rouge_l("the mat sat on the cat", "the cat sat on the mat") == pytest.approx(_f1(4, 6, 6))
    assert rouge_l("The Cat, sat!", "the cat sat") == pytest.approx(1.0)  # case and punctuation ignored
    assert rouge_l("", "the cat") == 0.0 and rouge_l("dog", "the cat") == 0.0


def test_rouge_l_stems_like_rouge_score():
    # Porter: cats → cat, running → run, runs → run
    assert rouge_l("cats running", "cat runs") == pytest.approx(1.0)


def test_rouge_l_keeps_spanish_accents():
    # rouge_score's default tokenizer would turn "niño" into "ni o" and "comió"/"comí" both into "comi"
    assert rouge_l("el niño comió pan", "el niño comió") == pytest.approx(_f1(3, 4, 3))
    assert rouge_l("comió", "comí") == 0.0  # different words, not a match on the ASCII fragment "comi"
    assert rouge_l("el niño", "el nino") == pytest.approx(0.5)  # LCS 1 of 2 tokens each
    assert rouge_l("¿Dónde está la canción?", "dónde está la canción") == pytest.approx(1.0)


def test_exact_match_normalisation():
    assert exact_match("  Paris. ", "paris") == 1.0
    assert exact_match("The  answer\nis 42!", "the answer is 42") == 1.0
    assert exact_match("Paris", "Paris, France") == 0.0
    assert exact_match("Sí", "sí.") == 1.0


def test_score_predictions_overall_and_per_category():
    records = [{"response": "the cat sat on the mat", "category": "a", "answer": None},
               {"response": "Paris", "category": "a", "answer": None},
               {"response": "a b", "category": "b", "answer": None}]
    preds = ["the cat sat", "paris.", "b a"]
    scores = score_predictions(records, preds)
    assert scores["n"] == 3
    assert scores["rougeL"] == pytest.approx((2 / 3 + 1.0 + 0.5) / 3)
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["per_category"]["a"] == pytest.approx({"rougeL": (2 / 3 + 1) / 2, "exact_match": 0.5, "n": 2})
    assert scores["per_category"]["b"] == pytest.approx({"rougeL": 0.5, "exact_match": 0.0, "n": 1})
    assert "answer_accuracy" not in scores
    with pytest.raises(ValueError):
        score_predictions(records, preds[:2])


def test_answer_accuracy_for_records_with_answers():
    records = [{"response": "3 + 4 = 7.", "category": "math", "answer": "7"},
               {"response": "She has 12 apples.", "category": "math", "answer": "12"},
               {"response": "The capital is Paris.", "category": "qa", "answer": "Paris"}]
    scores = score_predictions(records, ["3 + 4 = 7", "She had 10, now 13 apples.", "It is paris!"])
    assert scores["answer_accuracy"] == pytest.approx(2 / 3)
    assert states_answer("first 7 then 8", "8") and not states_answer("first 8 then 7", "8")


def test_retention():
    assert retention(0.45, 0.9) == pytest.approx(0.5)
    assert retention(0.3, 0.0) is None
    assert retention(None, 0.5) is None and retention(0.5, None) is None
    assert retention(1.0, 0.8) == pytest.approx(1.25)
