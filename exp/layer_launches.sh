#!/bin/bash
# Nsight Compute per-launch metrics (time, DRAM traffic, instructions, issue, occupancy) of the
# quantization kernels in the first 24 matching launches of `quartet2 bench layer` (shape
# 8192x2048x2048 first). Run on the GPU machine from the repository root with gpu-bundle/.
set -u
source scripts/gpu-env.sh
out=${OUT:-/tmp/out}; mkdir -p $out
m=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum,sm__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size,lts__t_sectors_srcunit_tex_op_write.sum
ncu --clock-control none --kernel-name-base demangled -k "regex:eden_scales_kernel<\(bool\)1>|ms_eden_transposed|ms_eden_rows|rtn_1x16_kernel<\(int\)1>|requant|amax_kernel" -s 0 -c 24 \
  --metrics $m --csv --page raw gpu-bundle/quartet2 bench layer > $out/p4.csv 2>&1
python3 - $out/p4.csv <<'PY'
import csv,sys
rows=[r for r in csv.reader(open(sys.argv[1])) if len(r)>10]
h=rows[0]; idx={k:i for i,k in enumerate(h)}
def g(r,k):
    return r[idx[k]].replace(',','') if k in idx else '0'
for r in rows[2:]:
    name=g(r,'Kernel Name').split('(')[0].split('::')[-1][:28]
    print(f"{name:28s} grid {g(r,'launch__grid_size'):>6s} ns {g(r,'gpu__time_duration.sum'):>8s} dram% {g(r,'dram__throughput.avg.pct_of_peak_sustained_elapsed'):>6s} rdMB {float(g(r,'dram__bytes_read.sum'))/1e6:7.1f} wrMB {float(g(r,'dram__bytes_write.sum'))/1e6:7.1f} inst {float(g(r,'sm__inst_executed.sum'))/1e6:7.2f}M issue% {g(r,'smsp__issue_active.avg.pct_of_peak_sustained_active'):>6s} occ% {g(r,'sm__warps_active.avg.pct_of_peak_sustained_active'):>6s} l2wr {g(r,'lts__t_sectors_srcunit_tex_op_write.sum')}")
PY
