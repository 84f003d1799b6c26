#!/usr/bin/env bash
# The main job on the built-in data: prepare gcide, train the tiny preset with quartet2 and
# with bf16 on the same data and steps, compare validation bits per byte, and sample text.
set -euo pipefail
cd "$(dirname "$0")/.."
q2=build/quartet2
data=data/gcide

if [[ ! -f $data/meta.json ]]; then
  $q2 prepare --corpus gcide --vocab 8192 --out $data
fi
for scheme in quartet2 bf16; do
  echo "=== training tiny with scheme $scheme ==="
  $q2 train --config configs/tiny-demo.toml --method.scheme=$scheme --out.dir=runs/demo-$scheme --overwrite
done

echo
echo "=== validation (same data, same steps) ==="
for scheme in quartet2 bf16; do
  printf '%-9s ' "$scheme"
  $q2 eval --checkpoint runs/demo-$scheme/checkpoint.bin
done
echo
echo "=== sample from the quartet2 model ==="
$q2 generate --checkpoint runs/demo-quartet2/checkpoint.bin --prompt "Quartet, n. " --tokens 48 --seed 1
