#!/usr/bin/env bash
# Our training step against PyTorch's, on the GPU machine, from the repository root with
# gpu-bundle/ (scripts/device-test.sh build) carried along; about 3-5 minutes on an H100:
#   1. quartet2 bench step: presets 100m and 200m, schemes bf16 and quartet2
#   2. bench/torch_step.py at the same shapes (batch 16 x seq 1024, vocab 32768, 2 warm-up +
#      5 timed steps): torch.compile (and eager with WITH_EAGER=1)
#   3. bench step of 100m under the CUPTI tracer, bf16 and quartet2 each alone, and
#      scripts/trace/breakdown.py of each trace
# Logs, JSON and traces go to $OUT (default gpu-bundle/out); a short table is printed last.
#   bench/compare_step.sh            (SKIP_TORCH=1 / SKIP_TRACE=1 leave parts out)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
bundle="${GPU_BUNDLE:-$root/gpu-bundle}"
# shellcheck source=scripts/gpu-env.sh
source scripts/gpu-env.sh
out="${OUT:-$root/gpu-bundle/out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi -L || true
q2="$bundle/quartet2"

step() {  # step NAME TIMEOUT_S COMMAND...: runs, logs, times, never stops the script
  local name=$1 limit=$2 t0=$SECONDS rc=0
  shift 2
  timeout "$limit" "$@" >"$out/$name.json" 2>"$out/$name.log" || rc=$?
  echo "[compare_step] $name: exit $rc, $((SECONDS - t0)) s"
}

step q2-step 240 "$q2" bench step --json --presets 100m 200m --schemes bf16 quartet2 --steps 5

if [[ -z "${SKIP_TORCH:-}" ]]; then
  for preset in 100m 200m; do  # one process each: a compile that runs long costs one preset only
    step "torch-compile-$preset" 200 python3 bench/torch_step.py --json --presets "$preset" --steps 5 --warmup 2
  done
  [[ -n "${WITH_EAGER:-}" ]] &&
    step torch-eager 120 python3 bench/torch_step.py --json --presets 100m,200m --steps 5 --warmup 2 --no-compile
fi

if [[ -z "${SKIP_TRACE:-}" ]]; then
  for scheme in bf16 quartet2; do
    t0=$SECONDS rc=0
    CUDA_INJECTION64_PATH="$bundle/libcupti_trace.so" Q2_TRACE="$out/trace-100m-$scheme.csv" \
      timeout 180 "$q2" bench step --json --presets 100m --schemes "$scheme" --steps 5 \
      >"$out/traced-100m-$scheme.json" 2>"$out/traced-100m-$scheme.log" || rc=$?
    echo "[compare_step] traced bench step 100m $scheme: exit $rc, $((SECONDS - t0)) s"
    python3 scripts/trace/breakdown.py "$out/trace-100m-$scheme.csv" --warmup 2 --steps 5 \
      --labels "100m/$scheme" >"$out/breakdown-100m-$scheme.txt" 2>&1 || echo "breakdown $scheme: exit $?"
    python3 scripts/trace/breakdown.py "$out/trace-100m-$scheme.csv" --warmup 2 --steps 5 \
      --labels "100m/$scheme" --json >"$out/breakdown-100m-$scheme.json" 2>/dev/null || true
  done
  gzip -f "$out"/trace-100m-*.csv 2>/dev/null || true
fi

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]

def rows(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))["rows"]
    except (OSError, ValueError, KeyError):
        return []

all_rows = rows("q2-step") + rows("torch-compile-100m") + rows("torch-compile-200m") + rows("torch-eager")
print("\n==== training step, batch 16 x seq 1024, vocab 32768 (MFU: bench_step.cpp's FLOPs / 989 TFLOP/s) ====")
print(f"{'preset':6s} {'what':22s} {'ms/step':>9s} {'tokens/s':>10s} {'MFU':>6s} {'memory':>9s} {'vs torch compile':>16s}")
for preset in ("100m", "200m"):
    ref = next((r["step_ms"] for r in all_rows if r["preset"] == preset and r["scheme"] == "torch_bf16_compile"), 0)
    for r in all_rows:
        if r["preset"] != preset:
            continue
        what = r["scheme"] if r["scheme"].startswith("torch") else "quartet2 " + r["scheme"]
        mem = f"{r['memory_gib']:7.2f}Gi" if r.get("memory_gib") is not None else f"{'-':>9s}"
        vs = f"{r['step_ms'] / ref:.2f}x" if ref else "-"
        print(f"{preset:6s} {what:22s} {r['step_ms']:9.1f} {r['tokens_per_s']:10.0f} {100 * r['mfu']:5.1f}% {mem} {vs:>16s}")

bd = {}
for scheme in ("bf16", "quartet2"):
    try:
        bd[scheme] = json.load(open(os.path.join(out, f"breakdown-100m-{scheme}.json")))["runs"][0]
    except (OSError, ValueError, KeyError, IndexError):
        pass
if bd:
    names = list(bd)
    print("\n==== 100m, median traced step by category: ms (% of step) ====")
    print(f"{'category':12s} " + " ".join(f"{n:>18s}" for n in names))
    cats = list(next(iter(bd.values()))["median_step"]["categories"])
    for c in cats + ["idle", "overlap", "step"]:
        cells = []
        for n in names:
            m = bd[n]["median_step"]
            if c in m["categories"]:
                ms, pct = m["categories"][c]["ms"], m["categories"][c]["pct"]
            elif c == "idle":
                ms, pct = m["idle_ms"], m["idle_pct"]
            elif c == "overlap":
                ms, pct = -m["overlap_ms"], -m["overlap_pct"]
            else:
                ms, pct = m["step_ms"], 100.0
            cells.append(f"{ms:9.2f} ({pct:5.1f}%)")
        print(f"{c:12s} " + " ".join(f"{x:>18s}" for x in cells))
    for n in names:
        traced = rows(f"traced-100m-{n}")
        if traced:
            print(f"{n}: bench step under the tracer {traced[0]['step_ms']:.1f} ms/step; traced timed steps "
                  f"mean {bd[n]['mean_step_ms']:.1f} ms")
    for n in names:
        print(f"top kernels, {n}: " + "; ".join(f"{k['name'][:40]} {k['ms']:.2f}" for k in
                                              bd[n]["median_step"]["top_kernels"][:5]))
print(f"\nfiles in {out}: q2-step.json, torch-*.json, breakdown-100m-*.txt/json, trace-100m-*.csv.gz, *.log")
PY
