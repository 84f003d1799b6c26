#!/usr/bin/env python3
"""Whether two training runs gave the same losses: the metrics.jsonl files of each scheme in two
folders (as `scripts/device-test.sh train` writes them: <scheme>.metrics.jsonl), compared step
by step, training loss and gradient norm of every step and every validation loss, exactly.
Prints one line per scheme; exits 1 if any value differs or a scheme is missing on one side.

  scripts/compare_losses.py NEW_DIR REFERENCE_DIR [SCHEME...]   (default: every scheme in NEW_DIR)
"""
import glob
import json
import os
import sys

KEYS = ("loss", "grad_norm", "val_loss")


def load(path):
    """step -> {key: value} for the keys present, later lines overriding earlier ones."""
    steps = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if "step" in rec:
                steps.setdefault(rec["step"], {}).update({k: rec[k] for k in KEYS if k in rec})
    return steps


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) > 1 and argv[1] in ("-h", "--help") else 2
    new_dir, ref_dir = argv[1], argv[2]
    schemes = argv[3:] or sorted(
        os.path.basename(p)[: -len(".metrics.jsonl")] for p in glob.glob(os.path.join(new_dir, "*.metrics.jsonl")))
    if not schemes:
        print(f"compare_losses: no <scheme>.metrics.jsonl in {new_dir}")
        return 1
    ok = True
    for scheme in schemes:
        paths = [os.path.join(d, f"{scheme}.metrics.jsonl") for d in (new_dir, ref_dir)]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            print(f"{scheme}: missing {', '.join(missing)}")
            ok = False
            continue
        new, ref = load(paths[0]), load(paths[1])
        common = sorted(set(new) & set(ref))
        values = sum(len(set(new[s]) & set(ref[s])) for s in common)
        diffs = [(s, k, new[s][k], ref[s][k]) for s in common for k in KEYS
                 if k in new[s] and k in ref[s] and new[s][k] != ref[s][k]]
        last = common[-1] if common else None
        final = {k: new[last][k] for k in ("loss", "val_loss") if last is not None and k in new[last]}
        if diffs or not common or set(new) != set(ref):
            ok = False
            first = f"; first difference at step {diffs[0][0]} {diffs[0][1]}: {diffs[0][2]!r} vs {diffs[0][3]!r}" if diffs else ""
            print(f"{scheme}: DIFFERENT: {len(diffs)} of {values} values differ over steps {len(new)} vs {len(ref)}{first}")
        else:
            print(f"{scheme}: identical: {values} values over {len(common)} steps; at step {last}: {final}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
