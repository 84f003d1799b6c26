#!/usr/bin/env bash
# Validation curves of training runs as PNG (gnuplot, from Debian's gnuplot-nox).
#
#   scripts/plot.sh OUT_PREFIX TITLE RUN_DIR_OR_METRICS...
#
# Each argument is a run directory (holding metrics.jsonl) or a metrics.jsonl file; its label
# is the directory's or file's name. Writes OUT_PREFIX-loss.png (validation loss against
# training tokens) and OUT_PREFIX-bpb.png (validation bits per byte). YRANGE=LO:HI (for example
# 1.5:2) zooms the loss plot onto the end of training, where the recipes differ.
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: $0 OUT_PREFIX TITLE RUN_DIR_OR_METRICS..." >&2; exit 2; }
command -v gnuplot >/dev/null || { echo "plot: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
out="$1" title="$2"
shift 2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

field() { sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p"; }
plots_loss=() plots_bpb=()
for run in "$@"; do
  metrics="$run"
  [[ -d "$run" ]] && metrics="$run/metrics.jsonl"
  [[ -f "$metrics" ]] || { echo "plot: $metrics not found" >&2; exit 1; }
  label=$(basename "${run%/metrics.jsonl}")
  label=${label%.metrics.jsonl}
  grep '"val_loss"' "$metrics" >"$tmp/lines"
  paste <(field tokens <"$tmp/lines") <(field val_loss <"$tmp/lines") <(field val_bpb <"$tmp/lines") >"$tmp/$label.dat"
  [[ -s "$tmp/$label.dat" ]] || { echo "plot: no validation records in $metrics" >&2; exit 1; }
  plots_loss+=("'$tmp/$label.dat' using (\$1/1e6):2 with linespoints title '$label'")
  plots_bpb+=("'$tmp/$label.dat' using (\$1/1e6):3 with linespoints title '$label'")
done

join() { local IFS=,; echo "$*"; }
for what in loss bpb; do
  if [[ $what == loss ]]; then ylabel="validation loss (nats/token)"; series=$(join "${plots_loss[@]}"); else
    ylabel="validation bits per byte"; series=$(join "${plots_bpb[@]}"); fi
  gnuplot <<GP
set terminal pngcairo size 900,600 noenhanced
set output '$out-$what.png'
set title '$title'
set xlabel 'training tokens (millions)'
set ylabel '$ylabel'
set grid
set key top right
$([[ $what == loss && -n ${YRANGE:-} ]] && echo "set yrange [${YRANGE}]")
plot $series
GP
  echo "plot: wrote $out-$what.png"
done
