#!/usr/bin/env bash
# compare_losses.py: identical runs pass, one changed value or a missing step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/a" "$tmp/b"
for i in 1 2 3; do echo "{\"step\":$i,\"loss\":$((10 - i)).5,\"grad_norm\":1.25}"; done >"$tmp/a/q.metrics.jsonl"
echo '{"step":3,"val_loss":6.75}' >>"$tmp/a/q.metrics.jsonl"
cp "$tmp/a/q.metrics.jsonl" "$tmp/b/"
scripts/compare_losses.py "$tmp/a" "$tmp/b" | grep -q "q: identical: 7 values over 3 steps"
sed -i 's/"val_loss":6.75/"val_loss":6.7500001/' "$tmp/b/q.metrics.jsonl"
if scripts/compare_losses.py "$tmp/a" "$tmp/b" >"$tmp/out"; then echo "a changed value passed" >&2; exit 1; fi
grep -q "first difference at step 3 val_loss" "$tmp/out"
cp "$tmp/a/q.metrics.jsonl" "$tmp/b/"
sed -i '2d' "$tmp/b/q.metrics.jsonl"
if scripts/compare_losses.py "$tmp/a" "$tmp/b" >/dev/null; then echo "a missing step passed" >&2; exit 1; fi
if scripts/compare_losses.py "$tmp/a" "$tmp/b" r >/dev/null; then echo "a missing scheme passed" >&2; exit 1; fi
echo "compare_losses: ok"
