#!/usr/bin/env python3
"""Per-step timelines of `quartet2 bench layer` from a cupti_trace.csv.

Each scheme's step holds exactly three GEMMs, and steps never overlap on the GPU (a step's
side stream forks from stream 0 after the previous step's last GEMM), so the trace splits
after every third GEMM. Per shape, bench layer runs warm-ups, then single steps (each after a
synchronization), then rounds of 10 steps in a row. Prints the span of the timed steps per
scheme (first GPU activity to the end of the third GEMM), single and back to back (the first
of each 10 left out), then every kernel of the median quartet2 step of each kind with its
stream, start, duration, and the delay between its launch call on the CPU and its GPU start.

  timeline.py TRACE.csv [SHAPE_INDEX]   (0: 8192x2048x2048, the first shape timed)
"""
import csv
import statistics
import sys

WARMUP, REPS, B2B, SCHEMES = 5, 20, 10, ["bf16", "quartet2", "nvidia"]  # as bench_layer.cu


def is_gemm(name):
    return any(s in name for s in ("gemm", "nvjet", "sm90_xmma", "cutlass"))


def short(name):
    name = name.split("(")[0]
    for p in ("q2::cuda::", "detail::", "(anonymous namespace)::", "void "):
        name = name.replace(p, "")
    return name[:60]


rows = list(csv.reader(open(sys.argv[1])))
shape = int(sys.argv[2]) if len(sys.argv) > 2 else 0
gpu = sorted((r for r in rows if r[0] in "KSC" and "fill_kernel" not in r[1]), key=lambda r: int(r[3]))
launch = {int(r[5]): int(r[3]) for r in rows if r[0] == "R"}

steps, cur, gemms = [], [], 0
for r in gpu:
    cur.append(r)
    if r[0] == "K" and is_gemm(r[1]):
        gemms += 1
        if gemms % 3 == 0:
            steps.append(cur)
            cur = []
n = len(SCHEMES)
per_shape = n * (WARMUP + REPS + REPS * B2B)
first = shape * per_shape + n * WARMUP
single = steps[first:first + n * REPS]
rounds = steps[first + n * REPS:(shape + 1) * per_shape]  # round r, scheme i: block r * n + i of B2B steps


def span(step):
    return (int(step[-1][4]) - int(step[0][3])) / 1e3


def back_to_back(i):
    return [st for b in range(i, len(rounds) // B2B, n) for st in rounds[b * B2B + 1:(b + 1) * B2B]]


for i, name in enumerate(SCHEMES):
    for kind, group in (("single", single[i::n]), ("back to back", back_to_back(i))):
        spans = [span(st) for st in group]
        if spans:
            print(f"{name:9s} {kind:12s} step span median {statistics.median(spans):8.1f} us  "
                  f"min {min(spans):8.1f}  max {max(spans):8.1f}")


def busy(intervals):
    """Total length of the union of (start, end) intervals."""
    total, end = 0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def summarize(step):
    """GEMM time, and how busy the GEMMs' stream and the other stream are within the step."""
    iv = lambda rows: [(int(r[3]), int(r[4])) for r in rows]
    gemms = [r for r in step if r[0] == "K" and is_gemm(r[1])]
    main = gemms[0][2]
    on_main = [r for r in step if r[2] == main]
    others = [r for r in step if r[2] != main]
    total = int(step[-1][4]) - int(step[0][3])
    print(f"GEMMs {busy(iv(gemms)) / 1e3:.1f} us of {total / 1e3:.1f}; their stream busy "
          f"{busy(iv(on_main)) / 1e3:.1f} us (idle {(total - busy(iv(on_main))) / 1e3:.1f}); other streams busy "
          f"{busy(iv(others)) / 1e3:.1f} us, {busy(iv(others)) / 1e3 - (busy(iv(others + gemms)) - busy(iv(gemms))) / 1e3:.1f} of it "
          f"under a GEMM")


def show(kind, group):
    if not group:
        return
    step = sorted(group, key=span)[len(group) // 2]
    t0 = int(step[0][3])
    print(f"\nmedian quartet2 step, {kind} ({span(step):.1f} us); times in us from its first GPU activity")
    summarize(step)
    print(f"{'stream':>6s} {'start':>7s} {'end':>7s} {'dur':>6s} {'cpu->gpu':>8s}  kernel")
    for r in step:
        s, e = (int(r[3]) - t0) / 1e3, (int(r[4]) - t0) / 1e3
        lag = (int(r[3]) - launch[int(r[5])]) / 1e3 if int(r[5]) in launch else float("nan")
        print(f"{r[2]:>6s} {s:7.1f} {e:7.1f} {e - s:6.1f} {lag:8.1f}  {short(r[1])}")


show("single", single[1::n])
show("back to back", back_to_back(1))
