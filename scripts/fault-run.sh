#!/usr/bin/env bash
# Fault run: trains a small model with a checkpoint after every step, kills the trainer with
# SIGKILL at random moments KILLS times (default 30), resuming after each kill, then finishes.
# Checks that
#   - every resume continues from the checkpoint it names, never from an older one,
#   - no temporary file of an interrupted write is left in the run folder,
#   - metrics.jsonl holds every step exactly once, and
#   - the losses are bit for bit those of the same run without kills.
# Usage: scripts/fault-run.sh [QUARTET2_BINARY] [KILLS]    (exit 0 when every check holds)
set -euo pipefail
q2=$(realpath "${1:-build/quartet2}")
here=$(realpath "$(dirname "$0")")
kills=${2:-30}
work=$(mktemp -d "${TMPDIR:-/tmp}/q2-fault.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
# One thread: the run is about files and processes, and ctest runs other tests beside it.
export OMP_NUM_THREADS=1

"$here/tiny-dataset.sh" "$q2" data

RANDOM=17  # the kill moments differ run to run anyway (timing); this fixes the draws
steps=100000  # never reached: the last run stops at a chosen step (train.stop_at keeps the schedule)
args=(--data.dir=data --model.seq_len=32 --train.batch_size=2 --train.steps=$steps --method.scheme=bf16
      --log.ckpt_every=1 --log.eval_every=5 --log.eval_batches=1 --log.log_every=1)
fail() { echo "fault-run: FAIL: $*" >&2; exit 1; }
ckpt_step() {  # the step of run/checkpoint.bin, from its JSON header ("step": N)
  [[ -f run/checkpoint.bin ]] || { echo 0; return; }
  head -c 65536 run/checkpoint.bin | grep -ao '"step":[0-9]*' | head -1 | cut -d: -f2
}

last=0 resumed=0
for ((i = 1; i <= kills; i++)); do
  mode=(--resume)
  [[ -f run/checkpoint.bin ]] || mode=(--overwrite)  # before the first checkpoint: start (over)
  "$q2" train "${args[@]}" --out.dir=run "${mode[@]}" >"run$i.log" 2>&1 &
  pid=$!
  # Anywhere from start-up to a few steps in: 0.05 - 2.5 s.
  sleep "$((RANDOM % 250 / 100)).$(printf '%02d' $((5 + RANDOM % 95)))"
  kill -9 "$pid" 2>/dev/null || fail "run $i ended before it was killed: $(tail -n 3 "run$i.log")"
  wait "$pid" 2>/dev/null || true
  if grep -q "error" "run$i.log"; then fail "run $i: $(grep error "run$i.log")"; fi
  if [[ ${mode[0]} == --resume ]]; then
    from=$(grep -o 'resumed from .* at step [0-9]*' "run$i.log" | grep -o '[0-9]*$' || true)
    if [[ -n $from ]]; then
      ((from >= last)) || fail "run $i resumed from step $from, older than the checkpoint of step $last"
      resumed=$((resumed + 1))
    fi
  fi
  now=$(ckpt_step)
  ((now >= last)) || fail "the checkpoint went back from step $last to $now"
  last=$now
  echo "kill $i: checkpoint at step $last"
done

# Finish cleanly a few steps on, then check what the kills left.
final=$((last + 3))
"$q2" train "${args[@]}" --out.dir=run --resume --train.stop_at=$final >final.log 2>&1 || { cat final.log; fail "the final resume failed"; }
grep -q "resumed from .* at step $last" final.log || fail "the final run did not resume from step $last"
stray=$(find run -name '*.tmp.*')
[[ -z $stray ]] || fail "temporary files left: $stray"

# Metrics: train lines 1..final once each, evaluation lines once per evaluated step.
python3 - "$final" run/metrics.jsonl <<'EOF' || fail "metrics.jsonl"
import collections, json, sys
final = int(sys.argv[1])
train, ev = collections.Counter(), collections.Counter()
for line in open(sys.argv[2]):
    j = json.loads(line)
    (ev if "val_loss" in j else train)[j["step"]] += 1
want = collections.Counter(range(1, final + 1))
want_ev = collections.Counter({s for s in range(1, final + 1) if s % 5 == 0} | {final})
assert train == want, f"train lines per step: {sorted((train - want).items())} extra, {sorted((want - train).items())} missing"
assert ev == want_ev, f"eval lines per step: {sorted(ev.items())}"
EOF

# The same run without kills gives the same losses, bit for bit.
"$q2" train "${args[@]}" --out.dir=ref --train.stop_at=$final >ref.log 2>&1 || { cat ref.log; fail "the reference run failed"; }
python3 - run/metrics.jsonl ref/metrics.jsonl <<'EOF' || fail "losses differ from the uninterrupted run"
import json, sys
def losses(path):  # (step, is_eval) -> the loss as written
    return {(j["step"], "val_loss" in j): j.get("val_loss", j.get("loss")) for j in map(json.loads, open(path))}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
bad = [k for k in b if a.get(k) != b[k]]
assert a.keys() == b.keys() and not bad, f"differ at {bad[:5]}"
EOF
torn=$(cat run*.log final.log | grep -c "left by a write that a killed process did not finish" || true)
echo "fault-run: $kills kills ($resumed resumed from a checkpoint, $torn interrupted a write), finished at step" \
  "$final: every resume continued, no temporary files left, every step logged once, losses identical to the run" \
  "without kills"
