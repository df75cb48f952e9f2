"""Rows as token batches: prompt and continuation in one sequence, a mask on the continuation.

Training and likelihood scoring both read a row as the model saw it in training, `input + " " +
output`, and score only the `output` tokens (the loss mask); membership inference scores whole
documents, which is the same thing with an empty prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from causal_unlearn.data.rows import Row


@dataclass
class EncodedBatch:
    """Right-padded token ids; `target_mask[b, t]` marks tokens whose log-probability counts."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    target_mask: Bool[Tensor, "batch pos"]

    def to(self, device: torch.device | str) -> "EncodedBatch":
        return EncodedBatch(self.input_ids.to(device), self.attention_mask.to(device), self.target_mask.to(device))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def encode_continuations(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    max_length: int | None = None,
) -> EncodedBatch:
    """Tokenize `prompt + " " + continuation` (just the continuation when the prompt is empty)
    and mask the continuation's tokens, found by character offsets so that a token straddling
    the boundary (byte-level BPE's " 900") counts as continuation.

    Examples:
        >>> from causal_unlearn import load_model
        >>> tok = load_model("olmo-tiny-bios").tokenizer
        >>> batch = encode_continuations(tok, ["What is 2 + 2?"], ["4"])
        >>> [tok.decode(i) for i in batch.input_ids[batch.target_mask].tolist()]
        [' 4']
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"got {len(prompts)} prompts but {len(continuations)} continuations")
    if not prompts:
        raise ValueError("nothing to encode: the list of rows is empty")
    if not tokenizer.is_fast:
        raise TypeError("encoding needs a fast tokenizer (character offsets); load it with use_fast=True")
    texts = [f"{p} {c}" if p else c for p, c in zip(prompts, continuations)]
    starts = [len(p) if p else 0 for p in prompts]
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        encoded = tokenizer(
            texts, return_tensors="pt", padding=True, return_offsets_mapping=True,
            truncation=max_length is not None, max_length=max_length,
        )
    finally:
        tokenizer.padding_side = previous_side
    offsets = encoded["offset_mapping"]  # batch pos 2; special and pad tokens have (0, 0)
    begin, end = offsets[..., 0], offsets[..., 1]
    target_mask = (begin >= torch.tensor(starts)[:, None]) & (end > begin) & encoded["attention_mask"].bool()
    # the first token has no prediction to score
    target_mask[:, 0] = False
    empty = (~target_mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"{len(empty)} row(s) have no continuation token to score (first: {texts[empty[0]][:80]!r}); "
            "check for empty outputs or a max_length that cuts the output off"
        )
    return EncodedBatch(encoded["input_ids"], encoded["attention_mask"], target_mask)


def encode_documents(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_length: int | None = None
) -> EncodedBatch:
    """Whole documents as the official SemEval membership-inference loss reads them: every token
    the tokenizer returns after the first is a target, special tokens (a BOS, an appended EOS)
    included, as `model(ids, labels=ids).loss` counts them.

    Examples:
        >>> from causal_unlearn import load_model
        >>> tok = load_model("olmo-tiny-bios").tokenizer
        >>> batch = encode_documents(tok, ["the capital", "Paris is the capital"])
        >>> [tok.decode(i) for i in batch.input_ids[0][batch.target_mask[0]].tolist()]  # no padding
        ['the', ' capital']
    """
    if not texts:
        raise ValueError("nothing to encode: the list of documents is empty")
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        encoded = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=max_length is not None,
                            max_length=max_length)
    finally:
        tokenizer.padding_side = previous_side
    target_mask = encoded["attention_mask"].bool()
    target_mask[:, 0] = False  # the first token has no prediction to score
    empty = (~target_mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"{len(empty)} document(s) are a single token or empty (first: {texts[empty[0]][:80]!r}); "
                         "a likelihood needs at least two tokens")
    return EncodedBatch(encoded["input_ids"], encoded["attention_mask"], target_mask)


def encode_rows(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row], *, max_length: int | None = None, whole_text: bool = False
) -> EncodedBatch:
    """`encode_continuations` of the rows' inputs and outputs; with `whole_text`, every token of
    the row (prompt included) is a target."""
    if whole_text:
        return encode_continuations(tokenizer, [""] * len(rows), [r.text for r in rows], max_length=max_length)
    return encode_continuations(tokenizer, [r.input for r in rows], [r.output for r in rows], max_length=max_length)


def prompt_vocabulary(tokenizer: PreTrainedTokenizerBase, rows: Sequence[Row]) -> Int[Tensor, " ids"]:
    """Every token id that occurs in the rows' prompts (`input`s).

    Examples:
        >>> from causal_unlearn import load_model
        >>> tok = load_model("olmo-tiny-bios").tokenizer
        >>> ids = prompt_vocabulary(tok, [Row("a1qa1", "Where is Paris?", "France", "T")])
        >>> sorted(tok.decode([i]) for i in ids.tolist())
        [' Paris', ' is', '<|endoftext|>', '?', 'Where']
    """
    return torch.tensor(sorted({i for ids in tokenizer([r.input for r in rows])["input_ids"] for i in ids}))


def with_distinct_prompt_tokens(
    batch: EncodedBatch, rows: Bool[Tensor, " batch"], common: Int[Tensor, " ids"]
) -> EncodedBatch:
    """Also mark, in the chosen `rows`, the prompt tokens whose id is not in `common`: with the
    retain prompts' vocabulary as `common`, what is left of a forget prompt is what is specific
    to it (in LUME, the person's name), while the shared question template stays unmarked.

    Examples:
        >>> from causal_unlearn import load_model
        >>> tok = load_model("olmo-tiny-bios").tokenizer
        >>> forget, retain = Row("f1qa1", "Where does Otto Russet live?", "Houston", "Task2"), Row(
        ...     "r1qa1", "Where does Ann Teal live?", "Denver", "Task2")
        >>> batch = with_distinct_prompt_tokens(encode_rows(tok, [forget]), torch.tensor([True]),
        ...                                     prompt_vocabulary(tok, [retain]))
        >>> [tok.decode(i) for i in batch.input_ids[batch.target_mask].tolist()]
        [' Otto', ' Russet', ' Houston']
    """
    distinct = batch.attention_mask.bool() & ~torch.isin(batch.input_ids, common.to(batch.input_ids.device))
    distinct &= rows.to(distinct.device)[:, None]
    distinct[:, 0] = False  # the first token has no prediction to score
    return EncodedBatch(batch.input_ids, batch.attention_mask, batch.target_mask | distinct)
