#!/usr/bin/env python3
"""Per-step timelines of `quartet2 bench layer` from a cupti_trace.csv.

Each scheme's step holds exactly three GEMMs, and steps never overlap on the GPU (a step's
side stream forks from stream 0 after the previous step's last GEMM), so the trace splits
after every third GEMM. Prints the span of each timed step per scheme (first GPU activity to
the end of the third GEMM), then every kernel of the median quartet2 step with its stream,
start, duration, and the delay between its launch call on the CPU and its start on the GPU.

  timeline.py TRACE.csv [SHAPE_INDEX]   (0: 8192x2048x2048, the first shape timed)
"""
import csv
import statistics
import sys

WARMUP, REPS, SCHEMES = 5, 20, ["bf16", "quartet2", "nvidia"]


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
per_shape = len(SCHEMES) * (WARMUP + REPS)
timed = steps[shape * per_shape + len(SCHEMES) * WARMUP:(shape + 1) * per_shape]


def span(step):
    return (int(step[-1][4]) - int(step[0][3])) / 1e3


for i, name in enumerate(SCHEMES):
    spans = [span(s) for s in timed[i::len(SCHEMES)]]
    print(f"{name:9s} step span median {statistics.median(spans):8.1f} us  min {min(spans):8.1f}  max {max(spans):8.1f}")

q = timed[1::len(SCHEMES)]
step = sorted(q, key=span)[len(q) // 2]
t0 = int(step[0][3])
print(f"\nmedian quartet2 step ({span(step):.1f} us); times in us from its first GPU activity")
print(f"{'stream':>6s} {'start':>7s} {'end':>7s} {'dur':>6s} {'cpu->gpu':>8s}  kernel")
for r in step:
    s, e = (int(r[3]) - t0) / 1e3, (int(r[4]) - t0) / 1e3
    lag = (int(r[3]) - launch[int(r[5])]) / 1e3 if int(r[5]) in launch else float("nan")
    print(f"{r[2]:>6s} {s:7.1f} {e:7.1f} {e - s:6.1f} {lag:8.1f}  {short(r[1])}")
