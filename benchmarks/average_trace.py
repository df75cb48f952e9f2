"""Trace every known fact of the built-in model and print the averaged effects (ROME Fig. 2),
then ROME's two sites: the early site (the last subject token's hidden state and MLPs in the
lower half of the layers) and the late site (attention at the last token).

    python benchmarks/average_trace.py [--split forget] [--samples 10] [--window 3] [--limit N] [--held-out]
"""

from __future__ import annotations

import argparse
import time

import causal_unlearn as cu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default=None, help="forget, retain or holdout (default: forget and retain)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=3,
                        help="layers restored around each MLP/attention cell (ROME: 10 of GPT-2 XL's 48; 3 of our 8)")
    parser.add_argument("--held-out", action="store_true", help="trace the facts in held-out wordings instead")
    parser.add_argument("--model", default="olmo-tiny-bios", help="a built-in name or a checkpoint folder")
    parser.add_argument("--limit", type=int, default=None, help="trace only the first N facts")
    args = parser.parse_args()
    lm = cu.load_model(args.model, device="cpu")
    world = cu.make_bios_world()
    splits = [args.split] if args.split else ["forget", "retain"]
    facts = [fact for split in splits for fact in world.facts_to_trace(split, held_out=args.held_out)]
    facts = facts[: args.limit]
    started = time.perf_counter()
    traces = cu.trace_facts(lm, facts, samples=args.samples, window=args.window, require_known=True)
    print(f"traced {len(facts)} facts ({len(traces)} known) in {time.perf_counter() - started:.0f} s, "
          f"noise scale {traces[0].settings.noise_scale:.4f}, samples {args.samples}, window {args.window}\n")
    effects = cu.average_effects(traces)
    for kind in effects.kinds:
        print(f"mean indirect effect on p(answer), {kind} (rows: token group, columns: layer)")
        print(f"{'':>22}" + "".join(f"{layer:>7}" for layer in range(lm.n_layers)) + "   n")
        for g, group in enumerate(effects.groups):
            row = effects.mean[kind][g]
            print(f"{group:>22}" + "".join(f"{v:7.3f}" for v in row.tolist()) + f"  {int(effects.count[kind][g, 0])}")
        best = effects.mean[kind].nan_to_num(-1).flatten().argmax().item()
        g, layer = divmod(best, lm.n_layers)
        print(f"  largest: {effects.groups[g]}, layer {layer}: {effects.mean[kind][g, layer]:.3f} "
              f"[{effects.lower[kind][g, layer]:.3f}, {effects.upper[kind][g, layer]:.3f}]\n")
    print_sites(effects, traces, lm.n_layers)
    by_attribute: dict[str, list] = {}
    for t in traces:
        by_attribute.setdefault(t.meta["attribute"], []).append(t)
    print("per attribute: largest MLP effect (group, layer, mean IE), low -> high")
    for attribute, group in by_attribute.items():
        e = cu.average_effects(group)
        best = e.mean["mlp"].nan_to_num(-1).flatten().argmax().item()
        g, layer = divmod(best, lm.n_layers)
        lows = sum(t.low for t in group) / len(group)
        highs = sum(t.high for t in group) / len(group)
        print(f"  {attribute:<12} {len(group):>3} facts  {e.groups[g]:<20} layer {layer}  {e.mean['mlp'][g, layer]:.3f}"
              f"   {lows:.3f} -> {highs:.3f}")


def print_sites(effects, traces, n_layers: int) -> None:
    """ROME's early and late sites as shares of the mean (high - low) the corruption removed."""
    gap = sum(t.high - t.low for t in traces) / len(traces)
    lower = range(n_layers // 2)
    g = effects.groups.index
    hidden = effects.mean["hidden"][g("last subject token")] / gap
    print(f"mean high - low: {gap:.3f}")
    print("early site: hidden state of the last subject token restored, share of (high - low) recovered per layer")
    print("  " + "  ".join(f"{layer}: {v:.2f}" for layer, v in enumerate(hidden.tolist())))
    print(f"  lower half (layers 0-{n_layers // 2 - 1}): mean {hidden[lower].mean():.3f}, "
          f"max {hidden[lower].max():.3f}")
    for kind, group in (("mlp", "last subject token"), ("attn", "last token"), ("mlp", "last token")):
        row = effects.mean[kind][g(group)]
        peak = int(row.argmax())
        print(f"{kind} at the {group}: peak at layer {peak} ({'lower' if peak in lower else 'upper'} half), "
              f"IE {row[peak]:.3f} = {row[peak] / gap:.2f} of (high - low); per layer "
              + " ".join(f"{v:.3f}" for v in row.tolist()))
    print()


if __name__ == "__main__":
    main()
