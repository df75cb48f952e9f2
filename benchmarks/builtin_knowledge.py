"""What the built-in model knows, asked the official way and in held-out words: QA exact match
and sentence completion per split, then the held-out probes per split, attribute and form.

    python benchmarks/builtin_knowledge.py [--model olmo-tiny-bios]
"""

from __future__ import annotations

import argparse
from statistics import fmean

import causal_unlearn as cu
from causal_unlearn.data.phrasings import ATTRIBUTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="olmo-tiny-bios", help="a built-in name or a checkpoint folder")
    args = parser.parse_args()
    lm = cu.load_model(args.model, device="cpu")
    world = cu.make_bios_world()
    report = cu.knowledge_report(lm, world, max_new_tokens=256, probes=False, progress=False)
    print("| people | QA exact match | SC ROUGE-L recall |\n| --- | --- | --- |")
    for split in ("forget", "retain", "holdout"):
        print(f"| {split} | {report[f'{split}_qa_exact_match']:.3f} | {report[f'{split}_sc_rouge_l_recall']:.3f} |")
    print(f"general knowledge (official rows): {report['general_knowledge_accuracy']:.3f}\n")
    probes = world.probes()
    recalled = dict(zip(map(id, probes), cu.probe_recall(lm, probes)))

    def share(split: str, attribute: str | None = None, form: str | None = None) -> str:
        chosen = [recalled[id(p)] for p in probes if p.split == split and attribute in (None, p.attribute)
                  and form in (None, p.form)]
        return f"{fmean(chosen):.3f}" if chosen else "—"

    splits = ("forget", "retain", "holdout")
    print("held-out probes answered (greedy, 40 new tokens, the answer anywhere in the output)\n")
    print("| attribute | " + " | ".join(f"{s} questions | {s} clozes" for s in splits) + " |")
    print("| --- |" + " --- |" * (2 * len(splits)))
    for attribute in (*ATTRIBUTES, None):
        cells = [share(s, attribute, form) for s in splits for form in ("question", "cloze")]
        print(f"| {attribute or 'all'} | " + " | ".join(cells) + " |")
    print("\n| all forms | " + " | ".join(f"{s} {share(s)}" for s in splits) + " |")
    print(f"general knowledge, held-out phrasings: questions {share('general_knowledge', form='question')}, "
          f"clozes {share('general_knowledge', form='cloze')}, all {share('general_knowledge')}")


if __name__ == "__main__":
    main()
