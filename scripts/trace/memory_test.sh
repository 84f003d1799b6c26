#!/usr/bin/env bash
# scripts/trace/memory.py on a synthetic trace whose memory is known. Outside the pool: 1 GiB
# from cuBLASLt and 0.5 GiB from our library live together (the peak, 1.5 GiB), then the 0.5 GiB
# is freed and 0.25 GiB from cuBLAS comes (1.25 GiB). Pool 0: A 1 GiB (the pool grows 0 -> 2
# GiB), B 0.5 GiB, A freed, C 1.5 GiB after the backward kernel's launch, which A's hole
# cannot hold (2 -> 3.5 GiB): held at most 2 GiB (B + C), slack 1.5 GiB. Pool 1, between them:
# D 0.25 GiB (0 -> 0.5 GiB), freed; E 0.25 GiB reuses it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
g=$((1 << 30))
m() {  # alloc|free time bytes address pool_size utilized pool async source
  echo "M,$1,7,$2,$2,0,$3,$4,$5,$6,$7,$8,\"$9\""
}
{
  echo 'R,cudaLaunchKernel,0,1000,1100,1,0'
  echo 'K,"forward_kernel(float*)",7,1200,1900,1,132'
  echo 'R,cudaLaunchKernel,0,5000,5100,2,0'
  echo 'K,"backward_kernel(float*)",7,5200,5900,2,132'
  m alloc 100 $g 4096 0 0 0 0 /usr/lib/libcublasLt.so.13
  m alloc 200 $((g / 2)) 8192 0 0 0 0 /opt/libquartet2_c.so
  m free 300 $((g / 2)) 8192 0 0 0 0 /opt/libquartet2_c.so
  m alloc 400 $((g / 4)) 12288 0 0 0 0 /usr/lib/libcublas.so.13
  m alloc 900 $g 100000 $((2 * g)) $g 77 1 /opt/libquartet2_c.so
  m alloc 1000 $((g / 4)) 900000 $((g / 2)) $((g / 4)) 99 1 /opt/libquartet2_c.so
  m alloc 2000 $((g / 2)) 200000 $((2 * g)) $((3 * g / 2)) 77 1 /opt/libquartet2_c.so
  m free 2500 $((g / 4)) 900000 $((g / 2)) 0 99 1 /opt/libquartet2_c.so
  m free 3000 $g 100000 $((2 * g)) $((g / 2)) 77 1 /opt/libquartet2_c.so
  m alloc 3500 $((g / 4)) 900000 $((g / 2)) $((g / 4)) 99 1 /opt/libquartet2_c.so
  m alloc 6000 $((3 * g / 2)) 300000 $((7 * g / 2)) $((2 * g)) 77 1 /opt/libquartet2_c.so
} >"$tmp/trace.csv"
out=$(python3 "$root/scripts/trace/memory.py" "$tmp/trace.csv")
expect() { grep -qF -- "$1" <<<"$out" || { echo "memory_test: missing '$1' in:" >&2; echo "$out" >&2; exit 1; }; }
expect "memory outside the pools at its peak: 1.500 GiB"
expect "     1.000 GiB  /usr/lib/libcublasLt.so.13"
expect "     0.500 GiB  /opt/libquartet2_c.so"
expect "pool 0: largest size 3.500 GiB, its allocations held at most 2.000 GiB, slack 1.500 GiB"
expect "pool 1: largest size 0.500 GiB, its allocations held at most 0.250 GiB, slack 0.250 GiB"
expect "pool 0 growths (2;"
expect "pool 1 growths (1;"
expect "request    1024.0 MiB  pool   0.000 ->   2.000 GiB  held   1.000 GiB  after (none yet)"
expect "request    1536.0 MiB  pool   2.000 ->   3.500 GiB  held   2.000 GiB  after backward_kernel"
if grep -qF "libcublas.so.13" <<<"$out"; then
  echo "memory_test: cuBLAS's allocation came after the peak but is listed:" >&2; echo "$out" >&2; exit 1
fi
echo "memory_test: ok"
