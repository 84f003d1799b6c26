#!/usr/bin/env bash
# scripts/trace/api.py on a synthetic trace: 4 launches of 5 us, 2 stream synchronizations of
# 300 us and 100 us, over 2 steps; kernel and memory rows must not count.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  for i in 1 2 3 4; do echo "R,cudaLaunchKernel,0,$((i * 1000000)),$((i * 1000000 + 5000)),$i,0"; done
  echo 'R,cudaStreamSynchronize,0,10000000,10300000,5,0'
  echo 'R,cudaStreamSynchronize,0,20000000,20100000,6,0'
  echo 'K,"k",7,1000000,9000000,1,132'
  echo 'M,alloc,7,100,100,0,1024,4096,0,0,0,""'
} >"$tmp/trace.csv"
out=$(python3 "$root/scripts/trace/api.py" "$tmp/trace.csv" 2)
expect() { grep -qF -- "$1" <<<"$out" || { echo "api_test: missing '$1' in:" >&2; echo "$out" >&2; exit 1; }; }
expect "CUDA runtime calls: 3.0 calls, 0.210 ms per step (of 2)"
expect "       1.0      0.200    200.00  cudaStreamSynchronize"
expect "       2.0      0.010      5.00  cudaLaunchKernel"
[[ $(grep -cE "^ +[0-9]" <<<"$out") -eq 2 ]] || { echo "api_test: expected two functions:" >&2; echo "$out" >&2; exit 1; }
echo "api_test: ok"
