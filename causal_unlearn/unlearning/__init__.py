"""Unlearning: train only the localized layers to forget a forget set and keep a retain set."""

from causal_unlearn.unlearning.adapters import LoRA
from causal_unlearn.unlearning.closed_form import DeletionConfig, delete_facts
from causal_unlearn.unlearning.config import UnlearnConfig
from causal_unlearn.unlearning.loop import unlearn
from causal_unlearn.unlearning.run import UnlearnCallback, UnlearningDivergedError, UnlearningInterrupted, UnlearningRun
from causal_unlearn.unlearning.objectives import (
    NPO, OBJECTIVES, RMU, SHA256, SHA256KL, GradientAscent, GradientDifference, KLMinimization, LossInputs, Objective,
    SimNPO, StandIn, get_objective,
)
from causal_unlearn.unlearning.parameters import ParameterSelection, select_components, select_parameters
from causal_unlearn.unlearning.result import UnlearnResult
from causal_unlearn.unlearning.sharding import shard_model

__all__ = ["DeletionConfig", "GradientAscent", "GradientDifference", "KLMinimization", "LoRA", "LossInputs", "NPO",
           "OBJECTIVES", "Objective", "ParameterSelection", "RMU", "SHA256", "SHA256KL", "SimNPO", "StandIn",
           "UnlearnCallback", "UnlearnConfig", "UnlearnResult", "UnlearningDivergedError", "UnlearningInterrupted",
           "UnlearningRun", "delete_facts", "get_objective", "select_components", "select_parameters", "shard_model",
           "unlearn"]
