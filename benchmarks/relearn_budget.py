"""How hard should the relearning attack fine-tune? The budget behind `RelearnBudget()`.

    python benchmarks/relearn_budget.py

Unlearns the built-in task as the demo does (`stand_in`, layers 0 and 7, the built-in recipe),
then for each budget fine-tunes the original and the edited model on the forget rows of half
the forget people and prints: recall of the other half's held-out probes (every probe) for the
original (a budget that damages it would hide what relearning brings back) and for the edited
model, and the edited model's exact match on the taught half's questions (did it relearn what it
was taught?).
"""

from __future__ import annotations

from statistics import fmean

import causal_unlearn as cu
from causal_unlearn.auditing import RelearnBudget, generation_recall, relearned, rows_about
from causal_unlearn.evaluation.knowledge import score_rows
from causal_unlearn.unlearning import StandIn
from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE

BUDGETS = ((1e-4, 50), (3e-4, 50), (3e-4, 100), (1e-4, 150), (1e-3, 50))


def main() -> None:
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    task = world.unlearning_task()
    people = world.people_in("forget")
    taught, asked = [p.name for p in people[::2]], {p.name for p in people[1::2]}
    other_half = [p for p in world.probes("forget") if p.subject in asked]
    rows = rows_about(task.forget, taught)
    recall = lambda model: fmean(generation_recall(model, other_half, progress=False))  # noqa: E731
    taught_qa = lambda model: fmean(score_rows(model, [r for r in rows if r.kind == "qa"],  # noqa: E731
                                               max_new_tokens=32, progress=False))
    result = cu.unlearn(lm, task.forget, task.retain, layers=[0, 7], objective=StandIn(world.stand_ins()),
                        progress=False, **BUILTIN_RECIPE)
    edited = result.edited_model()
    result.revert()
    print(f"other half's recall: original {recall(lm):.3f}, edited {recall(edited):.3f}")
    print("| lr | steps | original, other half | edited, other half | edited, taught half QA |")
    print("| --- | --- | --- | --- | --- |")
    for lr, steps in BUDGETS:
        budget = RelearnBudget(steps=steps, lr=lr)
        with relearned(lm, rows, budget, progress=False) as tuned:
            original = recall(tuned)
        with relearned(edited, rows, budget, progress=False) as tuned:
            again, qa = recall(tuned), taught_qa(tuned)
        print(f"| {lr:g} | {steps} | {original:.3f} | {again:.3f} | {qa:.3f} |")


if __name__ == "__main__":
    main()
