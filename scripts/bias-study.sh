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
# rotation rounds (--hadamard-rounds 2), each labelled so.
# One JSON object per line: {"step", "linear", "scheme", "result"} with scheme "chunks" for the
# chunk statistics.
set -euo pipefail
[[ $# -ge 2 && $# -le 4 ]] || { echo "usage: $0 QUARTET2_BINARY RUN_DIR [DRAWS] [ROWS]" >&2; exit 2; }
q2="$1" run="$2" draws="${3:-256}" rows="${4:-0}"
schemes=(${SCHEMES:-quartet2 sr nvidia})
[[ -d "$run/tensors" ]] || { echo "bias-study: $run/tensors not found (train with --log.dump_every=N)" >&2; exit 1; }
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
# grad-error's JSON on one line; its progress on stderr is shown only when it fails.
result() {
  "$q2" grad-error --load "$lin_dir" --rows "$rows" --json "$@" 2>"$tmp" | tr -d '\n ' ||
    { cat "$tmp" >&2; echo "bias-study: grad-error $* failed on $lin_dir" >&2; return 1; }
}
for step_dir in "$run"/tensors/step*; do
  step="${step_dir##*step}"
  for lin_dir in "$step_dir"/*; do
    lin=$(basename "$lin_dir")
    echo "bias-study: step $step $lin" >&2
    r=$(result --chunk-stats)
    printf '{"step":%s,"linear":"%s","scheme":"chunks","result":%s}\n' "$step" "$lin" "$r"
    for scheme in "${schemes[@]}"; do
      base="${scheme%@*}"
      base="${base%+rht2}"
      args=(--scheme "$base")
      [[ "$scheme" == *@* ]] && args+=(--eden-fallback "${scheme#*@}")
      [[ "$scheme" == *+rht2 ]] && args+=(--hadamard-rounds 2)
      r=$(result "${args[@]}" --draws "$draws" --curve)
      printf '{"step":%s,"linear":"%s","scheme":"%s","result":%s}\n' "$step" "$lin" "$scheme" "$r"
    done
  done
done
