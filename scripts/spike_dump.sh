#!/usr/bin/env bash
# Issue 25's look inside a spike (on the GPU machine, with gpu-bundle/ and data/gcide): seed 0 of
# configs/short-30m.toml under quartet2_no46 and quartet2, stopped at step STEP (default 24, the
# step where quartet2_no46 spikes) with the first and last layer's X, W and dY dumped; then each
# dumped linear's forward, dgrad and wgrad errors under both forward quantizers
# (scripts/real-grad-error.sh: first 4096 tokens, one backward draw) and each operand's outlier
# statistics.
#
#   scripts/spike_dump.sh [STEP]   -> $OUT/dump-errors.jsonl, $OUT/dump-stats.txt
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/gpu-env.sh
source scripts/gpu-env.sh
step="${1:-24}" out="${OUT:-$bundle/out}" q2="$bundle/quartet2"
mkdir -p "$out"
for run in quartet2_no46 quartet2; do
  "$q2" train --config configs/short-30m.toml --device cuda --method.scheme=$run --train.seed=0 \
    --out.dir="runs/dump-$run" --train.stop_at="$step" --log.dump_every="$step" >"$out/dump-$run.log" 2>&1 &
done
wait
for run in quartet2_no46 quartet2; do
  SCHEMES="quartet2 quartet2_no46" scripts/real-grad-error.sh "$q2" "runs/dump-$run" 4096 1 | sed "s/^{/{\"run\":\"$run\",/"
done >"$out/dump-errors.jsonl"
STEP="$step" python3 - >"$out/dump-stats.txt" <<'PY'
import glob, os
import numpy as np
step = os.environ["STEP"]
for run in ("quartet2_no46", "quartet2"):
    for d in sorted(glob.glob(f"runs/dump-{run}/tensors/step{step}/*")):
        cols = []
        for t in ("x", "w", "dy"):
            a = np.load(f"{d}/{t}.npy").astype(np.float64)
            rms, amax = np.sqrt((a * a).mean()), np.abs(a).max()
            b = a.reshape(-1, 16)  # NVFP4's blocks of 16 along the rows
            ratio = np.abs(b).max(axis=1) / (np.sqrt((b * b).mean(axis=1)) + 1e-30)
            cols.append(f"{t}: rms {rms:.3g} amax/rms {amax / rms:.1f} block amax/rms p50 "
                        f"{np.median(ratio):.2f} p99 {np.quantile(ratio, 0.99):.2f}")
        print(run, os.path.basename(d), " | ".join(cols))
PY
cat "$out/dump-stats.txt"
