#!/usr/bin/env bash
# Where does the mean of many backward draws stop converging (issue 24)? On the tensors a
# training run dumped (log.dump_every, with log.dump_layers = "all" for every layer), for each
# dumped step and linear: `quartet2 grad-error --curve` per scheme (the error of the mean of the
# first 1, 2, 4, ... DRAWS draws, which falls like 1/draws while the backward is unbiased) and
# `quartet2 grad-error --chunk-stats` (the backward operands' Hadamard chunks: outlier share,
# kurtosis, EDEN factors), which explain a plateau.
#
#   scripts/bias-study.sh QUARTET2_BINARY RUN_DIR [DRAWS] [ROWS] > study.jsonl
#   scripts/bias_table.py study.jsonl --plot OUT_PREFIX
#
# DRAWS (default 256) backward draws per scheme; ROWS (default 0: all) keeps the first tokens of
# each dump (a multiple of 128). SCHEMES overrides the schemes (default "quartet2 sr nvidia"); an
# entry SCHEME@TAU runs SCHEME with MS-EDEN's fallback (--eden-fallback TAU), SCHEME+rht2 with two
# rotation rounds (--hadamard-rounds 2), SCHEME+rht2+split also with the outlier split
# (--outlier-split $SPLIT_TAU, default 0.9), each labelled so.
# DEVICE (default cpu) is grad-error's --device: cuda draws on the GPU layer (the operands rounded
# to BF16 first; the chunk statistics stay on the CPU).
# JOBS (default 1) runs that many grad-error processes at once, one OpenMP thread each (a machine
# with many cores); the lines keep their order and come out as soon as those before them are
# done, so a study stopped part way keeps what it finished.
# One JSON object per line: {"step", "linear", "scheme", "result"} with scheme "chunks" for the
# chunk statistics.
set -euo pipefail
[[ $# -ge 2 && $# -le 4 ]] || { echo "usage: $0 QUARTET2_BINARY RUN_DIR [DRAWS] [ROWS]" >&2; exit 2; }
q2="$1" run="$2" draws="${3:-256}" rows="${4:-0}"
schemes=(${SCHEMES:-quartet2 sr nvidia})
[[ -d "$run/tensors" ]] || { echo "bias-study: $run/tensors not found (train with --log.dump_every=N)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
jobs=${JOBS:-1}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "bias-study: JOBS must be a positive integer, got '$jobs'" >&2; exit 2; }
((jobs > 1)) && export OMP_NUM_THREADS=1
# job N STEP LINEAR_DIR SCHEME ARGS...: grad-error's JSON, on one line, into $tmp/N.json; its
# progress on stderr is shown only when it fails.
job() {
  local n=$1 step=$2 lin_dir=$3 scheme=$4 r
  shift 4
  if ! r=$("$q2" grad-error --load "$lin_dir" --rows "$rows" --json "$@" 2>"$tmp/$n.err" | tr -d '\n '); then
    cat "$tmp/$n.err" >&2
    echo "bias-study: grad-error $* failed on $lin_dir" >&2
    return 1
  fi
  printf '{"step":%s,"linear":"%s","scheme":"%s","result":%s}\n' "$step" "$(basename "$lin_dir")" "$scheme" "$r" \
    >"$tmp/$n.part"
  mv "$tmp/$n.part" "$tmp/$n.json"
}
# Prints the finished lines that follow the last one printed.
next=0
flush() {
  while [[ -f "$tmp/$next.json" ]]; do
    cat "$tmp/$next.json"
    next=$((next + 1))
  done
}
n=0 running=0 failed=0
for step_dir in "$run"/tensors/step*; do
  step="${step_dir##*step}"
  for lin_dir in "$step_dir"/*; do
    echo "bias-study: step $step $(basename "$lin_dir")" >&2
    for scheme in chunks "${schemes[@]}"; do
      if [[ $scheme == chunks ]]; then
        args=(--chunk-stats)
      else
        base="${scheme%@*}"
        base="${base%+split}"
        base="${base%+rht2}"
        args=(--scheme "$base" --draws "$draws" --curve --device "${DEVICE:-cpu}")
        [[ "$scheme" == *@* ]] && args+=(--eden-fallback "${scheme#*@}")
        [[ "$scheme" == *+rht2 || "$scheme" == *+rht2+split ]] && args+=(--hadamard-rounds 2)
        [[ "$scheme" == *+split ]] && args+=(--outlier-split "${SPLIT_TAU:-0.9}")
      fi
      job "$n" "$step" "$lin_dir" "$scheme" "${args[@]}" &
      n=$((n + 1))
      if ((++running >= jobs)); then
        wait -n || failed=1
        ((running--))
        flush
      fi
    done
  done
done
while ((running > 0)); do
  wait -n || failed=1
  ((running--))
done
flush
((failed == 0)) || exit 1
