"""Models: one loader for every source, the architecture registry, the built-in model's recipe."""

from causal_unlearn.models.architectures import (
    ArchitectureSpec,
    UnsupportedArchitectureError,
    get_architecture,
    register_architecture,
    supported_architectures,
)
from causal_unlearn.models.loader import BUILTIN_MODELS, BridgeTokenizerWarning, LoadedModel, load_model
from causal_unlearn.models.residual import ArchitectureMismatchError, check_residual_stream

__all__ = [
    "ArchitectureMismatchError", "ArchitectureSpec", "BUILTIN_MODELS", "BridgeTokenizerWarning", "LoadedModel", "UnsupportedArchitectureError",
    "check_residual_stream", "get_architecture", "load_model", "register_architecture", "supported_architectures",
]
