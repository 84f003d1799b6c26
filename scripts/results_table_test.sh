#!/usr/bin/env bash
# scripts/results_table.py on synthetic runs whose gaps are known: paired gaps per seed, their
# means, the relative reduction like for like, and the last-10% training loss.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# run NAME SEED VAL TRAIN: 20 training steps (the last 2 at TRAIN, the rest at 9), one validation.
run() {
  local f="$tmp/$1.seed$2.metrics.jsonl" s
  for s in $(seq 1 20); do
    printf '{"loss":%s,"step":%d,"tokens":%d}\n' "$([[ $s -gt 18 ]] && echo "$4" || echo 9)" "$s" $((s * 100)) >>"$f"
  done
  printf '{"step":20,"tokens":2000,"val_loss":%s,"val_bpb":1.0,"elapsed_s":5.0}\n' "$3" >>"$f"
}
run bf16 0 2.00 3.00; run bf16 1 2.10 3.10
run quartet2 0 2.01 3.02; run quartet2 1 2.13 3.12      # gaps .01, .03 -> mean .02; train .02
run nvidia 0 2.04 3.04; run nvidia 1 2.14 3.14          # gaps .04, .04 -> .04: 50% smaller
run sr 0 2.02 3.00; run sr 1 2.12 3.10                  # BF16-forward: against quartet2_bwd
run quartet2_bwd 0 2.01 3.00; run quartet2_bwd 1 2.11 3.10  # .01 against sr's .02: 50%
out=$(python3 "$root/scripts/results_table.py" "$tmp")
expect() { grep -qF -- "$1" <<<"$out" || { echo "results_table_test: missing '$1' in:" >&2; echo "$out" >&2; exit 1; }; }
expect "| quartet2 | 1 | 2.1300 | 1.0000 | +0.0300 (+1.43%) | 3.1200 | +0.0200 | 5 |"
expect "| quartet2 | NVFP4 | 2 | +0.0200 | +0.0100, +0.0300 | +0.0200 |  |"
expect "| nvidia | NVFP4 | 2 | +0.0400 | +0.0400, +0.0400 | +0.0400 | 50% (quartet2) |"
expect "| sr | BF16 | 2 | +0.0200 | +0.0200, +0.0200 | +0.0000 | 50% (quartet2_bwd) |"
# Quartiles (inclusive) of the two gaps .01 and .03, their sample deviation; bf16 spreads over .10.
expect "| quartet2 | 2 | +0.0100 | +0.0150 | +0.0200 | +0.0250 | +0.0300 | 0.0141 |"
expect "bf16's own final validation loss spreads over 0.1000 between its 2 seeds."
# A directory without baseline runs is an error.
if python3 "$root/scripts/results_table.py" "$tmp" fp32 >/dev/null 2>&1; then
  echo "results_table_test: accepted a missing baseline" >&2
  exit 1
fi
echo "results_table_test: ok"
