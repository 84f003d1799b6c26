#!/usr/bin/env python3
"""The CPU time of every CUDA runtime call in a cupti_trace.csv (R rows), by function: calls,
total and mean, largest total first; per step when STEPS is given. Finds a host-side cost (a
slow or synchronizing call) that a GPU timeline shows only as idle time.

  api.py TRACE.csv [STEPS]
"""
import csv
import sys


def totals(path):
    """name -> [calls, total ns]."""
    out = {}
    with open(path, newline="") as f:
        for r in csv.reader(f):
            if len(r) >= 7 and r[0] == "R":
                t = out.setdefault(r[1], [0, 0])
                t[0] += 1
                t[1] += int(r[4]) - int(r[3])
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    t = totals(sys.argv[1])
    all_ns = sum(v[1] for v in t.values())
    print(f"CUDA runtime calls: {sum(v[0] for v in t.values()) / steps:.1f} calls, {all_ns / 1e6 / steps:.3f} ms"
          + (f" per step (of {steps})" if steps > 1 else ""))
    print(f"{'calls':>10s} {'ms':>10s} {'mean us':>9s}  function")
    for name, (n, ns) in sorted(t.items(), key=lambda kv: -kv[1][1]):
        print(f"{n / steps:10.1f} {ns / 1e6 / steps:10.3f} {ns / 1e3 / n:9.2f}  {name}")


if __name__ == "__main__":
    main()
