"""Evaluation: greedy generation and the per-row SemEval metrics."""

from causal_unlearn.evaluate.generation import greedy_generate
from causal_unlearn.evaluate.knowledge import knowledge_report, score_rows
from causal_unlearn.evaluate.metrics import exact_match, rouge_l_recall

__all__ = ["exact_match", "greedy_generate", "knowledge_report", "rouge_l_recall", "score_rows"]
