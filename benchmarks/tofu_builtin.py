"""TOFU's metrics on the built-in model before any unlearning.

    python benchmarks/tofu_builtin.py

Forget: the forget people's TOFU rows (`world.tofu_rows("forget")`, 250). Model utility: the
retain people's rows and the general-knowledge rows as world facts (the built-in world has no
real authors). Forget quality needs a model trained without the forget people, which the
built-in world does not ship; as a stand-in reference this script takes the model's own truth
ratios on the holdout people (never trained), which is what a retain-only model sees on people
it never met. The same metrics on the holdout rows show what "never learned" looks like.
"""

from __future__ import annotations

import json
import time

import causal_unlearn as cu
from causal_unlearn.evaluation import tofu


def main() -> None:
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    forget, retain = world.tofu_rows("forget"), world.tofu_rows("retain")
    holdout, facts = world.tofu_rows("holdout"), world.tofu_rows("general_knowledge")
    start = time.perf_counter()
    results = {}
    for name, rows in (("forget", forget), ("holdout", holdout)):
        results[name] = dict(
            probability=tofu.probability(lm, rows, progress=False).value,
            truth_ratio=tofu.truth_ratio(lm, rows, progress=False).value,
            rouge=tofu.rouge(lm, rows, progress=False).value,
            extraction_strength=tofu.extraction_strength(lm, rows, progress=False).value,
        )
    reference = tofu.truth_ratio(lm, holdout, progress=False).values
    results["forget"]["forget_quality_vs_holdout"] = tofu.forget_quality(lm, forget, reference, progress=False).value
    utility = tofu.model_utility(lm, retain, world_facts=facts, progress=False)
    results["model_utility"] = utility.to_dict()
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
