"""How the subject is hidden from the model: noise on its token embeddings, or another prompt.

Each corruption is an object that knows its own rule: how many noise samples it needs, whether
its scale comes from the subject embeddings' std (ROME's "s3"), how it corrupts the clean
embeddings and how a trace records it. `trace(..., noise=...)` takes one, or a shorthand
(`resolve_corruption`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.validation import choice, finite

NOISE_RULE_FACTOR = 3.0  # ROME's "s3": three standard deviations of the subject embeddings
STD_RULES = ("prompt", "rome")

Embeddings = Float[Tensor, "samples pos d_model"]


class Corruption:
    """Base class: what a trace needs from a corruption. Subclasses implement `corrupt`."""

    #: the other prompt the corrupted run reads instead (TokenReplacement), or None
    replacement_prompt: str | None = None
    #: whether the scale comes from the subject embeddings' std (the s3 rule)
    needs_subject_std: bool = False
    #: how the subject std is measured: "prompt" or "rome" (see GaussianNoise)
    std_rule: str = "prompt"

    def sample_count(self, samples: int) -> int:
        """How many corrupted copies to run, given the `samples` asked for."""
        return samples

    def scale_for(self, subject_std: float | None) -> float | None:
        """The noise scale, from the subject std where `needs_subject_std` (None without noise)."""
        return None

    def corrupt(self, clean: Float[Tensor, "samples pos d_model"], subject: tuple[int, int], *, scale: float | None,
                seed: int, replacement: Float[Tensor, "pos d_model"] | None) -> Embeddings:
        """`clean` (the clean embeddings, one copy per sample) with the subject hidden."""
        raise NotImplementedError

    def describe(self) -> str:
        """How `TraceSettings.corruption` records it."""
        return repr(self)


@dataclass(frozen=True)
class _Noise(Corruption):
    scale: float | Literal["s3"] = "s3"
    std_rule: str = "prompt"

    def __post_init__(self) -> None:
        if self.scale != "s3":
            if isinstance(self.scale, str):
                raise ValueError(f"noise scale must be 's3' or a finite number >= 0, got {self.scale!r}")
            finite("noise scale", self.scale, at_least=0)
        choice("std_rule", self.std_rule, STD_RULES)

    @property
    def needs_subject_std(self) -> bool:
        return self.scale == "s3"

    def scale_for(self, subject_std: float | None) -> float:
        if self.scale == "s3":
            assert subject_std is not None, "the s3 rule needs the subject std"
            return NOISE_RULE_FACTOR * subject_std
        return float(self.scale)

    def corrupt(self, clean, subject, *, scale, seed, replacement):
        start, end = subject
        generator = torch.Generator().manual_seed(seed)  # on the CPU: the same noise on every device
        noise = self.draw((clean.shape[0], end - start, clean.shape[-1]), generator)
        clean[:, start:end] += (scale * noise).to(clean.dtype).to(clean.device)
        return clean

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        rule = "" if self.std_rule == "prompt" else f", std_rule={self.std_rule!r}"
        return f"{type(self).__name__}(scale={self.scale!r}{rule})"


class GaussianNoise(_Noise):
    """Add `scale` x N(0, 1) to every subject token's embedding ("s3": 3 x their std).

    `std_rule` says whose std the s3 rule takes: "prompt" (ours, the default), the subject's
    tokens as they sit in the prompt; "rome", ROME's `collect_embedding_std`, each subject
    tokenized on its own (with the tokenizer's start token, without the space before it in the
    prompt). On the built-in model's 350 forget facts ROME's rule gives a pooled scale 4 %
    larger (the start token's embedding joins the pool); for single facts, from 3 % smaller to
    19 % larger (docs/research_log.md).

    Examples:
        >>> GaussianNoise(0.1).scale_for(None), GaussianNoise("s3").scale_for(0.05)
        (0.1, 0.15000000000000002)
        >>> GaussianNoise("s3", std_rule="rome")
        GaussianNoise(scale='s3', std_rule='rome')
    """

    def draw(self, shape, generator):
        return torch.randn(shape, generator=generator)


class UniformNoise(_Noise):
    """Add `scale` x U(-1, 1) to every subject token's embedding ("s3" and `std_rule` as for
    `GaussianNoise`).

    Examples:
        >>> UniformNoise(0.5).needs_subject_std, UniformNoise().needs_subject_std
        (False, True)
    """

    def draw(self, shape, generator):
        return torch.rand(shape, generator=generator) * 2 - 1


@dataclass(frozen=True)
class TokenReplacement(Corruption):
    """Symmetric token replacement: the corrupted run reads `prompt` instead (same token length),
    e.g. the same sentence about another subject. There is no randomness, so one copy runs.

    Examples:
        >>> TokenReplacement("Ada Cobalt was born on").sample_count(10)
        1
    """

    prompt: str

    @property
    def replacement_prompt(self) -> str:
        return self.prompt

    def sample_count(self, samples: int) -> int:
        return 1  # every copy would be the same

    def corrupt(self, clean, subject, *, scale, seed, replacement):
        assert replacement is not None, "TokenReplacement needs the replacement prompt's embeddings"
        return replacement.unsqueeze(0).expand_as(clean).clone()


@dataclass(frozen=True)
class EmbeddingFunction(Corruption):
    """Your own corruption: `function(embeddings [samples, pos, d_model], (start, end))` returns
    the corrupted embeddings, same shape (`trace(..., noise=function)` wraps it in this).

    Examples:
        >>> zero = EmbeddingFunction(lambda e, s: e * 0)
        >>> zero.corrupt(torch.ones(2, 3, 4), (0, 1), scale=None, seed=0, replacement=None).abs().sum().item()
        0.0
    """

    function: Callable[[Embeddings, tuple[int, int]], Embeddings]

    def corrupt(self, clean, subject, *, scale, seed, replacement):
        corrupted = self.function(clean.clone(), subject)
        if not isinstance(corrupted, Tensor) or corrupted.shape != clean.shape:
            shape = tuple(corrupted.shape) if isinstance(corrupted, Tensor) else type(corrupted).__name__
            raise ValueError(f"the corruption function returned shape {shape}, expected {tuple(clean.shape)}")
        if not torch.isfinite(corrupted).all():
            raise ValueError("the corruption function returned NaN or infinite embeddings; every traced forward "
                             "would score NaN")
        return corrupted

    def describe(self) -> str:
        return f"custom:{getattr(self.function, '__name__', type(self.function).__name__)}"


def resolve_corruption(noise: str | float | Corruption | Callable) -> Corruption:
    """Turn `trace`'s `noise=` argument into a corruption: "s3" and a float scale are
    `GaussianNoise`, "uniform" is `UniformNoise("s3")`, a function is an `EmbeddingFunction`.

    Examples:
        >>> resolve_corruption("s3"), resolve_corruption(0.1), resolve_corruption("uniform")
        (GaussianNoise(scale='s3'), GaussianNoise(scale=0.1), UniformNoise(scale='s3'))
    """
    if isinstance(noise, Corruption):
        return noise
    if noise == "s3":
        return GaussianNoise("s3")
    if noise == "uniform":
        return UniformNoise("s3")
    if isinstance(noise, numbers.Real) and not isinstance(noise, bool):
        return GaussianNoise(finite("noise scale", noise, at_least=0))
    if callable(noise):
        return EmbeddingFunction(noise)
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


def corrupted_embeddings(
    clean: Float[Tensor, "pos d_model"],
    subject: tuple[int, int],
    corruption: Corruption,
    *,
    samples: int,
    scale: float | None,
    seed: int,
    replacement: Float[Tensor, "pos d_model"] | None = None,
) -> Embeddings:
    """`samples` corrupted copies of the clean embeddings. Noise comes from a CPU generator seeded
    with `seed`, so the same seed gives the same noise on every device.

    Examples:
        >>> copies = corrupted_embeddings(torch.zeros(4, 2), (1, 3), GaussianNoise(1.0), samples=2, scale=1.0, seed=0)
        >>> copies.shape, bool((copies[:, 0] == 0).all()), bool((copies[:, 1:3] != 0).all())
        (torch.Size([2, 4, 2]), True, True)
    """
    copies = clean.unsqueeze(0).repeat(samples, 1, 1)
    return resolve_corruption(corruption).corrupt(copies, subject, scale=scale, seed=seed, replacement=replacement)
