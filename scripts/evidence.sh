#!/usr/bin/env bash
# The issue 8 evidence runs of docs/RESULTS.md, on the GPU machine (from the repository root,
# carrying gpu-bundle/ from 'scripts/device-test.sh build', data/raw/ and data/mix/tokenizer.model).
#
#   scripts/evidence.sh data                 data/big from the raw text under data/raw (gcide and
#                                            the Linux sources), with data/mix's tokenizer so every
#                                            dataset shares one vocabulary; skipped when present.
#   scripts/evidence.sh probe                30m training throughput at batch 32 and 128, and of
#                                            two processes sharing the GPU.
#   scripts/evidence.sh train SEEDS SCHEME... configs/big-30m.toml (or $CONFIG) per scheme and
#                                            seed (SEEDS: 3, 0-7 or 0,2,5) with train.seed; $PAR
#                                            runs at once (default 1); log and
#                                            metrics to $OUT/<scheme>.seed<SEED>.{log,metrics.jsonl}.
#                                            A variant: $TRAIN_ARGS (extra --section.key=value
#                                            overrides) under the name <scheme>-$TAG, e.g. TAG=ends
#                                            TRAIN_ARGS="--method.bf16_first_layers=1
#                                            --method.bf16_last_layers=1" or TAG=guard
#                                            TRAIN_ARGS=--train.spike_guard=3 (issue 25's controls).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/gpu-env.sh
source scripts/gpu-env.sh
out="${OUT:-$bundle/out}"
mkdir -p "$out"
q2="$bundle/quartet2"

data() {
  [[ -f data/big/meta.json ]] && { echo "evidence: data/big present"; return; }
  local t0=$SECONDS
  [[ -d data/raw/linux-source-6.1 ]] || tar -xJf data/raw/linux-text.tar.xz -C data/raw
  "$q2" prepare --corpus data/raw/gcide.dict.dz,data/raw/linux-source-6.1 --tokenizer data/mix/tokenizer.model \
    --val-fraction 0.01 --out data/big >"$out/prepare.log" 2>&1 || { tail -n 20 "$out/prepare.log"; exit 1; }
  echo "evidence: data/big in $((SECONDS - t0)) s: $(grep -o '"train_tokens": [0-9]*' data/big/meta.json)," \
    "$(grep -o '"val_tokens": [0-9]*' data/big/meta.json)"
}

probe() {
  local b
  for b in 32 128; do
    "$q2" bench step --presets 30m --schemes bf16 quartet2 --batch $b --seq 512 --vocab 8192 --steps 20 2>&1 | tail -n 3
  done
  echo "two processes at once, quartet2, batch 128:"
  "$q2" bench step --presets 30m --schemes quartet2 --batch 128 --seq 512 --vocab 8192 --steps 40 >"$out/probe-a.txt" 2>&1 &
  "$q2" bench step --presets 30m --schemes quartet2 --batch 128 --seq 512 --vocab 8192 --steps 40 >"$out/probe-b.txt" 2>&1
  wait
  tail -n 1 "$out/probe-a.txt" "$out/probe-b.txt"
}

train() {
  local seeds config="${CONFIG:-configs/big-30m.toml}" seed scheme running=0
  seeds=$(seed_list "$1")
  shift
  for seed in $seeds; do
    for scheme in "$@"; do
      (
        local recipe="$scheme${TAG:+-$TAG}" t0=$SECONDS
        local dir="runs/big-$recipe-s$seed" name="$recipe.seed$seed"
        rm -rf "$dir"
        # shellcheck disable=SC2086 # TRAIN_ARGS: overrides, split on spaces
        "$q2" train --config "$config" --device cuda --method.scheme="$scheme" --train.seed="$seed" --out.dir="$dir" \
          ${TRAIN_ARGS:-} >"$out/$name.log" 2>&1 || echo "train $name: exit $?"
        cp "$dir/metrics.jsonl" "$out/$name.metrics.jsonl" 2>/dev/null || true
        echo "$name: $((SECONDS - t0)) s; $(grep 'eval step' "$out/$name.log" | tail -n 1)"
      ) &
      if (( ++running >= ${PAR:-1} )); then wait -n || true; ((running--)); fi
    done
  done
  wait
}

# "3", "0-7" or "0,2,5" as the seeds one per line.
seed_list() {
  local part
  for part in ${1//,/ }; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [[ "$part" =~ ^[0-9]+$ ]]; then echo "$part"
    else echo "evidence: bad seed list '$1' (e.g. 3, 0-7 or 0,2,5)" >&2; exit 2; fi
  done
}

case "${1:-}" in
  data) data ;;
  probe) probe ;;
  train)
    shift
    train "$@"
    ;;
  *)
    echo "usage: $0 data | probe | train SEEDS SCHEME..." >&2
    exit 2
    ;;
esac
