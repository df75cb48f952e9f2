"""Audit: ask the edited model in ways unlearning never saw (held-out probes, multiple choice,
relearning, lower precision, linear read-outs, re-tracing, the logit lens, the bios' own
openings) and compare with the original; and
the layer-set ablation: was the traced choice of layers the right one?"""

from causal_unlearn.auditing.ablation import compare_layer_sets, control_layer_sets

from causal_unlearn.auditing.audit import CHECKS, AuditConfig, AuditPlan, AuditSkipWarning, audit, plan_audit
from causal_unlearn.auditing.decoding import decoding_accuracy, subject_states
from causal_unlearn.auditing.precision import int8_dynamic, nf4_weights, round_trip
from causal_unlearn.auditing.probing import answer_pool, choice_ranks, generation_recall
from causal_unlearn.auditing.relearning import RelearnBudget, relearned, rows_about
from causal_unlearn.auditing.result import AuditResult
from causal_unlearn.auditing.whitebox import LensRanks, lens_logits, lens_ranks

__all__ = [
    "CHECKS", "AuditConfig", "AuditPlan", "AuditResult", "AuditSkipWarning", "LensRanks", "RelearnBudget", "answer_pool",
    "audit", "choice_ranks", "compare_layer_sets", "control_layer_sets",
    "decoding_accuracy", "generation_recall", "int8_dynamic", "lens_logits", "lens_ranks", "nf4_weights", "plan_audit",
    "relearned", "round_trip", "rows_about", "subject_states",
]
