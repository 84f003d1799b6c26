#!/usr/bin/env bash
# scripts/bias-study.sh and scripts/bias_table.py on a fake run of two dumped linears, one of
# whose dY has a token carrying nearly all the gradient (as an attention sink's can): one JSON
# line per linear and scheme, the chunk statistics see that token, MS-EDEN's fallback
# (quartet2@0.9) changes what it should, the tables and the plot, and JOBS keeps the lines.
#
#   scripts/bias_study_test.sh QUARTET2_BINARY
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
q2="$1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/run/tensors/step7" <<'PY'
import os, random, struct, sys

def save_npy(path, rows, cols, values):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, cols)
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%df" % len(values), *values))

rng = random.Random(1)
for name, sink in (("layers.0.attention.wo", False), ("layers.1.attention.wo", True)):
    d = os.path.join(sys.argv[1], name)
    os.makedirs(d)
    gauss = lambda n: [rng.gauss(0, 1) for _ in range(n)]
    dy = gauss(128 * 128)
    if sink:  # token 3 of 128: +-100 on every feature, the others about 1
        dy[3 * 128:4 * 128] = [rng.choice((-100.0, 100.0)) for _ in range(128)]
    save_npy(os.path.join(d, "x.npy"), 128, 128, gauss(128 * 128))
    save_npy(os.path.join(d, "w.npy"), 128, 128, gauss(128 * 128))
    save_npy(os.path.join(d, "dy.npy"), 128, 128, dy)
PY
SCHEMES="quartet2 nvidia quartet2@0.9 quartet2+rht2+split" "$root/scripts/bias-study.sh" "$q2" "$tmp/run" 4 \
  >"$tmp/study.jsonl" 2>"$tmp/log"
fail() { echo "bias_study_test: $*" >&2; exit 1; }
[[ $(wc -l <"$tmp/study.jsonl") -eq 10 ]] ||
  fail "want 10 lines (2 linears x chunks, quartet2, nvidia, quartet2@0.9, quartet2+rht2+split), got: $(cat "$tmp/study.jsonl")"
python3 - "$tmp/study.jsonl" <<'PY' || fail "wrong study lines"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
by = {(l["linear"], l["scheme"]): l for l in lines}
assert all(l["step"] == 7 for l in lines)
curve = by[("layers.0.attention.wo", "quartet2")]["result"]["wgrad"]["curve"]
assert [p["draws"] for p in curve] == [1, 2, 4], curve
# Along tokens (wgrad's dY^T) the sink token dominates every chunk; along features it does not.
sink = by[("layers.1.attention.wo", "chunks")]["result"]["chunk_stats"]
plain = by[("layers.0.attention.wo", "chunks")]["result"]["chunk_stats"]
assert sink["wgrad.dyt"]["dominated"] == 1.0 and sink["wgrad.dyt"]["chunks"] == 128, sink["wgrad.dyt"]
assert sink["dgrad.dy"]["dominated"] == 0.0 and plain["wgrad.dyt"]["dominated"] == 0.0
# quartet2@0.9 is quartet2 with MS-EDEN's fallback: the sink's dominated chunks change wgrad only.
fb, q = by[("layers.1.attention.wo", "quartet2@0.9")]["result"], by[("layers.1.attention.wo", "quartet2")]["result"]
assert fb["config"]["eden_fallback"] == 0.9 and fb["config"]["scheme"] == "quartet2", fb["config"]
assert fb["dgrad"]["rel_err"] == q["dgrad"]["rel_err"] and fb["wgrad"]["rel_err"] != q["wgrad"]["rel_err"]
sp = by[("layers.1.attention.wo", "quartet2+rht2+split")]["result"]["config"]
assert sp["scheme"] == "quartet2" and sp["hadamard_rounds"] == 2 and sp["outlier_split"] == 0.9, sp
PY
plot=()
command -v gnuplot >/dev/null && plot=(--plot "$tmp/out")
out=$(python3 "$root/scripts/bias_table.py" "$tmp/study.jsonl" "${plot[@]}" 2>/dev/null)
grep -q '^| 7 | 1 | attention.wo | nvidia | ' <<<"$out" || fail "no nvidia row of layer 1 in: $out"
grep -q '^| 7 | 1 | attention.wo | 0 | 1 | 0 | ' <<<"$out" || fail "no chunk row of layer 1 (dY^T dominated) in: $out"
grep -q '^- quartet2 wgrad: .* of 2 cases above 1.3' <<<"$out" || fail "no summary line in: $out"
grep -q '| wgrad bias share | wgrad bias along |$' <<<"$out" || fail "no bias along column in: $out"
grep -q '^- quartet2@0.9 against quartet2, wgrad: ' <<<"$out" || fail "no fallback summary in: $out"
grep -q '^- quartet2+rht2+split against quartet2, wgrad: ' <<<"$out" || fail "no split summary in: $out"
grep -q '^| 7 | 1 | attention.wo | wgrad | ' <<<"$out" || fail "no fallback row of layer 1 in: $out"
if ((${#plot[@]})); then
  [[ "$(head -c 4 "$tmp/out-curves.png" | tail -c 3)" == "PNG" ]] || fail "out-curves.png is not a PNG"
fi
# JOBS runs the same grad-error calls at once: the same lines, in the same order.
JOBS=3 SCHEMES="quartet2 nvidia quartet2@0.9 quartet2+rht2+split" "$root/scripts/bias-study.sh" "$q2" "$tmp/run" 4 >"$tmp/jobs.jsonl" \
  2>"$tmp/log"
cmp -s "$tmp/study.jsonl" "$tmp/jobs.jsonl" || fail "JOBS=3 gave other lines than one job at a time"
# DEVICE reaches grad-error (cpu here: the same lines as without it).
DEVICE=cpu SCHEMES="quartet2 nvidia quartet2@0.9 quartet2+rht2+split" "$root/scripts/bias-study.sh" "$q2" "$tmp/run" 4 \
  >"$tmp/device.jsonl" 2>/dev/null
grep -q '"device":"cpu"' "$tmp/device.jsonl" || fail "DEVICE did not reach grad-error: $(head -c 300 "$tmp/device.jsonl")"
cmp -s "$tmp/study.jsonl" "$tmp/device.jsonl" || fail "DEVICE=cpu gave other lines than the default"
if DEVICE=nosuch SCHEMES=quartet2 "$root/scripts/bias-study.sh" "$q2" "$tmp/run" 2 >/dev/null 2>&1; then
  fail "accepted DEVICE=nosuch"
fi
[[ $(JOBS=x "$root/scripts/bias-study.sh" "$q2" "$tmp/run" 2 2>&1 >/dev/null) == \
  "bias-study: JOBS must be a positive integer, got 'x'" ]] || fail "JOBS=x was not refused by name"
# SPLIT_TAU sets the outlier split's share.
SPLIT_TAU=0.5 SCHEMES="quartet2+rht2+split" "$root/scripts/bias-study.sh" "$q2" "$tmp/run" 2 >"$tmp/tau.jsonl" 2>/dev/null
grep -q '"outlier_split":0.5' "$tmp/tau.jsonl" || fail "SPLIT_TAU=0.5 did not reach grad-error: $(head -c 300 "$tmp/tau.jsonl")"
# single_draw_error.py: one draw per seed; the same options on both sides change nothing, the split
# changes the sink's wgrad only, and JOBS keeps the table.
sd() { python3 "$root/scripts/single_draw_error.py" "$q2" "$tmp/run" 128 3 "$@" 2>&1; }
same=$(sd -- --scheme quartet2 -- --scheme quartet2)
[[ $(grep -c '| +0.0% | [0-9.]*% |$' <<<"$same") -eq 4 ]] || fail "equal variants differ in: $same"
one=$(sd -- --scheme quartet2 -- --scheme quartet2 --hadamard-rounds 2 --outlier-split 0.5)
grep -q '^| 7 | layers.1.attention.wo | wgrad | .* | -[0-9.]*% | ' <<<"$one" || fail "the split did not lower the sink's wgrad error: $one"
three=$(JOBS=3 sd -- --scheme quartet2 -- --scheme quartet2 --hadamard-rounds 2 --outlier-split 0.5)
[[ "$one" == "$three" ]] || fail "JOBS=3 gave another table: $three"
if sd -- --scheme quartet2 -- --scheme nosuch >/dev/null; then fail "single_draw_error accepted a bad scheme"; fi
[[ $(JOBS=0 sd -- --scheme quartet2 -- --scheme quartet2) == "single_draw_error: JOBS must be a positive integer, got '0'" ]] ||
  fail "JOBS=0 was not refused by name"
# A study that fails part way keeps the lines of what it finished before, in order.
cp -r "$tmp/run" "$tmp/bad"
mkdir "$tmp/bad/tensors/step7/layers.9.attention.wo"
cp "$tmp/run/tensors/step7/layers.0.attention.wo/"*.npy "$tmp/bad/tensors/step7/layers.9.attention.wo/"
head -c 100 "$tmp/run/tensors/step7/layers.0.attention.wo/x.npy" >"$tmp/bad/tensors/step7/layers.9.attention.wo/x.npy"
if SCHEMES="quartet2 nvidia" "$root/scripts/bias-study.sh" "$q2" "$tmp/bad" 4 >"$tmp/bad.jsonl" 2>/dev/null; then
  fail "accepted a truncated x.npy"
fi
python3 - "$tmp/study.jsonl" "$tmp/bad.jsonl" <<'PY' || fail "a failed study did not keep the lines before the failure"
import json, sys
def lines(path):  # without the dump's path
    out = []
    for l in open(path):
        d = json.loads(l)
        d["result"].get("config", {}).pop("load", None)
        out.append(d)
    return out
want = [d for d in lines(sys.argv[1]) if d["scheme"] in ("chunks", "quartet2", "nvidia")]
got = lines(sys.argv[2])
assert len(want) == 6 and got == want, [(d["linear"], d["scheme"]) for d in got]
PY
# A run without dumps is an error.
if "$root/scripts/bias-study.sh" "$q2" "$tmp" 2>/dev/null; then fail "accepted a run without tensors"; fi
echo "bias_study_test: ok"
