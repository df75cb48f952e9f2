"""Greedy generation in batches, the way SemEval-2025 Task 4 generates: raw input, no template."""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm.auto import tqdm

from causal_unlearn.models.loader import LoadedModel, require_loaded
from causal_unlearn.validation import integer


@torch.no_grad()
def greedy_generate(
    model: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    batch_size: int = 32,
    add_special_tokens: bool = True,
    progress: bool = True,
) -> list[str]:
    """Greedy continuations of `prompts` (the prompt itself not included), stopping at EOS.
    `add_special_tokens=False` for prompts that already hold them as text (a rendered chat template).

    Examples:
        >>> from causal_unlearn import load_model
        >>> lm = load_model("olmo-tiny-bios")
        >>> greedy_generate(lm, ["What is the capital of France?"], max_new_tokens=4)
        [' Paris']
    """
    lm = require_loaded(model, "greedy_generate")
    model, tokenizer = lm.model, lm.tokenizer
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"prompts must be a list of strings, got {prompts!r:.60}")
    if not prompts:
        raise ValueError("no prompts to generate from")
    integer("max_new_tokens", max_new_tokens, minimum=1)
    integer("batch_size", batch_size, minimum=1)
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token = tokenizer.eos_token")
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    device = next(model.parameters()).device
    outputs: list[str] = []
    try:
        batches = range(0, len(prompts), batch_size)
        for start in tqdm(batches, desc="generating", unit="batch", disable=not progress or len(batches) < 2):
            batch = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True,
                              add_special_tokens=add_special_tokens).to(device)
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            outputs += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = previous_side
    return outputs
