#!/usr/bin/env bash
# Gradient and forward errors of every NVFP4 scheme on real tensors dumped by a training run
# (log.dump_every): for each dumped step and linear, `quartet2 grad-error --load` per scheme.
#
#   scripts/real-grad-error.sh QUARTET2_BINARY RUN_DIR [ROWS] [DRAWS]
#
# Prints one JSON object per (step, linear, scheme) line: {"step", "linear", "scheme", "result"}.
# ROWS (default 2048) keeps the first tokens of each dump, DRAWS (default 8) backward draws;
# SCHEMES overrides the schemes (default "quartet2 quartet2_no46 nvidia sr tetrajet2").
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 QUARTET2_BINARY RUN_DIR [ROWS] [DRAWS]" >&2; exit 2; }
q2="$1" run="$2" rows="${3:-2048}" draws="${4:-8}"
[[ -d "$run/tensors" ]] || { echo "real-grad-error: $run/tensors not found (train with --log.dump_every=N)" >&2; exit 1; }
for step_dir in "$run"/tensors/step*; do
  for lin_dir in "$step_dir"/*; do
    for scheme in ${SCHEMES:-quartet2 quartet2_no46 nvidia sr tetrajet2}; do
      result=$("$q2" grad-error --load "$lin_dir" --rows "$rows" --draws "$draws" --scheme "$scheme" --json 2>/dev/null |
        tr -d '\n ')
      printf '{"step":%s,"linear":"%s","scheme":"%s","result":%s}\n' "${step_dir##*step}" "$(basename "$lin_dir")" \
        "$scheme" "$result"
    done
  done
done
