"""Evaluation: greedy generation, the per-row SemEval metrics, likelihoods, the official scores,
membership inference (`mia`) and TOFU's metrics (`tofu`)."""

from causal_unlearn.evaluation import mia, tofu
from causal_unlearn.evaluation.generation import greedy_generate
from causal_unlearn.evaluation.knowledge import knowledge_report, probe_recall, score_rows
from causal_unlearn.evaluation.likelihood import mean_token_nll
from causal_unlearn.evaluation.metrics import exact_match, rouge_l_recall
from causal_unlearn.evaluation.mia import MIAConfig, MIAResult, membership_inference
from causal_unlearn.evaluation.semeval import SemEvalScores, evaluate, mia_score, task_aggregate
from causal_unlearn.evaluation.tofu import (ModelUtility, TofuMetric, exact_memorization, extraction_strength,
                                            forget_quality, model_utility, probability, rouge, truth_ratio)

__all__ = ["MIAConfig", "MIAResult", "ModelUtility", "SemEvalScores", "TofuMetric", "evaluate", "exact_match",
           "exact_memorization", "extraction_strength", "forget_quality", "greedy_generate", "knowledge_report",
           "mean_token_nll", "membership_inference", "mia", "mia_score", "model_utility", "probability", "probe_recall",
           "rouge", "rouge_l_recall", "score_rows", "task_aggregate", "tofu", "truth_ratio"]
