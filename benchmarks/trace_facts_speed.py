"""Facts per second of `trace_facts` with the cells of many facts sharing forwards, against
tracing each fact alone (`facts_per_batch=1`), with the largest difference between the two.

    python benchmarks/trace_facts_speed.py [--facts-per-batch 1,8,32,64] [--samples 10] [--gpt2-facts 100]
                                           [--max-batch-tokens 8192]
                                           [--device cuda] [--dtype bfloat16]

Two workloads: the built-in model's forget facts (all kinds, samples 10, window 10), and the
first facts on a GPT-2-small-sized random model (12 layers, d_model 768, vocabulary 50,257) with
the built-in tokenizer. Each setting runs once after a one-fact warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_speed import build  # noqa: E402 (the GPT-2-small-shaped model of the one-fact benchmark)

import causal_unlearn as cu  # noqa: E402


def largest_difference(a: list[cu.TraceResult], b: list[cu.TraceResult]) -> float:
    return max(max(float((x.scores[k] - y.scores[k]).abs().max()) for k in x.kinds) for x, y in zip(a, b))


def workload(name: str, lm: cu.LoadedModel, facts, batches: list[int], **settings) -> None:
    cu.trace_facts(lm, facts[:1], progress=False, **settings)  # warm-up
    timed, reference = {}, None
    for per_batch in batches:
        started = time.perf_counter()
        results = cu.trace_facts(lm, facts, facts_per_batch=per_batch, progress=False, **settings)
        timed[per_batch] = time.perf_counter() - started
        reference = reference or results
        difference = largest_difference(results, reference)
        speedup = timed[batches[0]] / timed[per_batch]
        print(f"| {name} | {len(facts)} | {per_batch} | {timed[per_batch]:.1f} | {len(facts) / timed[per_batch]:.2f} "
              f"| {speedup:.2f}x | {difference:.1e} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts-per-batch", default="1,8,32,64", help="the first is the baseline")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--gpt2-facts", type=int, default=100, help="0: skip the GPT-2-small-shaped model")
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--device", default=None, help="default: CUDA where present")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    batches = [int(b) for b in args.facts_per_batch.split(",")]
    torch.manual_seed(0)
    warnings.simplefilter("ignore")  # multi-token email answers are traced on their first token
    world = cu.make_bios_world()
    builtin = cu.load_model("olmo-tiny-bios", device=args.device, dtype=args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {builtin.device}, {args.dtype}")
    print("| model | facts | facts_per_batch | seconds | facts/s | speed-up | max difference |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    workload("olmo-tiny-bios", builtin, world.facts_to_trace("forget"), batches, samples=args.samples, window=10,
             max_batch_tokens=args.max_batch_tokens)
    if args.gpt2_facts:
        gpt2, _ = build(12, 768)
        gpt2 = cu.load_model(gpt2.model, gpt2.tokenizer, device=args.device, dtype=args.dtype)
        workload("GPT-2-small shape", gpt2, world.facts_to_trace("forget")[: args.gpt2_facts], batches,
                 samples=args.samples, window=10, max_batch_tokens=args.max_batch_tokens)


if __name__ == "__main__":
    main()
