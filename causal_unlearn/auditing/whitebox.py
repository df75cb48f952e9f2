"""Whitebox extraction attacks (Patil, Hase & Bansal, "Can sensitive information be deleted from
LLMs?", ICLR 2024, arXiv 2309.17410): read a deleted answer from inside the model instead of
from what it says.

- head projection (the logit lens): every layer's residual stream at the last position of a
  prompt that ends right before the answer, through the model's own final norm and unembedding;
  the attack extracts the answer when its first token is among the top B tokens at some layer;
- probability delta: the same lens distributions, and the tokens whose probability rises most
  from one layer to the next (or, as the paper also counts, falls most); an edit that suppresses
  the answer in a few layers moves its probability there.

The last layer's lens is the model's own next-token distribution; the earlier layers say what
the residual stream already "means" on the way there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from causal_unlearn.data.facts import TraceFact
from causal_unlearn.models.hooks import record
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.tracing.tokens import MultiTokenAnswerWarning, answer_token_id


@torch.no_grad()
def lens_logits(model: LoadedModel, prompts: Sequence[str]) -> Float[Tensor, "prompt layer vocab"]:
    """The logit lens at each prompt's last token: every layer's residual stream (the
    architecture's `block_output`) through the model's final norm and unembedding modules, and
    the final soft-capping where the model's config has one (Gemma 2). One forward for all
    `prompts`; `lens_ranks` batches many.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> lens = lens_logits(lm, ["What is the capital of France?", "Otto Russet lives in"])
        >>> lens.shape == (2, lm.n_layers, len(lm.tokenizer))
        True
        >>> torch.allclose(lens[1, -1], lm.logits(lm.to_tokens("Otto Russet lives in"))[0, -1], atol=1e-5)
        True
    """
    blocks = [model.architecture.block_output(layer) for layer in range(model.n_layers)]
    previous_side, model.tokenizer.padding_side = model.tokenizer.padding_side, "right"
    try:
        batch = model.tokenizer(list(prompts), return_tensors="pt", padding=True).to(model.device)
    finally:
        model.tokenizer.padding_side = previous_side
    with record(model.model, blocks) as hidden:
        model.model(**batch)
    last = batch.attention_mask.sum(1) - 1  # right padding: each prompt's last real token
    rows = torch.arange(len(last), device=model.device)
    states = torch.stack([hidden[block][rows, last] for block in blocks], dim=1)
    return model.unembed(states)


def rank_of(scores: Float[Tensor, "*batch vocab"], token: Int[Tensor, "*batch"]) -> Int[Tensor, "*batch"]:
    """How many tokens score strictly higher than `token` (0: it is the top token; among the top
    B when the rank is below B).

    Examples:
        >>> rank_of(torch.tensor([[0.1, 0.5, 0.3], [0.9, 0.0, 0.2]]), torch.tensor([2, 0]))
        tensor([1, 0])
    """
    chosen = scores.gather(-1, token.unsqueeze(-1))
    return (scores > chosen).sum(-1)


@dataclass(frozen=True)
class LensRanks:
    """Per fact, the rank of its answer's first token (0: the top token) in the logit lens at each
    layer (`lens`), and among the tokens whose lens probability rises most (`rise`) or falls most
    (`fall`) from layer l - 1 to layer l (column l - 1, for l = 1 .. n_layers - 1)."""

    lens: Int[Tensor, "fact layer"]
    rise: Int[Tensor, "fact step"]
    fall: Int[Tensor, "fact step"]

    def head_projection(self, top: int = 1) -> list[bool]:
        """Per fact: the answer is among the lens' `top` tokens at some layer."""
        return any_layer(self.lens, top)

    def probability_delta(self, top: int = 1, *, falls: bool = False) -> list[bool]:
        """Per fact: the answer is among the `top` tokens whose probability rises most between
        two consecutive layers, somewhere (`falls=True`: or among those that fall most)."""
        hits = any_layer(self.rise, top)
        return [a or b for a, b in zip(hits, any_layer(self.fall, top))] if falls else hits


def any_layer(ranks: Int[Tensor, "fact layer"], top: int) -> list[bool]:
    """Per fact: whether its rank is below `top` at some layer.

    Examples:
        >>> any_layer(torch.tensor([[3, 0, 2], [4, 5, 1]]), 1)
        [True, False]
    """
    return (ranks < top).any(dim=1).tolist()


@torch.no_grad()
def lens_ranks(model: LoadedModel, facts: Sequence[TraceFact], *, batch_size: int = 64,
               progress: bool = True) -> LensRanks:
    """The head projection and probability delta ranks of every fact's answer (its first token as
    it follows the prompt, `answer_token_id`), in batches of `batch_size` prompts.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> ranks = lens_ranks(lm, world.facts_to_trace("forget", "city")[:4], progress=False)
        >>> ranks.lens[:, -1].tolist(), ranks.head_projection(1)  # the model says each city
        ([0, 0, 0, 0], [True, True, True, True])
    """
    if not facts:
        raise ValueError("lens_ranks needs at least one fact (a prompt that ends right before its answer)")
    with warnings.catch_warnings():  # a multi-token answer is read at its first token, as documented
        warnings.simplefilter("ignore", MultiTokenAnswerWarning)
        answers = torch.tensor([answer_token_id(model, f.prompt, f.answer) for f in facts])
    lens, rise, fall = [], [], []
    starts = range(0, len(facts), batch_size)
    for start in tqdm(starts, desc="logit lens", unit="batch", disable=not progress or len(starts) < 2):
        logits = lens_logits(model, [f.prompt for f in facts[start : start + batch_size]])
        token = answers[start : start + batch_size].to(logits.device)
        per_layer = token.unsqueeze(1).expand(-1, logits.shape[1])
        lens.append(rank_of(logits, per_layer).cpu())
        delta = logits.softmax(-1).diff(dim=1)  # layer l minus layer l - 1
        rise.append(rank_of(delta, per_layer[:, 1:]).cpu())
        fall.append(rank_of(-delta, per_layer[:, 1:]).cpu())
    return LensRanks(torch.cat(lens), torch.cat(rise), torch.cat(fall))
