#!/usr/bin/env bash
# GPU kernel tests and bandwidth benchmark, built on a machine without a GPU and run on one.
#
#   scripts/device-test.sh build   (here: needs nvcc) configures and builds build-cuda with the
#                                  GPU tests and the quartet2 program, then bundles the two executables and
#                                  every shared library they need beyond glibc, libstdc++,
#                                  libgcc and the CUDA toolkit into gpu-bundle/ (git-ignored).
#   scripts/device-test.sh profile [KERNEL...]   (on the GPU machine) Nsight Compute headline
#                                  metrics of the quantization kernels.
#   scripts/device-test.sh bundle DIR EXE...   bundles other executables the same way.
#   scripts/device-test.sh run     (on the GPU machine, from the repository root, with
#                                  gpu-bundle/ carried along) runs the GPU tests (full log to
#                                  $OUT/gpu-tests.log when $OUT is set), 'quartet2 bench quant' (JSON to
#                                  $OUT/bench-quant.json) and prints a short summary table last.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bundle="$root/gpu-bundle"

build() {
  [[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
  command -v nvcc >/dev/null || { echo "device-test: nvcc not found (install the CUDA toolkit)" >&2; exit 1; }
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON
  cmake --build build-cuda -j"$(nproc)" --target quartet2_gpu_tests quartet2
  bundle "$bundle" build-cuda/src/cuda/quartet2_gpu_tests build-cuda/quartet2
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

run() {
  [[ -x "$bundle/quartet2_gpu_tests" ]] || { echo "device-test: $bundle missing; run 'scripts/device-test.sh build' first" >&2; exit 1; }
  export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local out="${OUT:-$root/gpu-bundle/out}"
  mkdir -p "$out"
  nvidia-smi -L || true

  local tests_rc=0
  "$bundle/quartet2_gpu_tests" --gtest_color=no >"$out/gpu-tests.log" 2>&1 || tests_rc=$?
  grep -E '^\[( +OK|  FAILED|  SKIPPED|  PASSED) ' "$out/gpu-tests.log" | tail -n 40 || true

  local bench_rc=0
  "$bundle/quartet2" bench quant --json >"$out/bench-quant.json" 2>"$out/bench-quant.txt" || bench_rc=$?

  echo
  echo "==== summary ===="
  echo "GPU tests: exit $tests_rc (log: $out/gpu-tests.log):" \
       "$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?' "$out/gpu-tests.log" | tr '\n' ' ')"
  echo "benchmark: exit $bench_rc (JSON: $out/bench-quant.json)"
  cat "$out/bench-quant.txt"
  [[ $tests_rc -eq 0 && $bench_rc -eq 0 ]]
}

# Nsight Compute profile of each quantization kernel (one launch each, clocks left alone):
# full reports to $OUT/ncu-<kernel>.txt, the headline metrics printed.
profile() {
  export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
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

case "${1:-}" in
  build) build ;;
  bundle)
    shift
    bundle "$@"
    ;;
  run) run ;;
  profile)
    shift
    profile "$@"
    ;;
  *)
    echo "usage: $0 build | run | profile [KERNEL...] | bundle DIR EXE..." >&2
    exit 2
    ;;
esac
