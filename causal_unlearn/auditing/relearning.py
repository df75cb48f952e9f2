"""Relearning attacks: fine-tune the edited model briefly and see what comes back.

A fact that was suppressed rather than removed returns after a few steps of fine-tuning on
*other* facts of the same kind (Hu et al. 2024, arXiv 2406.13356; Lynch et al. 2024)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from causal_unlearn.data.encoding import encode_rows
from causal_unlearn.data.rows import Row
from causal_unlearn.evaluation.likelihood import sequence_nll
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.models.weights import editing


@dataclass(frozen=True)
class RelearnBudget:
    """How hard the attacker fine-tunes: `steps` AdamW steps at `lr` on batches of `batch_size`
    rows drawn with `seed`, every weight of the model trainable, the loss on the rows' outputs.
    The default relearns what it is taught on the built-in model (an unlearned model answers
    0.99 of the taught people's questions again) while the original model keeps most of what
    it knew of others (recall of untaught people 0.88 -> 0.76); 1e-3 for 50 steps drops the
    original's to 0.41, which would hide what relearning brings back (docs/audit.md).

    Examples:
        >>> RelearnBudget(steps=0)
        Traceback (most recent call last):
        ...
        ValueError: a relearning budget needs at least one step, got steps=0
    """

    steps: int = 100
    lr: float = 3e-4
    batch_size: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"a relearning budget needs at least one step, got steps={self.steps!r}")
        if not self.lr > 0:
            raise ValueError(f"the relearning learning rate must be positive, got lr={self.lr!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    def describe(self) -> str:
        return f"{self.steps} steps of AdamW at lr {self.lr:g} on batches of {self.batch_size}"


def rows_about(rows: Sequence[Row], subjects: Sequence[str]) -> list[Row]:
    """The rows whose text names any of `subjects`.

    Examples:
        >>> import causal_unlearn as cu
        >>> world = cu.make_bios_world()
        >>> person = world.people_in("forget")[0]
        >>> len(rows_about(world.forget, [person.name]))  # one sentence completion, five questions
        6
    """
    return [row for row in rows if any(subject in row.text for subject in subjects)]


@contextmanager
def relearned(model: LoadedModel, rows: Sequence[Row], budget: RelearnBudget = RelearnBudget(),
              *, progress: bool = True) -> Iterator[LoadedModel]:
    """Fine-tune `model` on `rows` within `budget`, hand it over, and restore every weight bit for
    bit on leaving (also after an error or an interrupt).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> before = lm.model.lm_head.weight.clone()
        >>> with relearned(lm, world.retain[:12], RelearnBudget(steps=2), progress=False) as tuned:
        ...     changed = not torch.equal(tuned.model.lm_head.weight, before)
        >>> changed, torch.equal(lm.model.lm_head.weight, before)
        (True, True)
    """
    if not rows:
        raise ValueError("relearning needs rows to fine-tune on; got none")
    parameters = dict(model.model.named_parameters())
    generator = torch.Generator().manual_seed(budget.seed)
    with editing(model.model, parameters):  # every weight back, also after an error or an interrupt
        optimizer = torch.optim.AdamW(parameters.values(), lr=budget.lr)
        was_training = model.model.training
        model.model.train()
        for _ in tqdm(range(budget.steps), desc="relearning", unit="step", disable=not progress):
            picked = torch.randint(len(rows), (budget.batch_size,), generator=generator).tolist()
            batch = encode_rows(model.tokenizer, [rows[i] for i in picked]).to(model.device)
            logits = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            total, count = sequence_nll(logits, batch)
            (total.sum() / count.sum()).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.model.train(was_training)
        yield model
