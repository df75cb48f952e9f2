"""What the audit's retain target asks of `stand_in`: the variants tried (research log, "The audit").

    python benchmarks/stand_in_variants.py NAME [--questions 4] [--retain-questions 4] [--retain-bios]
        [--retain-gk-phrasings] [--epochs 3] [--layers 0,7]

Unlearns the built-in task with `StandIn` and the built-in recipe (its epochs overridden), the
forget and retain sets extended with each person's training phrasings of the questions
(`--questions` per attribute for forget people, `--retain-questions` for retain people, drawn
per person), optionally the retain people's bios (loss on the whole text) and the training
phrasings of the retain half's general-knowledge facts. Prints the official QA exact match, the
held-out probe recall per split (every probe), and recall of half the forget people after
relearning on the other half's rows (`RelearnBudget()`) or on retain rows.
"""

from __future__ import annotations

import argparse
import random
from statistics import fmean

import causal_unlearn as cu
from causal_unlearn.auditing import RelearnBudget, generation_recall, relearned, rows_about
from causal_unlearn.data import phrasings, stand_in_prompts
from causal_unlearn.data.rows import Row
from causal_unlearn.evaluation.knowledge import score_rows
from causal_unlearn.unlearning import StandIn
from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE


def training_phrasings(world: cu.BiosWorld, split: str, per_attribute: int) -> list[Row]:
    rows = []
    for person in world.people_in(split):
        for attribute in phrasings.QA_ATTRIBUTES:
            others = world.training_questions(person, attribute)[1:]  # the official one is already a row
            rows += random.Random(f"{person.uid}{attribute}").sample(others, min(per_attribute, len(others)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--retain-questions", type=int, default=None, help="default: --questions")
    parser.add_argument("--retain-bios", action="store_true")
    parser.add_argument("--retain-gk-phrasings", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--layers", default="0,7")
    args = parser.parse_args()
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    task = world.unlearning_task()
    forget = task.forget + training_phrasings(world, "forget", args.questions)
    retain = task.retain + training_phrasings(world, "retain", args.retain_questions or args.questions)
    if args.retain_bios:
        retain += [Row(f"{p.uid}-bio{k}sc0", "", text, "Task2") for p in world.people_in("retain")
                   for k, text in enumerate(world.bios(p))]
    if args.retain_gk_phrasings:
        kept = {row.id[:-3] for row in world.general_knowledge[::2]}
        retain += [r for r in world.general_knowledge_phrasings()
                   if r.id.rsplit("-t", 1)[0] in kept and not r.id.endswith("-t0qa0")]
    stand_ins = {}
    for person in world.people_in("forget"):  # the stand-in name world.stand_ins() gives each person
        row = next(r for r in task.forget if r.id == f"{person.uid}qa1")
        before, after = row.input.split(person.name)
        prompt = world.stand_ins()[row.id]
        stand_ins[person.name] = prompt[len(before): len(prompt) - len(after)]
    result = cu.unlearn(lm, forget, retain, layers=[int(x) for x in args.layers.split(",")],
                        objective=StandIn(stand_in_prompts(forget, stand_ins)), progress=False,
                        **{**BUILTIN_RECIPE, "epochs": args.epochs})
    recall = lambda probes: round(fmean(generation_recall(lm, probes, progress=False)), 3)  # noqa: E731
    qa = lambda rows: round(fmean(score_rows(lm, [r for r in rows if r.kind == "qa"],  # noqa: E731
                                             max_new_tokens=32, progress=False)), 3)
    print(f"{args.name}: {len(forget)} forget rows, {len(retain)} retain rows, {result.seconds:.0f} s")
    print(f"official QA: forget {qa(task.forget)}, retain {qa(world.retain)}, GK held out {qa(task.utility)}")
    print(f"probe recall: forget {recall(world.probes('forget'))}, retain {recall(world.probes('retain'))}")
    people = world.people_in("forget")
    taught, asked = [p.name for p in people[::2]], {p.name for p in people[1::2]}
    other_half = [p for p in world.probes("forget") if p.subject in asked]
    with relearned(lm, rows_about(task.forget, taught), RelearnBudget(), progress=False) as tuned:
        print(f"relearned on half: other half {recall(other_half)}")
    with relearned(lm, world.retain, RelearnBudget(), progress=False) as tuned:
        print(f"relearned on retain: forget {recall(world.probes('forget'))}")
    del tuned


if __name__ == "__main__":
    main()
