"""The six membership-inference attacks on the built-in task (members: the 300 forget rows;
non-members: the 150 rows of holdout people, never seen), on the original model and on the demo's
edit (`stand_in` on the MLPs of layers 0 and 7, the built-in recipe): each attack's AUC and time.

    python benchmarks/membership_attacks.py [--edited folder] [--save folder] [--out results/membership_attacks.csv]

The built-in world has no model trained without the forget people, so `reference` is measured
against the edited model as its reference for the original, and against the original for the
edited (what each model's loss says beside the other's), and privleak is left out. `--edited`
reads an edit saved earlier (`--save` writes it) instead of unlearning again (about 3 minutes).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

import causal_unlearn as cu
from causal_unlearn.evaluation.mia import ATTACKS

from whitebox_attacks import demo_edit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edited", default=None, help="a saved edit to read instead of unlearning again")
    parser.add_argument("--save", default=None, help="save the edited model to this folder")
    parser.add_argument("--out", default=None, help="CSV: model, attack, AUC, seconds")
    args = parser.parse_args()
    lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
    task = world.unlearning_task()
    edited = demo_edit(lm, world, args.edited, args.save)
    rows = []
    for variant, model, other in (("original", lm, edited), ("edited", edited, lm)):
        for attack in ATTACKS:
            started = time.perf_counter()
            measured = cu.membership_inference(model, task.members, task.nonmembers,
                                               config=cu.MIAConfig(attacks=(attack,)), reference_model=other,
                                               progress=False)
            rows.append(dict(model=variant, attack=attack, auc=measured.aucs[attack],
                             seconds=time.perf_counter() - started))
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    print(frame.pivot(index="attack", columns="model", values=["auc", "seconds"]).round(3))
    if args.out:
        frame.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
