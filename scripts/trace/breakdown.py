#!/usr/bin/env python3
"""Where the time of a `quartet2 bench step` training step goes, from a cupti_trace.csv.

  CUDA_INJECTION64_PATH=gpu-bundle/libcupti_trace.so Q2_TRACE=trace.csv \\
      gpu-bundle/quartet2 bench step --presets 100m --schemes quartet2 --steps 5
  breakdown.py trace.csv [--warmup 2] [--steps 5] [--labels 100m/quartet2] [--top 10] [--json]

Steps. bench step (bench/bench_step.cpp) puts no marker in the trace, but every step ends
with AdamW: one adamw_kernel launch per parameter tensor, back to back on stream 0, after the
gradient norm was read back to the host, and nothing else runs on the GPU between them. So
the trace (kernels, memsets and copies, in order of their GPU start) is cut after the last
adamw_kernel of each such run. A step's window runs from the end of the previous step (its
last AdamW kernel) to the end of its own, so the host's launch time before the step's first
kernel counts as idle, as it counts in bench step's wall-clock ms/step; the first step of a
run starts at its first GPU activity. bench step runs `--warmup` (2, fixed in
StepBenchOptions) + `--steps` steps per preset and scheme, in order presets x schemes; the
steps found are grouped into runs of that many (their count must be a multiple of it), the
first `--warmup` of each run (with model set-up in the first) are left out, and the timed
step whose window is the median (of an even count the later middle one, as timeline.py) is
broken down.

Categories (first match wins; patterns from the __global__ kernels of src/cuda, the names
either mangled, as CUPTI gives them, or demangled):
  attention    attention_{forward,delta,dq,dkv}_kernel
  norm         rmsnorm_*
  loss         cross_entropy_kernel, its row-loss sum sum_one_block_kernel<float>, and the
               dlogits scaling scale_bf16_kernel
  optimizer    adamw_kernel, the gradient norm (sum_squares_partial_kernel,
               sum_one_block_kernel<double>) and clipping (scale_f32_kernel)
  quantizer    every kernel of src/cuda/quant (amax, rtn_1x16, rtn_16x16, sr_1x16,
               ms_eden_rows, eden_scales, ms_eden_transposed, requant, scale_product,
               dequant: the NVFP4 -> BF16 expansion of the Hopper emulation, and
               transposed: the rotated SR/RTN of sr_rtn_rotated.cu)
  elementwise  swiglu_*, rope_kernel, add_bf16_kernel, the f32<->bf16 converts, embedding
               forward/backward with its iota_kernel and cub's DeviceRadixSort
  gemm         cuBLAS/cuBLASLt/CUTLASS: timeline.py's is_gemm (gemm, nvjet, sm90_xmma,
               cutlass), plus splitKreduce, gemv and any other name holding cublas
  other        any other kernel
  memset/copy  memsets and memcpys
Each category's time is the sum of its activities' durations in the step. Kernels that run
at once (on concurrent streams, or overlapping through programmatic dependent launch) are
each counted in full, so the categories plus idle exceed the step by `overlap` (the sum of
all durations minus the time with anything running); idle is
the step's time with nothing running on any stream. Categories + idle - overlap = step.

timeline.py is a script whose module body analyses `bench layer` as soon as it runs, so its
helpers (is_gemm, busy) are taken from its source (the imports and function definitions,
nothing else executed) rather than copied.
"""
import argparse
import ast
import csv
import ctypes
import ctypes.util
import json
import os
import re
import statistics
import sys


def _timeline_helpers():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "timeline.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef))]
    ns = {"__name__": "timeline"}
    exec(compile(ast.Module(body=keep, type_ignores=[]), path, "exec"), ns)
    return ns


_tl = _timeline_helpers()
is_gemm, busy = _tl["is_gemm"], _tl["busy"]

CATEGORIES = ["gemm", "attention", "norm", "elementwise", "quantizer", "loss", "optimizer", "other", "memset/copy"]
RULES = [
    ("attention", r"attention_(forward|delta|dq|dkv)_kernel"),
    ("norm", r"rmsnorm_\w*kernel"),
    ("loss", r"cross_entropy_kernel|sum_one_block_kernel(<float>|IfE)|scale_bf16_kernel"),
    ("optimizer", r"adamw_kernel|sum_squares_partial_kernel|sum_one_block_kernel(<double>|IdE)|scale_f32_kernel"),
    ("quantizer", r"amax_kernel|rtn_1x16_kernel|rtn_16x16_kernel|sr_1x16_kernel|ms_eden_rows_kernel|"
                  r"eden_scales_kernel|ms_eden_transposed_kernel|requant_kernel|scale_product_kernel|"
                  r"dequant_kernel|transposed_kernel"),
    ("elementwise", r"swiglu_(forward|backward)_kernel|rope_kernel|add_bf16_kernel|f32_to_bf16_kernel|"
                    r"bf16_to_f32_kernel|embedding_(forward|backward)_kernel|iota_kernel|DeviceRadixSort"),
]
STEP_END = "adamw_kernel"

_cxa = None


def demangle(name):
    """The demangled name through libstdc++'s __cxa_demangle; the name itself when that fails."""
    global _cxa
    if not name.startswith("_Z"):
        return name
    if _cxa is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
            f = lib.__cxa_demangle
            f.restype = ctypes.c_void_p
            f.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
            free = ctypes.CDLL(None).free
            free.argtypes = [ctypes.c_void_p]
            _cxa = (f, free)
        except (OSError, AttributeError):
            _cxa = False
    if not _cxa:
        return name
    status = ctypes.c_int(-1)
    p = _cxa[0](name.encode(), None, None, ctypes.byref(status))
    if status.value != 0 or not p:
        return name
    out = ctypes.string_at(p).decode(errors="replace")
    _cxa[1](p)
    return out


def display(name):
    """A kernel's readable name: demangled, without 'void', its parameter list and namespaces."""
    s = demangle(name).strip()
    if s.startswith("void "):
        s = s[5:]
    if s.endswith(")"):  # drop the parameter list: the last balanced (...) at the end
        depth = 0
        for i in range(len(s) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(s[i], 0)
            if depth == 0:
                s = s[:i]
                break
    depth, cut = 0, 0  # keep what follows the last '::' outside <...> and (...)
    for i, ch in enumerate(s):
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        elif depth == 0 and s.startswith("::", i):
            cut = i + 2
    s = s[cut:]
    return s if len(s) <= 90 else s[:87] + "..."


def classify(kind, name):
    if kind in ("S", "C"):
        return "memset/copy"
    both = name + " " + demangle(name)
    for cat, pattern in RULES:
        if re.search(pattern, both):
            return cat
    if is_gemm(both) or re.search(r"splitKreduce|gemv|cublas", both, re.I):
        return "gemm"
    return "other"


def load(path):
    """The GPU activities (kernels, memsets, copies) as dicts, in order of their start."""
    acts = []
    with open(path, newline="") as f:
        for r in csv.reader(f):
            if len(r) < 7 or r[0] not in ("K", "S", "C"):
                continue  # R rows (CPU launch calls), or a line cut short
            try:
                start, end = int(r[3]), int(r[4])
            except ValueError:
                continue
            acts.append({"kind": r[0], "name": r[1], "stream": r[2], "start": start, "end": end})
    acts.sort(key=lambda a: (a["start"], a["end"]))
    return acts


def split_steps(acts):
    """Cut after the last kernel of each run of consecutive adamw_kernel launches."""
    steps, cur = [], []
    marker = [a["kind"] == "K" and STEP_END in a["name"] for a in acts]
    for i, a in enumerate(acts):
        cur.append(a)
        if marker[i] and (i + 1 == len(acts) or not marker[i + 1]):
            steps.append(cur)
            cur = []
    return steps  # what follows the last AdamW (no step) is left out


def analyse(step, start):
    """Breakdown of one step whose window begins at `start` (ns)."""
    start = min(start, min(a["start"] for a in step))
    end = max(a["end"] for a in step)
    span = end - start
    intervals = [(a["start"], a["end"]) for a in step]
    union = busy(intervals)
    cats = {c: {"ns": 0, "launches": 0} for c in CATEGORIES}
    kernels = {}
    for a in step:
        c = classify(a["kind"], a["name"])
        d = a["end"] - a["start"]
        cats[c]["ns"] += d
        cats[c]["launches"] += 1
        if a["kind"] == "K":
            k = kernels.setdefault(display(a["name"]), {"ns": 0, "launches": 0, "category": c})
            k["ns"] += d
            k["launches"] += 1
    gaps, t = [], start  # idle stretches: the window minus the union of the activities
    for s, e in sorted(intervals):
        if s > t:
            gaps.append(s - t)
        t = max(t, e)
    if end > t:
        gaps.append(end - t)
    total = sum(c["ns"] for c in cats.values())
    return {"span": span, "cats": cats, "idle": span - union, "overlap": total - union, "gaps": gaps,
            "kernels": kernels}


def runs_of(steps, per_run, warmup, labels):
    if not steps:
        raise SystemExit("breakdown: no adamw_kernel in the trace: not a training step's trace?")
    if len(steps) % per_run:
        raise SystemExit(f"breakdown: {len(steps)} steps found (runs of adamw_kernel), not a multiple of "
                         f"warm-up + timed steps = {per_run}: pass --warmup/--steps as bench step ran")
    runs = []
    for r in range(len(steps) // per_run):
        group = steps[r * per_run:(r + 1) * per_run]
        results = []
        for i, st in enumerate(group):
            start = max(a["end"] for a in group[i - 1]) if i > 0 else st[0]["start"]
            results.append(analyse(st, start))
        timed = results[warmup:]
        order = sorted(range(len(timed)), key=lambda i: timed[i]["span"])
        med = order[len(timed) // 2]
        label = labels[r] if r < len(labels) else f"run {r + 1}"
        launches = [sum(1 for a in st if a["kind"] == "K" and STEP_END in a["name"]) for st in group]
        runs.append({"label": label, "steps": per_run, "warmup": warmup, "median_index": med, "timed": timed,
                     "median": timed[med], "adamw_launches": launches})
    return runs


def to_json(run, top):
    m, span = run["median"], run["median"]["span"]
    ms = lambda ns: ns / 1e6
    pct = lambda ns: 100.0 * ns / span if span else 0.0
    spans = [t["span"] for t in run["timed"]]
    kernels = sorted(m["kernels"].items(), key=lambda kv: (-kv[1]["ns"], kv[0]))[:top]
    return {
        "label": run["label"],
        "steps": run["steps"],
        "warmup": run["warmup"],
        "adamw_launches_per_step": run["adamw_launches"][-1],
        "timed_step_ms": [ms(s) for s in spans],
        "mean_step_ms": ms(statistics.mean(spans)),
        "median_step": {
            "timed_index": run["median_index"],
            "step_ms": ms(span),
            "categories": {c: {"ms": ms(v["ns"]), "pct": pct(v["ns"]), "launches": v["launches"]}
                           for c, v in m["cats"].items()},
            "idle_ms": ms(m["idle"]),
            "idle_pct": pct(m["idle"]),
            "idle_gaps": len(m["gaps"]),
            "largest_gap_ms": ms(max(m["gaps"], default=0)),
            "overlap_ms": ms(m["overlap"]),
            "overlap_pct": pct(m["overlap"]),
            "top_kernels": [{"name": n, "category": k["category"], "ms": ms(k["ns"]), "pct": pct(k["ns"]),
                             "launches": k["launches"]} for n, k in kernels],
        },
    }


def print_run(j):
    m = j["median_step"]
    t = j["timed_step_ms"]
    print(f"== {j['label']}: {len(t)} timed steps after {j['warmup']} warm-up, {j['adamw_launches_per_step']} "
          f"AdamW launches a step; step ms median {statistics.median(t):.3f}, mean {j['mean_step_ms']:.3f}, "
          f"min {min(t):.3f}, max {max(t):.3f}")
    print(f"median step (timed step {m['timed_index'] + 1} of {len(t)}): {m['step_ms']:.3f} ms")
    print(f"{'category':12s} {'ms/step':>9s} {'% step':>7s} {'launches':>8s}")
    for c, v in m["categories"].items():
        print(f"{c:12s} {v['ms']:9.3f} {v['pct']:6.1f}% {v['launches']:8d}")
    print(f"{'idle':12s} {m['idle_ms']:9.3f} {m['idle_pct']:6.1f}% {'':8s}  {m['idle_gaps']} gaps, largest "
          f"{m['largest_gap_ms']:.3f} ms")
    print(f"{'overlap':12s} {-m['overlap_ms']:9.3f} {-m['overlap_pct']:6.1f}% {'':8s}  counted twice: kernels running at once")
    print(f"{'step':12s} {m['step_ms']:9.3f} {100.0:6.1f}%")
    print(f"top {len(m['top_kernels'])} kernels of the median step")
    print(f"{'ms':>9s} {'% step':>7s} {'launches':>8s}  {'category':11s}  kernel")
    for k in m["top_kernels"]:
        print(f"{k['ms']:9.3f} {k['pct']:6.1f}% {k['launches']:8d}  {k['category']:11s}  {k['name']}")


def main():
    p = argparse.ArgumentParser(description="per-category breakdown of bench step's median step from a CUPTI trace")
    p.add_argument("trace", help="CSV written by scripts/trace/cupti_trace.cpp")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps per run (bench step: 2)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per run (bench step --steps)")
    p.add_argument("--labels", default="", help="comma-separated names of the runs, in bench step's order "
                   "(presets x schemes)")
    p.add_argument("--top", type=int, default=10, help="kernels listed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args()
    if a.steps < 1 or a.warmup < 0:
        p.error("--steps must be positive, --warmup not negative")
    runs = runs_of(split_steps(load(a.trace)), a.warmup + a.steps, a.warmup,
                   [x for x in a.labels.split(",") if x])
    out = [to_json(r, a.top) for r in runs]
    if a.json:
        print(json.dumps({"trace": a.trace, "runs": out}, indent=2))
        return
    for i, j in enumerate(out):
        if i:
            print()
        print_run(j)


if __name__ == "__main__":
    main()
