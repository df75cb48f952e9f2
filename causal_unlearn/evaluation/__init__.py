"""Evaluation: greedy generation, the per-row SemEval metrics, likelihoods and the official scores."""

from causal_unlearn.evaluation import mia
from causal_unlearn.evaluation.generation import greedy_generate
from causal_unlearn.evaluation.knowledge import knowledge_report, probe_recall, score_rows
from causal_unlearn.evaluation.likelihood import mean_token_nll
from causal_unlearn.evaluation.metrics import exact_match, rouge_l_recall
from causal_unlearn.evaluation.mia import MIAConfig, MIAResult, membership_inference
from causal_unlearn.evaluation.semeval import SemEvalScores, evaluate, mia_score, task_aggregate

__all__ = ["MIAConfig", "MIAResult", "SemEvalScores", "evaluate", "exact_match", "greedy_generate", "knowledge_report",
           "mean_token_nll", "membership_inference", "mia", "mia_score", "probe_recall", "rouge_l_recall", "score_rows", "task_aggregate"]
