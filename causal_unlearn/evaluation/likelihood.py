"""Teacher-forced log-likelihoods: what unlearning optimizes and membership inference reads."""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from causal_unlearn.models.loader import LoadedModel, require_loaded
from causal_unlearn.data.encoding import EncodedBatch, encode_documents


def target_logprobs(
    logits: Float[Tensor, "batch pos vocab"], input_ids: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos"]:
    """log p(token t | tokens < t) at every position t (0 at t = 0, which has no prediction),
    computed in float32 or better whatever the model's dtype.

    Examples:
        >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
        >>> target_logprobs(logits, torch.tensor([[0, 1, 2]])).exp()
        tensor([[1.0000, 0.2500, 0.2500]])
    """
    logprobs = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)
    picked = logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(picked, (1, 0))


def sequence_nll(
    logits: Float[Tensor, "batch pos vocab"], batch: EncodedBatch
) -> tuple[Float[Tensor, " batch"], Int[Tensor, " batch"]]:
    """Summed negative log-likelihood of each row's target tokens, and their count."""
    mask: Bool[Tensor, "batch pos"] = batch.target_mask
    return -(target_logprobs(logits, batch.input_ids) * mask).sum(-1), mask.sum(-1)


@torch.no_grad()
def mean_token_nll(
    model: LoadedModel,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    progress: bool = True,
) -> Float[Tensor, " text"]:
    """Mean negative log-likelihood per token of each whole text: the per-document loss that
    membership inference ranks, equal to the official scorer's `model(ids, labels=ids).loss`
    (every token after the first, special tokens included).

    Examples:
        >>> from causal_unlearn import load_model
        >>> lm = load_model("olmo-tiny-bios")
        >>> nll = mean_token_nll(lm, ["What is the capital of France? Paris", "zq xv"], progress=False)
        >>> bool(nll[0] < nll[1])
        True
    """
    lm = require_loaded(model, "mean_token_nll")
    model, tokenizer = lm.model, lm.tokenizer
    device = next(model.parameters()).device
    values = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="likelihood", unit="batch", disable=not progress or len(starts) < 2):
        chunk = texts[start : start + batch_size]
        batch = encode_documents(tokenizer, chunk, max_length=max_length).to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        total, count = sequence_nll(logits, batch)
        values.append((total / count).float().cpu())
    return torch.cat(values)
