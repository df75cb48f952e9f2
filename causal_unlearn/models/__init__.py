"""Models: one loader for every source, the architecture registry, the built-in model's recipe."""

from causal_unlearn.models.architectures import (
    ArchitectureSpec,
    UnsupportedArchitectureError,
    get_architecture,
    register_architecture,
    supported_architectures,
)
from causal_unlearn.models.loader import BUILTIN_MODELS, LoadedModel, load_model

__all__ = [
    "ArchitectureSpec", "BUILTIN_MODELS", "LoadedModel", "UnsupportedArchitectureError", "get_architecture",
    "load_model", "register_architecture", "supported_architectures",
]
