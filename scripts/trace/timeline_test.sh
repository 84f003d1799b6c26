#!/usr/bin/env bash
# scripts/trace/timeline.py on a synthetic trace of bench layer's sequence (5 warm-ups per
# scheme, 20 interleaved single steps, 20 rounds of 10 back to back) whose steps are known:
# bf16 = 3 GEMMs of 100 us; quartet2 = two streams (X's 14 + 35 us on stream 7 while W's 8 us
# runs on stream 13, a 30 us side kernel under the second GEMM), GEMMs of 101 us; nvidia =
# GEMMs of 102 us. Gaps of 0.5 us between kernels; launches 3 us before each start.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/trace.csv" <<'PY'
import sys
out = open(sys.argv[1], "w")
t, corr = 10**6, 0
def k(name, stream, dur, advance=True):
    global t, corr
    corr += 1
    out.write(f"R,cudaLaunchKernel,0,{t - 3000},{t - 2000},{corr},0\n")
    out.write(f'K,"{name}",{stream},{t},{t + dur},{corr},132\n')
    if advance:
        t += dur + 500
def step(scheme):
    if scheme == 1:
        k("amax_kernel<float>", 13, 8000, False)
        k("amax_kernel<__nv_bfloat16>", 7, 14000)
        k("rtn_1x16_kernel<1, __nv_bfloat16>", 7, 35000)
    for g in range(3):
        if scheme == 1 and g == 1:
            k("requant_kernel", 13, 30000, False)
        k("sm90_xmma_gemm_bf16bf16_bf16f32", 7, 100000 + 1000 * scheme)
for shape in range(2):
    for s in range(15):
        step(s // 5)
    for r in range(20):
        for i in range(3):
            step(i)
    for r in range(20):
        for i in range(3):
            for j in range(10):
                step(i)
PY
for shape in 0 1; do
  out=$(python3 "$root/scripts/trace/timeline.py" "$tmp/trace.csv" $shape)
  expect() { grep -qF -- "$1" <<<"$out" || { echo "timeline_test: missing '$1' in:" >&2; echo "$out" >&2; exit 1; }; }
  expect "bf16      single       step span median    301.0 us"
  expect "quartet2  back to back step span median    354.0 us"
  expect "nvidia    single       step span median    307.0 us"
  expect "GEMMs 303.0 us of 354.0; their stream busy 352.0 us (idle 2.0); other streams busy 38.0 us, 30.0 of it under a GEMM"
  expect "    13     0.0     8.0    8.0      3.0  amax_kernel<float>"
  expect "     7    14.5    49.5   35.0      3.0  rtn_1x16_kernel<1, __nv_bfloat16>"
done
echo "timeline_test: ok"
