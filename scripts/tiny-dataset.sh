#!/usr/bin/env bash
# Prepares a small dataset (vocabulary 300) from a made-up corpus, for script tests.
# Usage: scripts/tiny-dataset.sh QUARTET2_BINARY OUT_DIR
set -euo pipefail
q2=$1 out=$2
RANDOM=17
words=(the quick brown fox jumps over lazy dog quartet scale model gradient hadamard rounding unbiased tensor)
mkdir -p "$out"
for ((doc = 0; doc < 300; doc++)); do
  line=""
  for ((w = 0; w < 50; w++)); do line+="${words[RANDOM % 16]} "; done
  printf '%s.\n\n' "$line"
done >"$out/corpus.txt"
"$q2" prepare --corpus "$out/corpus.txt" --vocab 300 --out "$out" >"$out/prepare.log" 2>&1 || { cat "$out/prepare.log"; exit 1; }
