#!/usr/bin/env bash
# GPU tests, benchmarks and training runs, built on a machine without a GPU and run on one.
#
#   scripts/device-test.sh build [DATASET...]   (here: needs nvcc; datasets: prepared data/<name>,
#                                  default gcide) configures and builds build-cuda with the
#                                  GPU tests and the quartet2 program, then bundles the executables and
#                                  every shared library they need beyond glibc, libstdc++,
#                                  libgcc and the CUDA toolkit into gpu-bundle/ (git-ignored).
#   scripts/device-test.sh train CONFIG [SCHEME...]   (on the GPU machine) training runs on the
#                                  carried gcide data, quartet2 and bf16 by default.
#   scripts/device-test.sh profile [KERNEL...]   (on the GPU machine) Nsight Compute headline
#                                  metrics of the quantization kernels.
#   scripts/device-test.sh insts   (on the GPU machine) Nsight Compute: time, executed thread
#                                  instructions per element and issue-slot use of each
#                                  quantization kernel on 'bench quant's 128M-element input.
#   scripts/device-test.sh trace [SHAPE]   (on the GPU machine) the GPU timeline of 'quartet2
#                                  bench layer' through a CUPTI tracer (scripts/trace): both
#                                  streams' kernels of the median quartet2 step at shape SHAPE (0-3,
#                                  default 0: 8192x2048x2048), with the CPU-to-GPU delay of each.
#   scripts/device-test.sh memtrace PRESET SCHEME BATCH   (on the GPU machine) one 'bench step'
#                                  (sequence 2048, vocabulary 65,536, 2 warm-ups and 2 steps,
#                                  extra options in $STEP_ARGS) under the tracer with every
#                                  allocation: scripts/trace/memory.py's account of the memory
#                                  outside the pool and of the pool's growth beyond its
#                                  allocations; CSV and summary in $OUT/memtrace-*.
#   scripts/device-test.sh torch-linear-profile   (on the GPU machine, which has torch) the CPU
#                                  side of quartet2.nn.Linear's step at the first 'bench layer'
#                                  shape: cProfile (bench/torch_linear.py --profile), then the
#                                  CUDA calls' CPU time under the tracer (scripts/trace/api.py).
#   scripts/device-test.sh compare DIR...   (on the GPU machine) 'bench layer' of the programs
#                                  of several bundles (each DIR holds quartet2 or a
#                                  programs.tar.xz with it, e.g. built from another commit;
#                                  libraries missing there come from gpu-bundle), interleaved
#                                  over two rounds: quartet2's ratio to bf16 per shape, one
#                                  step alone and back to back. JSON in $OUT/compare-layer-*.json.
#   scripts/device-test.sh compare-step DIR...   (on the GPU machine) the same for 'bench step'
#                                  (the 100m and 200m training steps, bf16 and quartet2).
#   scripts/device-test.sh verify BEFORE_DIR CONFIG REFERENCE_DIR   (on the GPU machine) that a
#                                  change kept behaviour: GPU tests, CONFIG's quartet2 and bf16
#                                  losses against REFERENCE_DIR's, bench layer and step against
#                                  BEFORE_DIR's build.
#   scripts/device-test.sh sizes [PRESET...]   (on the GPU machine) 'bench step' of each preset
#                                  (default nanochat-d20 nanochat-d32) at sequence 2048 and
#                                  vocabulary 65,536, bf16 and quartet2, micro-batch 1, 2, 4, ...
#                                  ($BATCHES) until one does not fit: each row's time, MFU, peak memory
#                                  (predicted, and the most the pool's allocations held), and
#                                  the largest micro-batch that fits. Extra 'bench step'
#                                  options in $STEP_ARGS; JSON in $OUT/sizes/.
#   scripts/device-test.sh hf-check   (on the GPU machine, which has torch and transformers) trains
#                                  the tiny preset on the carried gcide data (fp32 on the CPU, and
#                                  quartet2 on the GPU), exports each ('--format hf', and the
#                                  quartet2 one '--format nvfp4') and runs scripts/hf_check.py on
#                                  them; logs in $OUT/hf-check/.
#   scripts/device-test.sh capi-python   (on the GPU machine, which has torch) the Python
#                                  package's tests (python/tests) against the bundle's
#                                  libquartet2_c; logs in $OUT/capi-python.txt.
#   scripts/device-test.sh torch-linear   (on the GPU machine, which has torch) bench/torch_linear.py:
#                                  quartet2.nn.Linear against the native layer, the official
#                                  Quartet II layer (when ext/Quartet-II holds a checkout, carried
#                                  along) and torch's BF16 layer; JSON in $OUT/torch-linear.json.
#   scripts/device-test.sh torch-step [PRESET...]   (on the GPU machine, which has torch) issue
#                                  20's PyTorch reference of the step: for each preset (default
#                                  nanochat-d20 nanochat-d32) at sequence 2048, vocabulary 65,536,
#                                  micro-batch $BATCH (default 8), 'quartet2 bench step' (bf16,
#                                  quartet2) and bench/torch_step.py (torch.compile, eager), each in
#                                  its own process (stopped after 3 minutes, torch.compile's after
#                                  5; one that fails or does not fit leaves its row out); JSON and
#                                  logs in $OUT/torch-step/; a table last: tokens/s of each, our
#                                  bf16 / torch.compile and quartet2 / our bf16 step times.
#   scripts/device-test.sh convert-train [STEPS]   (on the GPU machine, which has torch) the
#                                  gcide-30m config for STEPS steps (default 400) with the quartet2
#                                  scheme: the native program at seeds 0 and 1, and
#                                  scripts/torch_convert_train.py (PyTorch + quartet2.nn.convert) at
#                                  seeds 0 and 1; the loss curves side by side; logs in
#                                  $OUT/convert-train/.
#   scripts/device-test.sh bundle DIR EXE...   bundles other executables the same way.
#   scripts/device-test.sh tests   (on the GPU machine, from the repository root, with
#                                  gpu-bundle/ carried along) only the GPU test programs.
#   scripts/device-test.sh run     (on the GPU machine, from the repository root, with
#                                  gpu-bundle/ carried along) runs the GPU tests (logs in $OUT
#                                  when set), 'quartet2 bench quant' and 'bench layer' (JSON in
#                                  $OUT/bench-*.json) and prints a short summary last.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bundle="${GPU_BUNDLE:-$root/gpu-bundle}"  # GPU_BUNDLE: build or run another bundle
# GPU test programs: kernels, model ops, linear layers, whole-model backend (src/cuda), and the
# C API's CUDA half (src/capi).
tests=(quartet2_gpu_tests quartet2_gpu_ops_tests quartet2_gpu_linear_tests quartet2_gpu_model_tests
  quartet2_capi_gpu_tests)
test_paths=("${tests[@]:0:4}")
test_paths=("${test_paths[@]/#/build-cuda/src/cuda/}" build-cuda/src/capi/quartet2_capi_gpu_tests)

build() {
  [[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
  command -v nvcc >/dev/null || { echo "device-test: nvcc not found (install the CUDA toolkit)" >&2; exit 1; }
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON
  cmake --build build-cuda -j"$(nproc)" --target quartet2 quartet2_c "${tests[@]}"
  bundle "$bundle" build-cuda/quartet2 "${test_paths[@]}"
  cp -L build-cuda/libquartet2_c.so "$bundle/lib/"  # the Python package's library (capi-python)
  # The CUPTI tracer and its CUPTI (the device image may lack it).
  local cuda
  cuda=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  g++ -O2 -shared -fPIC -I"$cuda/include" scripts/trace/cupti_trace.cpp -o "$bundle/libcupti_trace.so" \
    -L"$cuda/lib" -L"$cuda/lib64" -L"$cuda/extras/CUPTI/lib64" -lcupti
  cp -L "$(ldd "$bundle/libcupti_trace.so" | awk '/libcupti/ {print $3}')" "$bundle/lib/"
  # Prepared datasets for GPU training runs, the programs and the libraries, compressed (xz: the
  # device has no zstd) to stay within what a device call can carry (64 MiB).
  local name
  for name in "${@:-gcide}"; do
    if [[ $name == gcide && ! -f data/gcide/meta.json ]]; then
      build-cuda/quartet2 prepare --corpus gcide --vocab 8192 --out data/gcide
    fi
    [[ -f "data/$name/meta.json" ]] || { echo "device-test: data/$name is not a prepared dataset" >&2; exit 1; }
    tar -cJf "$bundle/$name.data.tar.xz" -C data "$name"
  done
  (cd "$bundle" && tar -cJf programs.tar.xz lib quartet2 libcupti_trace.so "${tests[@]}" &&
    rm -rf lib quartet2 libcupti_trace.so "${tests[@]}")
  echo "device-test: $(du -sh "$bundle" | cut -f1) to carry"
}

# On the GPU machine: the programs and libraries out of their archive, and the library path.
unpack() {
  # shellcheck source=scripts/gpu-env.sh
  source scripts/gpu-env.sh
}

# bundle DIR EXE...: copies the executables and every shared library they need beyond glibc,
# libstdc++, libgcc and the CUDA toolkit into DIR and DIR/lib (run them on the GPU machine with
# LD_LIBRARY_PATH=DIR/lib:/usr/local/cuda/lib64).
bundle() {
  local dir="$1"
  shift
  rm -rf "$dir"
  mkdir -p "$dir/lib"
  cp "$@" "$dir/"
  ldd "$@" | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux* | libstdc++.so* | libgcc_s.so*) continue ;;
    esac
    case "$lib" in /usr/local/cuda*) continue ;; esac
    cp -L "$lib" "$dir/lib/"
  done
  echo "device-test: $dir ready ($(du -sh "$dir" | cut -f1)):"
  ls -l "$dir" "$dir/lib"
}

# The GPU test programs, logs in $OUT/<program>.log, a summary line each; fails if any failed.
gpu_tests() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}" rc=0 t
  mkdir -p "$out"
  nvidia-smi -L || true
  for t in "${tests[@]}"; do
    "$bundle/$t" --gtest_color=no >"$out/$t.log" 2>&1 || rc=$?
    grep -E '^\[(  FAILED|  SKIPPED) ' "$out/$t.log" | tail -n 40 || true
  done
  for t in "${tests[@]}"; do
    echo "$t: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?' "$out/$t.log" | tr '\n' ' ')"
  done
  return $rc
}

run() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}"
  mkdir -p "$out"
  local tests_rc=0
  gpu_tests >"$out/tests-summary.txt" || tests_rc=$?

  local bench_rc=0 b
  for b in quant layer; do
    "$bundle/quartet2" bench $b --json >"$out/bench-$b.json" 2>"$out/bench-$b.txt" || bench_rc=$?
  done

  echo
  echo "==== summary ===="
  cat "$out/tests-summary.txt"
  echo "benchmarks: exit $bench_rc (JSON: $out/bench-*.json)"
  cat "$out/bench-quant.txt" "$out/bench-layer.txt"
  [[ $tests_rc -eq 0 && $bench_rc -eq 0 ]]
}

# datasets [NAME...]: the prepared datasets the bundle carries (default: all of them), each into
# data/<name> unless already there.
datasets() {
  local archives=("$bundle"/*.data.tar.xz) archive name
  if [[ $# -gt 0 ]]; then
    archives=()
    for name in "$@"; do archives+=("$bundle/$name.data.tar.xz"); done
  fi
  for archive in "${archives[@]}"; do
    name=$(basename "$archive" .data.tar.xz)
    if [[ ! -e "$archive" ]]; then
      [[ $# -eq 0 ]] && continue  # none carried
      echo "device-test: the bundle carries no $name dataset (scripts/device-test.sh build $name)" >&2
      return 1
    fi
    [[ -f "data/$name/meta.json" ]] || { mkdir -p data && tar -xJf "$archive" -C data; }
  done
}

# train CONFIG [SCHEME...]: GPU training runs (default quartet2 and bf16) with the same config
# (plus the overrides in $TRAIN_ARGS)
# in runs/gpu-<scheme>; the log and metrics.jsonl of each are copied to $OUT as
# <scheme>.log and <scheme>.metrics.jsonl (checkpoints stay behind: too big to bring back).
train() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}" config="$1" scheme
  shift
  mkdir -p "$out"
  datasets
  local schemes=("$@")
  [[ $# -gt 0 ]] || schemes=(quartet2 bf16)
  for scheme in "${schemes[@]}"; do
    local dir="runs/gpu-$scheme" t0=$SECONDS
    mkdir -p "$dir"
    # shellcheck disable=SC2086 # TRAIN_ARGS: extra --section.key=value overrides, split on spaces
    "$bundle/quartet2" train --config "$config" --device cuda --method.scheme="$scheme" --out.dir="$dir" --overwrite \
      ${TRAIN_ARGS:-} >"$out/$scheme.log" 2>&1 || echo "train $scheme: exit $?"
    cp "$dir/metrics.jsonl" "$out/$scheme.metrics.jsonl" 2>/dev/null || true
    echo "$scheme: $((SECONDS - t0)) s; $(tail -n 1 "$out/$scheme.log")"
  done
}

# Nsight Compute profile of each quantization kernel (one launch each, clocks left alone):
# full reports to $OUT/ncu-<kernel>.txt, the headline metrics printed.
profile() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}" k
  mkdir -p "$out"
  for k in "${@:-rtn_1x16_kernel amax_kernel sr_1x16_kernel dequant_kernel ms_eden_rows_kernel requant_kernel}"; do
    for k in $k; do
      ncu --clock-control none -k "regex:$k" -s 3 -c 1 --section SpeedOfLight --section Occupancy \
        --section LaunchStats --section SchedulerStats --section WarpStateStats \
        "$bundle/quartet2" bench quant >"$out/ncu-$k.txt" 2>&1 || true
      echo "== $k"
      grep -E "Registers Per Thread|Achieved Occupancy|Compute \(SM\) Throughput|DRAM Throughput|Memory Throughput|Issue Slots Busy|No Eligible|Duration|Warp Cycles Per Issued" "$out/ncu-$k.txt" | sed 's/  */ /g'
    done
  done
}

# One launch of each kernel (after one warm-up): instructions per element are what limits the
# issue-bound quantizers.
insts() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}" k
  mkdir -p "$out"
  for k in 'rtn_1x16_kernel<\(int\)0>' 'rtn_1x16_kernel<\(int\)1>' ms_eden_rows ms_eden_transposed requant_kernel \
    'eden_scales_kernel<\(bool\)0>' sr_1x16 rtn_16x16 dequant_kernel amax_kernel; do
    ncu --clock-control none --kernel-name-base demangled -k "regex:$k" -s 1 -c 1 --csv --page raw \
      --metrics gpu__time_duration.sum,sm__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active \
      "$bundle/quartet2" bench quant >"$out/insts.csv" 2>&1 || true
    python3 - "$out/insts.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
if len(rows) < 3:
    sys.exit(f"no profile in {sys.argv[1]}")
col = {k: i for i, k in enumerate(rows[0])}
r = rows[2]
num = lambda k: float(r[col[k]].replace(",", ""))
elements = 8192 * 16384  # bench quant's input
print(f"{r[col['Kernel Name']].split('(')[0].split('::')[-1]:28s} {num('gpu__time_duration.sum') / 1e3:8.1f} us "
      f"{num('sm__inst_executed.sum') * 32 / elements:6.2f} thread instructions/element, "
      f"issue slots {num('smsp__issue_active.avg.pct_of_peak_sustained_active'):.0f}% busy")
PY
  done
}

# The GPU timeline of 'bench layer' (CSV in $OUT/trace.csv) and the median quartet2 step of one
# shape: where stream 0 waits, for the side stream or for the CPU's launches.
trace() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}"
  mkdir -p "$out"
  CUDA_INJECTION64_PATH="$bundle/libcupti_trace.so" Q2_TRACE="$out/trace.csv" "$bundle/quartet2" bench layer \
    >"$out/trace-bench.txt" 2>&1
  python3 scripts/trace/timeline.py "$out/trace.csv" "${1:-0}"
}

# memtrace PRESET SCHEME BATCH: where one bench step's device memory went (scripts/trace/memory.py).
memtrace() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}" name="memtrace-$1-$2-b$3"
  mkdir -p "$out"
  # shellcheck disable=SC2086 # STEP_ARGS: extra 'bench step' options, split on spaces
  CUDA_INJECTION64_PATH="$bundle/libcupti_trace.so" Q2_TRACE="$out/$name.csv" Q2_TRACE_MEMORY=1 \
    "$bundle/quartet2" bench step --presets "$1" --schemes "$2" --batch "$3" --seq 2048 --vocab 65536 \
    --steps 2 ${STEP_ARGS:-} >"$out/$name.txt" 2>&1 || { tail -n 3 "$out/$name.txt"; return 1; }
  grep '^\[bench step\]' "$out/$name.txt"
  python3 scripts/trace/memory.py "$out/$name.csv" | tee "$out/$name-summary.txt"
}

# torch-linear-profile: the CPU's time in quartet2.nn.Linear's step, by Python function and by CUDA call.
torch_linear_profile() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}" steps=100
  mkdir -p "$out"
  local env=(QUARTET2_LIBRARY="$bundle/lib/libquartet2_c.so" PYTHONPATH=python)
  env "${env[@]}" python3 bench/torch_linear.py --quartet2 "$bundle/quartet2" --profile $steps | tee "$out/nn-profile.txt"
  env "${env[@]}" CUDA_INJECTION64_PATH="$bundle/libcupti_trace.so" Q2_TRACE="$out/nn-trace.csv" \
    python3 bench/torch_linear.py --quartet2 "$bundle/quartet2" --profile $steps >"$out/nn-profile-traced.txt"
  # The warm-ups' calls count too (5 more steps and the set-up): a bound on each call's share.
  python3 scripts/trace/api.py "$out/nn-trace.csv" $steps | head -n 25 | tee "$out/nn-api.txt"
}

# verify BEFORE_DIR CONFIG REFERENCE_DIR: that a change kept behaviour, in one call: the GPU
# tests, training runs of CONFIG (quartet2 and bf16) compared value for value with the
# metrics in REFERENCE_DIR (scripts/compare_losses.py), then 'bench layer' and 'bench step' of
# BEFORE_DIR's programs and of gpu-bundle's, interleaved. Each part logs to $OUT and prints its
# summary as it finishes.
verify() {
  local before="$1" config="$2" reference="$3" out="${OUT:-$root/gpu-bundle/out}" rc=0
  mkdir -p "$out"
  echo "==== tests"
  gpu_tests >"$out/tests.txt" 2>&1 || rc=1
  tail -n 4 "$out/tests.txt"
  echo "==== losses of $config against $reference"
  OUT="$out/train" train "$config" quartet2 bf16 >"$out/train.txt" 2>&1
  scripts/compare_losses.py "$out/train" "$reference" || rc=1
  echo "==== bench layer"
  interleave layer "$before" "$bundle" 2>&1 | tail -n 6
  echo "==== bench step"
  interleave step "$before" "$bundle" 2>&1 | tail -n 6
  return $rc
}

# interleave BENCH DIR...: 'quartet2 bench BENCH --json' of the programs of several bundles,
# alternating over two rounds so that drifting clocks hit every build alike; JSON in
# $OUT/compare-BENCH-<bundle>-<round>.json.
interleave() {
  unpack  # gpu-bundle's libraries serve bundles that hold only a program
  local bench="$1" out="${OUT:-$root/gpu-bundle/out}" round dir
  shift
  mkdir -p "$out"
  for dir in "$@"; do
    [[ -x "$dir/quartet2" ]] || tar -xJf "$dir/programs.tar.xz" -C "$dir"
  done
  for round in 1 2; do
    for dir in "$@"; do
      LD_LIBRARY_PATH="$dir/lib:$LD_LIBRARY_PATH" "$dir/quartet2" bench "$bench" --json \
        >"$out/compare-$bench-$(basename "$dir")-$round.json" 2>"$out/compare-$bench-$(basename "$dir")-$round.txt" ||
        echo "compare: $dir, round $round: exit $?"
    done
  done
  python3 - "$bench" "$out" "$@" <<'PY'
import json, os, sys
bench, out, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
for d in dirs:
    for r in (1, 2):
        try:
            j = json.load(open(f"{out}/compare-{bench}-{os.path.basename(d)}-{r}.json"))
        except (OSError, ValueError):
            continue
        if bench == "layer":
            heads = [f"{s['m']}x{s['k']}x{s['n']}" for s in j["shapes"]]
            cells = []
            for s in j["shapes"]:
                q = next(x for x in s["schemes"] if x["scheme"] == "quartet2")
                cells.append(f"{q['ratio_to_bf16']:.2f}x / {q.get('ratio_back_to_back', float('nan')):.2f}x")
        else:
            heads = [f"{x['preset']} {x['scheme']}" for x in j["rows"]]
            cells = [f"{x['step_ms']:.1f} ms" for x in j["rows"]]
        rows.append((os.path.basename(d), r, cells, heads))
if rows:
    print("quartet2 / bf16, one step alone / back to back" if bench == "layer" else "training step time")
    print(f"{'bundle':24s} {'round':>5s} " + " ".join(f"{h:>17s}" for h in rows[0][3]))
    for name, r, cells, _ in rows:
        print(f"{name:24s} {r:5d} " + " ".join(f"{c:>17s}" for c in cells))
PY
}

# sizes [PRESET...]: the model-size table (docs/PERFORMANCE.md): every micro-batch from 1 up,
# doubling, each in its own process so that the first one that does not fit ends that row.
sizes() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}/sizes" preset scheme batch
  mkdir -p "$out"
  local presets=("$@")
  [[ $# -gt 0 ]] || presets=(nanochat-d20 nanochat-d32)
  for preset in "${presets[@]}"; do
    for scheme in bf16 quartet2; do
      for batch in ${BATCHES:-1 2 4 8 16 32}; do
        local name="$preset-$scheme-b$batch${STEP_ARGS:+-$(echo "$STEP_ARGS" | tr -dc 'a-z0-9')}"
        # shellcheck disable=SC2086 # STEP_ARGS: extra 'bench step' options, split on spaces
        if ! "$bundle/quartet2" bench step --presets "$preset" --schemes "$scheme" --batch "$batch" --seq 2048 \
          --vocab 65536 --steps 3 ${STEP_ARGS:-} --json >"$out/$name.json" 2>"$out/$name.txt"; then
          echo "$name: does not fit or failed: $(grep -v '^\[bench step\]' "$out/$name.txt" | tail -n 1)"
          rm -f "$out/$name.json"
          break
        fi
        grep '^\[bench step\]' "$out/$name.txt"
      done
    done
  done
  python3 - "$out" <<'PY'
import glob, json, sys
rows = {}
for f in glob.glob(f"{sys.argv[1]}/*.json"):
    j = json.load(open(f))
    cfg = j["config"]
    for r in j["rows"]:
        key = (r["preset"], r["scheme"], cfg.get("optimizer", "adamw"), cfg.get("recompute", False))
        rows.setdefault(key, []).append((cfg["batch"], r))
print(f"{'preset':14s} {'scheme':9s} {'optim':6s} {'recomp':6s} {'batch':>5s} {'ms/step':>9s} {'tokens/s':>10s} "
      f"{'MFU':>6s} {'peak GiB':>9s} {'predicted':>9s} {'pred/meas':>9s} {'allocs':>7s} {'plan/allocs':>11s} "
      f"{'reserved':>8s}")
# allocs: the most the pool's allocations held at once (no context, no reserve); plan: predicted
# less the context; reserved: the most the pool reserved at once (allocations and their gaps).
for (preset, scheme, opt, rc), rs in sorted(rows.items()):
    for b, r in sorted(rs, key=lambda x: x[0]):
        p, al = r.get("predicted_gib", 0), r.get("allocated_gib", 0)
        print(f"{preset:14s} {scheme:9s} {opt:6s} {'yes' if rc else 'no':6s} {b:5d} {r['step_ms']:9.1f} "
              f"{r['tokens_per_s']:10.0f} {100*r['mfu']:5.1f}% {r['memory_gib']:9.2f} {p:9.2f} {p / r['memory_gib'] if r['memory_gib'] else float('nan'):9.3f} "
              f"{al:7.2f} {(p - r.get('context_gib', 0)) / al if al else float('nan'):11.3f} "
              f"{r.get('reserved_gib', 0):8.2f}")
    print(f"{preset:14s} {scheme:9s} {opt:6s} {'yes' if rc else 'no':6s} largest micro-batch that fits: "
          f"{max(b for b, _ in rs)} x 2048")
PY
}

# hf-check: scripts/hf_check.py on freshly trained tiny models (issue 21's done-when).
hf_check() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}/hf-check" q="$bundle/quartet2" rc=0
  mkdir -p "$out"
  datasets gcide
  local common=(--config configs/tiny-demo.toml --overwrite --train.steps=40 --log.eval_every=40 --log.ckpt_every=40)
  "$q" train "${common[@]}" --device cpu --method.scheme=fp32 --out.dir=runs/hf-fp32 >"$out/train-fp32.log" 2>&1
  "$q" train "${common[@]}" --device cuda --method.scheme=quartet2 --out.dir=runs/hf-q2 >"$out/train-q2.log" 2>&1
  "$q" train "${common[@]}" --device cuda --method.scheme=bf16 --out.dir=runs/hf-bf16 >"$out/train-bf16.log" 2>&1
  "$q" export --checkpoint runs/hf-fp32/checkpoint.bin --format hf --dtype f32 --out runs/hf-fp32-hf >"$out/export.log" 2>&1
  "$q" export --checkpoint runs/hf-q2/checkpoint.bin --format hf --out runs/hf-q2-hf >>"$out/export.log" 2>&1
  "$q" export --checkpoint runs/hf-bf16/checkpoint.bin --format hf --out runs/hf-bf16-hf >>"$out/export.log" 2>&1
  "$q" export --checkpoint runs/hf-bf16/checkpoint.bin --format hf --dtype bf16 --out runs/hf-bf16-hf16 >>"$out/export.log" 2>&1
  "$q" export --checkpoint runs/hf-q2/checkpoint.bin --format nvfp4 --out runs/hf-q2-nvfp4 >>"$out/export.log" 2>&1
  echo "== fp32-trained, hf folder"
  python3 scripts/hf_check.py --hf runs/hf-fp32-hf --data data/gcide --quartet2 "$q" \
    --checkpoint runs/hf-fp32/checkpoint.bin 2>&1 | tee "$out/hf-check-fp32.txt" || rc=1
  echo "== bf16-trained (on the GPU), hf folder (float32 master weights, the default)"
  python3 scripts/hf_check.py --hf runs/hf-bf16-hf --data data/gcide --quartet2 "$q" \
    --checkpoint runs/hf-bf16/checkpoint.bin 2>&1 | tee "$out/hf-check-bf16.txt" || rc=1
  echo "== bf16-trained (on the GPU), hf folder with --dtype bf16 (weights rounded: loss within BF16's reach)"
  python3 scripts/hf_check.py --hf runs/hf-bf16-hf16 --data data/gcide --quartet2 "$q" \
    --checkpoint runs/hf-bf16/checkpoint.bin 2>&1 | tee "$out/hf-check-bf16-dtype16.txt" || true
  echo "== quartet2-trained, nvfp4 folder"
  QUARTET2_LIBRARY="$bundle/lib/libquartet2_c.so" python3 scripts/hf_check.py --hf runs/hf-q2-hf \
    --nvfp4 runs/hf-q2-nvfp4 --data data/gcide --quartet2 "$q" \
    --checkpoint runs/hf-q2/checkpoint.bin 2>&1 | tee "$out/hf-check-q2.txt" || rc=1
  return $rc
}

# capi-python: python/tests with pytest against the bundle's C API library (issue 22).
capi_python() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}"
  mkdir -p "$out"
  python3 -c "import pytest" 2>/dev/null || { echo "device-test: pytest is not installed" >&2; return 1; }
  QUARTET2_LIBRARY="$bundle/lib/libquartet2_c.so" PYTHONPATH=python python3 -m pytest -q python/tests 2>&1 |
    tee "$out/capi-python.txt"
}

# torch-linear: bench/torch_linear.py (issue 22's speed check).
torch_linear() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}" official=()
  mkdir -p "$out"
  [[ -d ext/Quartet-II/src ]] && official=(--official ext/Quartet-II)
  QUARTET2_LIBRARY="$bundle/lib/libquartet2_c.so" PYTHONPATH=python python3 bench/torch_linear.py \
    --quartet2 "$bundle/quartet2" "${official[@]}" --json "$out/torch-linear.json" 2>"$out/torch-linear.txt" |
    tee "$out/torch-linear-table.txt"
}

# json_run FILE LIMIT COMMAND...: COMMAND's stdout to FILE.json and stderr to FILE.log, stopped
# after LIMIT seconds; prints how it ended and never fails (a run that does not fit is a result).
json_run() {
  local file=$1 limit=$2 t0=$SECONDS rc=0 why=""
  shift 2
  timeout "$limit" "$@" >"$file.json" 2>"$file.log" || rc=$?
  [[ $rc -eq 0 ]] || why=": $(tail -n 1 "$file.log")"
  echo "$(basename "$file"): exit $rc, $((SECONDS - t0)) s$why"
}

# torch-step [PRESET...]: our step against PyTorch's at the nanochat presets (issue 20).
torch_step() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}/torch-step" preset
  mkdir -p "$out"
  local presets=("$@") shape=(--seq 2048 --vocab 65536 --batch "${BATCH:-8}")
  [[ $# -gt 0 ]] || presets=(nanochat-d20 nanochat-d32)
  nvidia-smi -L || true
  for preset in "${presets[@]}"; do
    json_run "$out/$preset-quartet2" 180 "$bundle/quartet2" bench step --presets "$preset" --schemes bf16 quartet2 \
      "${shape[@]}" --json
    json_run "$out/$preset-torch-compile" 300 python3 bench/torch_step.py --presets "$preset" "${shape[@]}" --json
    json_run "$out/$preset-torch-eager" 180 python3 bench/torch_step.py --presets "$preset" "${shape[@]}" --no-compile \
      --json
  done
  python3 - "$out" "${BATCH:-8}" "${presets[@]}" <<'PY'
import json, sys
out, batch, presets = sys.argv[1], sys.argv[2], sys.argv[3:]

def rows(preset, part):
    try:
        return {r["scheme"]: r for r in json.load(open(f"{out}/{preset}-{part}.json"))["rows"]}
    except (OSError, ValueError, KeyError):
        return {}

names = {"bf16": "our bf16", "quartet2": "our quartet2", "torch_bf16_compile": "torch.compile", "torch_bf16": "torch eager"}
table = []
print(f"\n{'preset':14s} {'what':14s} {'ms/step':>9s} {'tokens/s':>10s} {'MFU':>6s} {'memory GiB':>10s}")
for preset in presets:
    r = {**rows(preset, "quartet2"), **rows(preset, "torch-compile"), **rows(preset, "torch-eager")}
    for scheme, name in names.items():
        if scheme in r:
            x = r[scheme]
            mem = f"{x['memory_gib']:10.2f}" if x.get("memory_gib") is not None else f"{'-':>10s}"
            print(f"{preset:14s} {name:14s} {x['step_ms']:9.1f} {x['tokens_per_s']:10.0f} {100 * x['mfu']:5.1f}% {mem}")
    table.append((preset, r))
print(f"\ntokens/s at {batch} x 2048 tokens, vocabulary 65,536 (step-time ratios: > 1 is slower)")
print(f"{'preset':14s} " + " ".join(f"{n:>13s}" for n in names.values()) + f" {'bf16/compile':>13s} {'quartet2/bf16':>13s}")
for preset, r in table:
    ms = lambda s: r[s]["step_ms"] if s in r else None
    ratio = lambda a, b: f"{ms(a) / ms(b):12.2f}x" if ms(a) and ms(b) else f"{'-':>13s}"
    cells = [f"{r[s]['tokens_per_s']:13.0f}" if s in r else f"{'-':>13s}" for s in names]
    print(f"{preset:14s} " + " ".join(cells) + f" {ratio('bf16', 'torch_bf16_compile')} {ratio('quartet2', 'bf16')}")
PY
}

# convert-train [STEPS]: issue 22's PyTorch run against the native one.
convert_train() {
  unpack
  local out="${OUT:-$root/gpu-bundle/out}/convert-train" steps="${1:-400}" seed specs=()
  mkdir -p "$out"
  datasets gcide
  for seed in 0 1; do
    "$bundle/quartet2" train --config configs/gcide-30m.toml --device cuda --method.scheme=quartet2 \
      --train.steps="$steps" --train.seed="$seed" --out.dir="runs/native-s$seed" --overwrite >"$out/native-s$seed.log" 2>&1
    cp runs/native-s$seed/metrics.jsonl "$out/native-s$seed.metrics.jsonl"
    QUARTET2_LIBRARY="$bundle/lib/libquartet2_c.so" PYTHONPATH=python python3 scripts/torch_convert_train.py \
      --data data/gcide --steps "$steps" --seed "$seed" --out "$out/torch-s$seed.metrics.jsonl" 2>"$out/torch-s$seed.log"
    specs+=("native-s$seed=$out/native-s$seed.metrics.jsonl" "torch-s$seed=$out/torch-s$seed.metrics.jsonl")
  done
  python3 scripts/torch_convert_train.py --compare "${specs[@]}" | tee "$out/compare.txt"
}

case "${1:-}" in
  build)
    shift
    build "$@"
    ;;
  bundle)
    shift
    bundle "$@"
    ;;
  run) run ;;
  tests) gpu_tests ;;
  sizes)
    shift
    sizes "$@"
    ;;
  hf-check) hf_check ;;
  capi-python) capi_python ;;
  torch-linear) torch_linear ;;
  torch-step)
    shift
    torch_step "$@"
    ;;
  convert-train)
    shift
    convert_train "$@"
    ;;
  train)
    shift
    train "$@"
    ;;
  profile)
    shift
    profile "$@"
    ;;
  insts) insts ;;
  trace)
    shift
    trace "$@"
    ;;
  memtrace)
    shift
    memtrace "$@"
    ;;
  torch-linear-profile) torch_linear_profile ;;
  compare)
    shift
    interleave layer "$@"
    ;;
  compare-step)
    shift
    interleave step "$@"
    ;;
  verify)
    shift
    verify "$@"
    ;;
  *)
    echo "usage: $0 build [DATASET...] | run | tests | sizes [PRESET...] | hf-check | capi-python | torch-linear | torch-step [PRESET...] | convert-train [STEPS] | train CONFIG [SCHEME...] | profile [KERNEL...] | insts | trace [SHAPE] | memtrace PRESET SCHEME BATCH | torch-linear-profile | compare DIR... | compare-step DIR... | verify BEFORE_DIR CONFIG REFERENCE_DIR | bundle DIR EXE..." >&2
    exit 2
    ;;
esac
