"""ROUGE-L of an answer against a reference, stdlib only.

The studio must not import ``rouge_score`` (it pulls in nltk, numpy and absl), so this re-implements its
default ROUGE-L exactly — lower-case, non-alphanumerics become spaces, no stemming, F-measure of the longest
common subsequence — and the tests check it against ``rouge_score`` so the arena's numbers match the
engine's evaluation.
"""
from __future__ import annotations

import re

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """rouge_score's default tokenizer (ASCII letters and digits only, as the evaluation uses)."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, in O(len(a)·len(b)) time and O(len(b)) memory."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of ``prediction`` against ``reference`` in [0, 1]."""
    pred, ref = tokenize(prediction), tokenize(reference)
    lcs = lcs_length(ref, pred)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)
