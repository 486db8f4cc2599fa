"""Scoring generated answers: batched generation and ROUGE-L / exact match / retention."""
