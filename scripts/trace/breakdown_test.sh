#!/usr/bin/env bash
# scripts/trace/breakdown.py on a synthetic trace of two bench step runs (1 warm-up + 3 timed
# steps each) whose numbers are worked out by hand. Every step (times in us) runs this chain
# on stream 7, 1 us apart except where noted:
#   memset 2 | embedding_forward 3 (mangled) | rmsnorm_forward 4 | nvjet GEMM 50 (with
#   amax_kernel 5 on stream 13 starting with it) | rope 2 | rope 2 | attention_forward 20 |
#   sm90_xmma GEMM 30 | add_bf16 1 | rtn_1x16 6 | swiglu_forward 3 | cross_entropy 10 |
#   sum_one_block<float> 1 (mangled) | memcpy 1, then 20 idle | scale_bf16 1 |
#   cutlass Kernel2 GEMM 40 | attention_dq 15 | attention_dkv 25 | cub radix sort 2 |
#   embedding_backward 3 | sum_squares_partial 2 | sum_one_block<double> 1 (mangled) |
#   memcpy 1, then 10 idle | mystery_kernel 4 | adamw 2 | adamw 2 | adamw 2 (mangled)
# so per step: gemm 50+30+40 = 120 (3 launches), attention 20+15+25 = 60 (3), norm 4 (1),
# elementwise 3+2+2+1+3+2+3 = 16 (7), quantizer 5+6 = 11 (2), loss 10+1+1 = 12 (3),
# optimizer 2+1+3*2 = 9 (5), other 4 (1), memset/copy 2+1+1 = 4 (3); 240 in all, 235 of it
# busy (amax lies under the GEMM: overlap 5); the 26 spaces inside the chain are 24*1+20+10
# = 54 idle. The step's window begins at the previous step's last AdamW end, a lead-in of g
# us before its memset: span = g + 235 + 54 = g + 289, idle = g + 54.
# Run 1: timed g = 30, 10, 50 -> spans 319, 299, 339; median 319 (timed step 1): gemm 120/319
# = 37.6%, idle 84 = 26.3% in 27 gaps (largest 30), overlap 5 = 1.6%.
# Run 2 adds ms_eden_rows_kernel 7 on stream 13 under the cutlass GEMM: quantizer 18 (3),
# overlap 12, spans unchanged; g = 60, 40, 20 -> 349, 329, 309; median 329 (timed step 2):
# gemm 36.5%, quantizer 5.5%, idle 94 = 28.6%, overlap 12 = 3.6%.
# Each run's warm-up step starts with a 500 us model upload (memcpy); a memcpy after the last
# AdamW belongs to no step.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/trace.csv" <<'PY'
import sys
out = open(sys.argv[1], "w")
t, corr = 10**6, 0
CUTLASS = ("void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>"
           "(cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8::Params)")
RADIX = ("void cub::CUB_200200_900_NS::DeviceRadixSortOnesweepKernel<cub::CUB_200200_900_NS::DeviceRadixSortPolicy"
         "<unsigned int, unsigned int, unsigned long>::Policy900, false, unsigned int, unsigned int, unsigned long, "
         "int, int>(int*, int*, unsigned long*, unsigned long const*, unsigned int*, unsigned int const*, "
         "unsigned int*, unsigned int const*, int, int, int)")
ADAMW = "_ZN2q24cuda3ops12_GLOBAL__N_112adamw_kernelEPfPKfS3_S3_lNS2_11AdamWConstsE"
# (kind, name, us, idle us after)
CHAIN = [
    ("S", "memset", 2, 1),
    ("K", "_ZN2q24cuda3ops12_GLOBAL__N_124embedding_forward_kernelEPKfjlPKjP13__nv_bfloat16Py", 3, 1),
    ("K", "void q2::cuda::ops::(anonymous namespace)::rmsnorm_forward_kernel<8>(__nv_bfloat16 const*, "
          "float const*, long, long, double, __nv_bfloat16*, float*)", 4, 1),
    ("K", "nvjet_tst_128x256_64x4_1x2_h_bz_coopB_TNT", 50, 1),
    ("K", "q2::cuda::ops::(anonymous namespace)::rope_kernel(__nv_bfloat16*, long, long, long, int, int, long, "
          "q2::cuda::ops::(anonymous namespace)::InvFreq, int)", 2, 1),
    ("K", "q2::cuda::ops::(anonymous namespace)::rope_kernel(__nv_bfloat16*, long, long, long, int, int, long, "
          "q2::cuda::ops::(anonymous namespace)::InvFreq, int)", 2, 1),
    ("K", "void q2::cuda::ops::(anonymous namespace)::attention_forward_kernel<64>(__nv_bfloat16 const*, "
          "__nv_bfloat16*, float*, int, int, float)", 20, 1),
    ("K", "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_cublas", 30, 1),
    ("K", "q2::cuda::ops::(anonymous namespace)::add_bf16_kernel(__nv_bfloat16*, __nv_bfloat16 const*, long)", 1, 1),
    ("K", "void q2::cuda::detail::rtn_1x16_kernel<(int)0, __nv_bfloat16>(__nv_bfloat16 const*, long, "
          "float const*, float, float, q2::cuda::detail::Out)", 6, 1),
    ("K", "q2::cuda::ops::(anonymous namespace)::swiglu_forward_kernel(__nv_bfloat16 const*, long, long, "
          "__nv_bfloat16*)", 3, 1),
    ("K", "void q2::cuda::ops::(anonymous namespace)::cross_entropy_kernel<8>(__nv_bfloat16 const*, long, "
          "unsigned int const*, __nv_bfloat16*, float, float*, unsigned int*)", 10, 1),
    ("K", "_ZN2q24cuda3ops6detail20sum_one_block_kernelIfEEvPKT_lPd", 1, 1),
    ("C", "memcpy", 1, 20),
    ("K", "q2::cuda::ops::(anonymous namespace)::scale_bf16_kernel(__nv_bfloat16*, long, float)", 1, 1),
    ("K", CUTLASS, 40, 1),
    ("K", "void q2::cuda::ops::(anonymous namespace)::attention_dq_kernel<64>(__nv_bfloat16 const*)", 15, 1),
    ("K", "void q2::cuda::ops::(anonymous namespace)::attention_dkv_kernel<64>(__nv_bfloat16 const*)", 25, 1),
    ("K", RADIX, 2, 1),
    ("K", "q2::cuda::ops::(anonymous namespace)::embedding_backward_kernel(__nv_bfloat16 const*, "
          "unsigned int const*, unsigned int const*, long, long, float*, unsigned long long*)", 3, 1),
    ("K", "q2::cuda::ops::(anonymous namespace)::sum_squares_partial_kernel(float const*, long, double*)", 2, 1),
    ("K", "_ZN2q24cuda3ops6detail20sum_one_block_kernelIdEEvPKT_lPd", 1, 1),
    ("C", "memcpy", 1, 10),
    ("K", "_Z14mystery_kernelPf", 4, 1),
    ("K", ADAMW, 2, 1),
    ("K", ADAMW, 2, 1),
    ("K", ADAMW, 2, 0),
]
AMAX = "void q2::cuda::detail::amax_kernel<__nv_bfloat16>(__nv_bfloat16 const*, long, q2::cuda::detail::FlagSet)"
EDEN = "_ZN2q24cuda6detail19ms_eden_rows_kernelEPK5uint4l"

def act(kind, name, stream, start, dur):
    global corr
    corr += 1
    s, e = start * 1000, (start + dur) * 1000
    if kind == "K":
        out.write(f"R,cudaLaunchKernel,0,{s - 3000},{s - 2000},{corr},0\n")
    out.write(f'{kind},"{name}",{stream},{s},{e},{corr},{132 if kind == "K" else 0}\n')

def step(lead, eden):
    global t
    t += lead
    for kind, name, dur, after in CHAIN:
        if name.startswith("nvjet"):
            act("K", AMAX, 13, t, 5)
        if eden and name == CUTLASS:
            act("K", EDEN, 13, t + 10, 7)
        act(kind, name, 7, t, dur)
        t += dur + after

for leads, eden in (([30, 10, 50], False), ([60, 40, 20], True)):
    t += 1000
    act("C", "memcpy", 7, t, 500)  # the model's upload, in the warm-up step
    t += 500
    step(100, eden)
    for g in leads:
        step(g, eden)
act("C", "memcpy", 7, t + 50, 3)  # after the last AdamW: no step
PY
bd="$root/scripts/trace/breakdown.py"
out=$(python3 "$bd" "$tmp/trace.csv" --warmup 1 --steps 3 --labels 100m/bf16,100m/quartet2)
expect() { grep -qF -- "$1" <<<"$out" || { echo "breakdown_test: missing '$1' in:" >&2; echo "$out" >&2; exit 1; }; }
expect "== 100m/bf16: 3 timed steps after 1 warm-up, 3 AdamW launches a step; step ms median 0.319, mean 0.319, min 0.299, max 0.339"
expect "median step (timed step 1 of 3): 0.319 ms"
expect "gemm             0.120   37.6%        3"
expect "attention        0.060   18.8%        3"
expect "norm             0.004    1.3%        1"
expect "elementwise      0.016    5.0%        7"
expect "quantizer        0.011    3.4%        2"
expect "loss             0.012    3.8%        3"
expect "optimizer        0.009    2.8%        5"
expect "other            0.004    1.3%        1"
expect "memset/copy      0.004    1.3%        3"
expect "idle             0.084   26.3%           27 gaps, largest 0.030 ms"
expect "overlap         -0.005   -1.6%"
expect "    0.050   15.7%        1  gemm         nvjet_tst_128x256_64x4_1x2_h_bz_coopB_TNT"
expect "    0.040   12.5%        1  gemm         Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>"
expect "    0.006    1.9%        3  optimizer    adamw_kernel"
expect "    0.006    1.9%        1  quantizer    rtn_1x16_kernel<(int)0, __nv_bfloat16>"
expect "    0.005    1.6%        1  quantizer    amax_kernel<__nv_bfloat16>"
expect "== 100m/quartet2: 3 timed steps after 1 warm-up, 3 AdamW launches a step; step ms median 0.329, mean 0.329, min 0.309, max 0.349"
expect "median step (timed step 2 of 3): 0.329 ms"
expect "gemm             0.120   36.5%        3"
expect "quantizer        0.018    5.5%        3"
expect "idle             0.094   28.6%           27 gaps, largest 0.040 ms"
expect "overlap         -0.012   -3.6%"
[[ $(grep -c "^top 10 kernels" <<<"$out") == 2 ]] || { echo "breakdown_test: expected two top-10 lists" >&2; exit 1; }

# JSON: the same numbers, and categories + idle - overlap = step in each run.
python3 "$bd" "$tmp/trace.csv" --warmup 1 --steps 3 --json >"$tmp/b.json"
python3 - "$tmp/b.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
runs = j["runs"]
assert [r["label"] for r in runs] == ["run 1", "run 2"], runs
def close(a, b):
    assert abs(a - b) < 1e-9, (a, b)
for r, spans, med, quant, overlap in ((runs[0], [0.319, 0.299, 0.339], 0.319, 0.011, 0.005),
                                      (runs[1], [0.349, 0.329, 0.309], 0.329, 0.018, 0.012)):
    for a, b in zip(r["timed_step_ms"], spans):
        close(a, b)
    m = r["median_step"]
    close(m["step_ms"], med)
    c = m["categories"]
    for k, v in {"gemm": 0.120, "attention": 0.060, "norm": 0.004, "elementwise": 0.016, "quantizer": quant,
                 "loss": 0.012, "optimizer": 0.009, "other": 0.004, "memset/copy": 0.004}.items():
        close(c[k]["ms"], v)
    close(m["overlap_ms"], overlap)
    close(m["idle_ms"], med - 0.235)
    close(sum(v["ms"] for v in c.values()) + m["idle_ms"] - m["overlap_ms"], m["step_ms"])
    close(sum(v["pct"] for v in c.values()) + m["idle_pct"] - m["overlap_pct"], 100.0)
    assert len(m["top_kernels"]) == 10, m["top_kernels"]
    assert m["top_kernels"][0]["name"] == "nvjet_tst_128x256_64x4_1x2_h_bz_coopB_TNT"
assert any(k["name"] == "ms_eden_rows_kernel" and k["category"] == "quantizer"
           for k in runs[1]["median_step"]["top_kernels"]), runs[1]["median_step"]["top_kernels"]
PY

# A step count that does not fit the runs is an error.
if python3 "$bd" "$tmp/trace.csv" --warmup 1 --steps 4 >"$tmp/err.txt" 2>&1; then
  echo "breakdown_test: 8 steps accepted as runs of 5" >&2
  exit 1
fi
grep -qF "8 steps found" "$tmp/err.txt" || { echo "breakdown_test: unclear error:" >&2; cat "$tmp/err.txt" >&2; exit 1; }
echo "breakdown_test: ok"
