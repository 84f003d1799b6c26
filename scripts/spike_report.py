#!/usr/bin/env python3
"""Where gradient-norm spikes live, from runs logged with --log.param_grad_norms=true.

    python3 scripts/spike_report.py DIR [FIRST_STEP LAST_STEP]

DIR holds <recipe>.seed<k>.metrics.jsonl. A spike is a step whose global gradient norm exceeds 3
times the median of the 10 steps before it, between FIRST_STEP and LAST_STEP (default 11 and 50).
Prints each spike with the three tensors holding the largest shares of the squared norm, then per
recipe the number of spikes per run and the mean share of the first block's attention (wqkv and
wo), of the token embedding and of the rest, beside the first block attention's median share over
all steps of the range.
"""
import glob
import json
import os
import statistics
import sys


def main():
    if len(sys.argv) not in (2, 4):
        sys.exit(__doc__)
    first, last = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) == 4 else (11, 50)
    per_recipe = {}
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.seed*.metrics.jsonl"))):
        recipe, seed = os.path.basename(path)[: -len(".metrics.jsonl")].rsplit(".seed", 1)
        rows = [r for r in map(json.loads, open(path)) if "grad_norm" in r]
        if not rows or "param_grad_norms" not in rows[0]:
            continue
        norms = [r["grad_norm"] for r in rows]
        stats = per_recipe.setdefault(recipe, {"runs": 0, "spikes": 0, "attn0": [], "emb": [], "attn0_all": []})
        stats["runs"] += 1
        for i, r in enumerate(rows):
            if not first <= r["step"] <= last or i < 10:
                continue
            sq = {k: v * v for k, v in r["param_grad_norms"].items()}
            total = sum(sq.values())
            attn0 = sum(v for k, v in sq.items() if k.startswith("layers.0.attention.")) / total
            stats["attn0_all"].append(attn0)
            median = statistics.median(norms[i - 10:i])
            if r["grad_norm"] <= 3 * median:
                continue
            top = sorted(sq.items(), key=lambda kv: -kv[1])[:3]
            emb = sum(v for k, v in sq.items() if k.startswith("tok_embeddings")) / total
            stats["spikes"] += 1
            stats["attn0"].append(attn0)
            stats["emb"].append(emb)
            print(f"{recipe} seed {seed} step {r['step']}: norm {r['grad_norm']:.1f} ({r['grad_norm'] / median:.1f}x the "
                  f"median){' skipped' if r.get('skipped') else ''}; " +
                  ", ".join(f"{k} {v / total:.2f}" for k, v in top))
    print()
    print(f"| recipe | runs | spikes per run (steps {first}-{last}) | in spikes: layer 0 attention's share | "
          "embedding's | the rest | layer 0 attention's median share, all steps |")
    print("|---|---|---|---|---|---|---|")
    for recipe, s in sorted(per_recipe.items()):
        a = statistics.mean(s["attn0"]) if s["attn0"] else float("nan")
        e = statistics.mean(s["emb"]) if s["emb"] else float("nan")
        print(f"| {recipe} | {s['runs']} | {s['spikes'] / s['runs']:.2f} | {a:.2f} | {e:.2f} | {1 - a - e:.2f} | "
              f"{statistics.median(s['attn0_all']):.2f} |")


if __name__ == "__main__":
    main()
