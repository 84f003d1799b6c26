#!/usr/bin/env bash
# What a careless user can do to a run through the command line, and that it loses nothing: each
# command below must fail with a message naming the problem, and the run's checkpoint must stay
# byte for byte as it was. Usage: scripts/cli_files_test.sh QUARTET2_BINARY
set -euo pipefail
q2=$(realpath "$1")
here=$(realpath "$(dirname "$0")")
work=$(mktemp -d "${TMPDIR:-/tmp}/q2-cli.XXXXXX")
trap 'kill %% 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
export OMP_NUM_THREADS=1
"$here/tiny-dataset.sh" "$q2" data
args=(--data.dir=data --model.seq_len=32 --train.batch_size=2 --method.scheme=bf16 --log.eval_batches=1)
"$q2" train "${args[@]}" --train.steps=3 --out.dir=run >train.log 2>&1 || { cat train.log; exit 1; }
sum=$(md5sum <run/checkpoint.bin)
failed=0 passed=0
# expect_error MESSAGE COMMAND...: the command fails, prints MESSAGE, and the checkpoint is intact.
expect_error() {
  local want=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "FAIL (exit 0): $*"; failed=$((failed + 1)); return
  fi
  if ! grep -qF -- "$want" <<<"$out"; then
    echo "FAIL (message): $*"; echo "  wanted: $want"; echo "  got: $(tail -n 1 <<<"$out")"; failed=$((failed + 1)); return
  fi
  if [[ $(md5sum <run/checkpoint.bin) != "$sum" ]]; then
    echo "FAIL (checkpoint changed): $*"; failed=$((failed + 1)); return
  fi
  passed=$((passed + 1))
}
expect_error "already holds a run" "$q2" train "${args[@]}" --train.steps=3 --out.dir=run
expect_error "nothing is left to train" "$q2" train "${args[@]}" --train.steps=2 --out.dir=run --resume
expect_error "method.hadamard (checkpoint 0, now 32)" "$q2" train "${args[@]}" --train.steps=5 --out.dir=run --resume \
  --method.hadamard=32
expect_error "is the checkpoint itself" "$q2" export --checkpoint run/checkpoint.bin --out run/checkpoint.bin
expect_error "is the checkpoint itself" "$q2" export --checkpoint run/checkpoint.bin --out ./run/../run/checkpoint.bin
expect_error "it is a directory" "$q2" export --checkpoint run/checkpoint.bin --out run
expect_error "folder 'nowhere' does not exist" "$q2" export --checkpoint run/checkpoint.bin --out nowhere/m.safetensors
expect_error "is a folder; pass the checkpoint file in it" "$q2" eval --checkpoint run
expect_error "out.dir 'run/checkpoint.bin' is a file" "$q2" train "${args[@]}" --train.steps=3 --out.dir=run/checkpoint.bin

# Another dataset whose tokenizer was trained on other text.
for i in $(seq 400); do echo "zebra yak xylophone walrus $i vole umbrella."; echo; done >other.txt
"$q2" prepare --corpus other.txt --vocab 300 --val-fraction 0.05 --out other >other.log 2>&1 || { cat other.log; exit 1; }
expect_error "was trained on another tokenizer" "$q2" eval --checkpoint run/checkpoint.bin --data other
expect_error "was trained on another tokenizer" "$q2" train "${args[@]}" --train.steps=5 --out.dir=run --resume \
  --data.dir=other

# A second trainer on a folder in use.
"$q2" train "${args[@]}" --train.steps=100000 --out.dir=busy >busy.log 2>&1 &
for _ in $(seq 100); do [[ -s busy/.lock ]] && break; sleep 0.1; done
expect_error "is in use by another quartet2 process (pid $!)" "$q2" train "${args[@]}" --train.steps=3 --out.dir=busy \
  --overwrite
kill %% && wait 2>/dev/null || true

echo "cli_files: $passed passed, $failed failed"
((failed == 0))
