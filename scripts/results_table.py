#!/usr/bin/env python3
"""Markdown tables of docs/RESULTS.md from training runs' metrics.jsonl files.

    python3 scripts/results_table.py DIR [BASELINE]

DIR holds <recipe>.seed<k>.metrics.jsonl. Prints, per seed, each run's final validation loss and
bits per byte, its gap to the baseline run of the same seed (default bf16: same initialization and
data order, so the pairing cancels most of the seed-to-seed spread), and its mean training loss
over the last 10% of steps; then the gaps averaged over seeds and how much smaller Quartet II's
mean gap is than each other recipe's (the paper's 1 - gap_Q2 / gap_recipe), like for like: recipes
with a BF16 forward (sr, *_bwd) against quartet2_bwd, the fully NVFP4 ones against quartet2; last,
the distribution of each recipe's gaps over the seeds (quartiles, standard deviation) beside the
baseline's own spread between seeds; and for each variant run under a tag (<recipe>-<tag>, e.g.
quartet2-ends from scripts/evidence.sh's TAG), its paired difference to the untagged recipe of the
same seed: the mean, its standard error and their ratio t over the seeds both have.
"""
import glob
import json
import os
import statistics
import sys


def load(path):
    rows = [json.loads(line) for line in open(path)]
    evals = [r for r in rows if "val_loss" in r]
    steps = [r for r in rows if "loss" in r]
    if not evals or not steps:
        sys.exit(f"results_table: {path} has no validation or training records")
    tail = steps[-max(1, len(steps) // 10):]
    return {"val": evals[-1]["val_loss"], "bpb": evals[-1]["val_bpb"], "tokens": evals[-1]["tokens"],
            "train": sum(r["loss"] for r in tail) / len(tail), "wall": evals[-1]["elapsed_s"]}


def counterpart(recipe):
    """The Quartet II run a recipe is compared with: the same forward precision; none for a tagged
    variant (compared with its own recipe in the last table)."""
    if "-" in recipe:
        return None
    return "quartet2_bwd" if recipe == "sr" or recipe.endswith("_bwd") else "quartet2"


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    base = sys.argv[2] if len(sys.argv) == 3 else "bf16"
    runs = {}
    for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.seed*.metrics.jsonl"))):
        recipe, seed = os.path.basename(path)[: -len(".metrics.jsonl")].rsplit(".seed", 1)
        runs[(recipe, int(seed))] = load(path)
    seeds = sorted({s for _, s in runs if (base, s) in runs})
    if not seeds:
        sys.exit(f"results_table: no {base} runs in {sys.argv[1]}")
    recipes = [base] + sorted({r for r, _ in runs} - {base})

    print("| recipe | seed | val loss | val bpb | gap to bf16 | train loss, last 10% | its gap | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    gaps = {}
    for r in recipes:
        for s in seeds:
            if (r, s) not in runs:
                continue
            x, b = runs[(r, s)], runs[(base, s)]
            gap, tgap = x["val"] - b["val"], x["train"] - b["train"]
            gaps.setdefault(r, []).append((gap, tgap))
            print(f"| {r} | {s} | {x['val']:.4f} | {x['bpb']:.4f} | {gap:+.4f} ({100 * gap / b['val']:+.2f}%) "
                  f"| {x['train']:.4f} | {tgap:+.4f} | {x['wall']:.0f} |")

    print()
    print("| recipe | forward | seeds | mean val gap | min, max | mean train gap | Quartet II's val gap smaller by |")
    print("|---|---|---|---|---|---|---|")
    mean_gap = {r: statistics.mean(g for g, _ in v) for r, v in gaps.items()}
    for r in recipes[1:]:
        v = [g for g, _ in gaps[r]]
        q, mean = counterpart(r), mean_gap[r]
        rel = f"{100 * (1 - mean_gap[q] / mean):.0f}% ({q})" if q in mean_gap and q != r and mean > 0 else ""
        forward = "BF16" if r.split("-")[0] in ("bf16", "sr") or r.split("-")[0].endswith("_bwd") else "NVFP4"
        print(f"| {r} | {forward} | {len(v)} | {mean:+.4f} | {min(v):+.4f}, {max(v):+.4f} "
              f"| {statistics.mean(g for _, g in gaps[r]):+.4f} | {rel} |")

    vals = [runs[(base, s)]["val"] for s in seeds]
    print()
    print(f"{base}'s own final validation loss spreads over {max(vals) - min(vals):.4f} between its {len(seeds)} seeds.")
    print()
    print("| recipe | seeds | min | 25% | median | 75% | max | std |")
    print("|---|---|---|---|---|---|---|---|")
    for r in recipes[1:]:
        v = sorted(g for g, _ in gaps[r])
        q1, q2, q3 = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else (v[0],) * 3
        std = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {r} | {len(v)} | {v[0]:+.4f} | {q1:+.4f} | {q2:+.4f} | {q3:+.4f} | {v[-1]:+.4f} | {std:.4f} |")

    variants = [r for r in recipes if "-" in r and r.rsplit("-", 1)[0] in recipes]
    if variants:
        print()
        print("| variant | against | seeds | mean val difference | std error | t | per seed |")
        print("|---|---|---|---|---|---|---|")
    for r in variants:
        plain = r.rsplit("-", 1)[0]
        both = [s for s in seeds if (r, s) in runs and (plain, s) in runs]
        d = [runs[(r, s)]["val"] - runs[(plain, s)]["val"] for s in both]
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
        t = statistics.mean(d) / se if se > 0 else float("nan")
        print(f"| {r} | {plain} | {len(d)} | {statistics.mean(d):+.4f} | {se:.4f} | {t:+.1f} | "
              + " ".join(f"{x:+.3f}" for x in d) + " |")


if __name__ == "__main__":
    main()
