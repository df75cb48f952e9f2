"""How the subject is hidden from the model: noise on its token embeddings, or another prompt."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Literal, Union

import torch
from jaxtyping import Float
from torch import Tensor

from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.validation import finite

NOISE_RULE_FACTOR = 3.0  # ROME's "s3": three standard deviations of the subject embeddings


def _check_scale(scale: float | str) -> None:
    if scale != "s3":
        if isinstance(scale, str):
            raise ValueError(f"noise scale must be 's3' or a finite number >= 0, got {scale!r}")
        finite("noise scale", scale, at_least=0)


@dataclass(frozen=True)
class GaussianNoise:
    """Add `scale` x N(0, 1) to every subject token's embedding ("s3": 3 x their std)."""

    scale: float | Literal["s3"] = "s3"

    def __post_init__(self) -> None:
        _check_scale(self.scale)


@dataclass(frozen=True)
class UniformNoise:
    """Add `scale` x U(-1, 1) to every subject token's embedding."""

    scale: float | Literal["s3"] = "s3"

    def __post_init__(self) -> None:
        _check_scale(self.scale)


@dataclass(frozen=True)
class TokenReplacement:
    """Symmetric token replacement: the corrupted run reads `prompt` instead (same token length),
    e.g. the same sentence about another subject."""

    prompt: str


EmbeddingCorruption = Callable[[Float[Tensor, "samples pos d_model"], tuple[int, int]], Float[Tensor, "samples pos d_model"]]
Corruption = Union[GaussianNoise, UniformNoise, TokenReplacement, EmbeddingCorruption]


def resolve_corruption(noise: str | float | Corruption) -> Corruption:
    """Turn `trace`'s `noise=` argument into a corruption.

    Examples:
        >>> resolve_corruption("s3"), resolve_corruption(0.1), resolve_corruption("uniform")
        (GaussianNoise(scale='s3'), GaussianNoise(scale=0.1), UniformNoise(scale='s3'))
    """
    if isinstance(noise, (GaussianNoise, UniformNoise, TokenReplacement)):
        return noise
    if noise == "s3":
        return GaussianNoise("s3")
    if noise == "uniform":
        return UniformNoise("s3")
    if isinstance(noise, numbers.Real) and not isinstance(noise, bool):
        return GaussianNoise(finite("noise scale", noise, at_least=0))
    if callable(noise):
        return noise
    raise ValueError(
        f"unknown noise {noise!r}; use 's3', a float scale, 'uniform', GaussianNoise(...), UniformNoise(...), "
        "TokenReplacement(prompt) or a function (embeddings, subject_range) -> embeddings"
    )


@torch.no_grad()
def embeddings_of(lm: LoadedModel, input_ids: Tensor) -> Float[Tensor, "... pos d_model"]:
    """The embedding module's output for `input_ids` (what the corruption perturbs)."""
    return lm.module(lm.architecture.embedding)(input_ids.to(lm.device))


def subject_embedding_std(subject_embeddings: list[Float[Tensor, "subject_pos d_model"]]) -> float:
    """Std of all elements of the subjects' token embeddings, pooled (ROME's `collect_embedding_std`)."""
    if not subject_embeddings:
        raise ValueError("no subjects to measure the embedding std on")
    return torch.cat([embedded.float().flatten() for embedded in subject_embeddings]).std().item()


def uses_noise_rule(corruption: Corruption) -> bool:
    """Whether the corruption's scale comes from the s3 rule (so needs the subject std)."""
    return isinstance(corruption, (GaussianNoise, UniformNoise)) and corruption.scale == "s3"


def noise_scale(corruption: Corruption, s3_std: float | None) -> float | None:
    """The numeric scale of a noise corruption (None for the others)."""
    if not isinstance(corruption, (GaussianNoise, UniformNoise)):
        return None
    if corruption.scale == "s3":
        assert s3_std is not None
        return NOISE_RULE_FACTOR * s3_std
    return float(corruption.scale)


def corrupted_embeddings(
    clean: Float[Tensor, "pos d_model"],
    subject: tuple[int, int],
    corruption: Corruption,
    *,
    samples: int,
    scale: float | None,
    seed: int,
    replacement: Float[Tensor, "pos d_model"] | None = None,
) -> Float[Tensor, "samples pos d_model"]:
    """`samples` corrupted copies of the clean embeddings. Noise comes from a CPU generator seeded
    with `seed`, so the same seed gives the same noise on every device."""
    start, end = subject
    copies = clean.unsqueeze(0).repeat(samples, 1, 1)
    if isinstance(corruption, TokenReplacement):
        assert replacement is not None
        return replacement.unsqueeze(0).repeat(samples, 1, 1)
    if isinstance(corruption, (GaussianNoise, UniformNoise)):
        generator = torch.Generator().manual_seed(seed)
        shape = (samples, end - start, clean.shape[-1])
        if isinstance(corruption, GaussianNoise):
            noise = torch.randn(shape, generator=generator)
        else:
            noise = torch.rand(shape, generator=generator) * 2 - 1
        copies[:, start:end] += (scale * noise).to(clean.dtype).to(clean.device)
        return copies
    corrupted = corruption(copies, subject)
    if not isinstance(corrupted, Tensor) or corrupted.shape != copies.shape:
        shape = tuple(corrupted.shape) if isinstance(corrupted, Tensor) else type(corrupted).__name__
        raise ValueError(f"the corruption function returned shape {shape}, expected {tuple(copies.shape)}")
    if not torch.isfinite(corrupted).all():
        raise ValueError("the corruption function returned NaN or infinite embeddings; every traced forward "
                         "would score NaN")
    return corrupted
