"""Hyper-parameters: the paper's (the defaults of `unlearn`) and those found for the built-in model.

The paper's recipe (OLMo-1B on LUME: lr 1.5e-5, batch 12 x 10 accumulation, 8 epochs) moves a
2.3M-parameter model trained to exact recall hardly at all: with 647 rows it makes 6 optimizer
steps per epoch. The built-in recipe takes one step per batch of 12 at a 100x learning rate and
weights the retain term more (SHA256's alpha starts at 3 and is capped at 6, instead of 1.2 and
2.3). The same recipe drives the `stand_in` objective (`StandIn(world.stand_ins())`, its
defaults). How it was chosen, and the trade-off it sits on, is in docs/unlearning.md.
"""

from __future__ import annotations

from causal_unlearn.unlearning.objectives import SHA256

PAPER_RECIPE = dict(epochs=8, lr=1.5e-5, batch_size=12, grad_accum=10, eval_every=4, select="lowest_joint_loss")

# tuned without gradient clipping; None keeps the results measured with it (docs/unlearning.md)
BUILTIN_RECIPE = dict(epochs=10, lr=1.5e-3, batch_size=12, grad_accum=1, eval_every=100, select="last",
                      max_grad_norm=None)


def builtin_sha256() -> SHA256:
    """SHA256 with the retain weight the built-in model needs (alpha from 3, capped at 6).

    Examples:
        >>> objective = builtin_sha256()
        >>> objective.name, objective.label
        ('sha256', 'sha256 (alpha 3-6)')
    """
    return SHA256(alpha_start=3.0, alpha_max=6.0)
