#!/usr/bin/env bash
# scripts/plot.sh on two small metrics files: both PNGs are written and are PNG files.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for run in a b; do
  mkdir -p "$tmp/$run"
  for step in 1 2 3; do
    printf '{"elapsed_s":1.0,"step":%d,"tokens":%d,"val_bpb":%s,"val_loss":%s}\n' \
      "$step" $((step * 1000000)) "2.$((5 - step))" "4.$((5 - step))" >>"$tmp/$run/metrics.jsonl"
    printf '{"loss":3.0,"step":%d}\n' "$step" >>"$tmp/$run/metrics.jsonl"
  done
done
"$root/scripts/plot.sh" "$tmp/out" "test" "$tmp/a" "$tmp/b/metrics.jsonl"
for what in loss bpb; do
  [[ "$(head -c 4 "$tmp/out-$what.png" | tail -c 3)" == "PNG" ]] || { echo "out-$what.png is not a PNG" >&2; exit 1; }
done
# A run without validation records is an error, not an empty plot.
printf '{"loss":3.0,"step":1}\n' >"$tmp/c.metrics.jsonl"
if "$root/scripts/plot.sh" "$tmp/bad" "test" "$tmp/c.metrics.jsonl" 2>/dev/null; then
  echo "plot.sh accepted a run without validation records" >&2
  exit 1
fi
echo "plot_test: ok"
