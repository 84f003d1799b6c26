#!/usr/bin/env bash
# run_fuzzer.sh TREE NAME RUNS: a fixed, repeatable libFuzzer run of TREE/fuzz/NAME_fuzz (TREE:
# build-fuzz/, made by scripts/setup.sh --tests): the seed corpus fuzz/corpus/NAME, then
# mutations, RUNS inputs in all, from -seed=1. The repository's corpus is only read: new inputs
# go to a temporary directory. A crash, sanitizer report, leak, timeout or out-of-memory fails
# the run and prints the input (base64). The tree is brought up to date first. Exits 77 (CTest:
# skipped) when the tree was never built. Extra arguments go to the fuzzer.
set -uo pipefail
tree=${1:?usage: run_fuzzer.sh BUILD_FUZZ_DIR NAME RUNS [FUZZER ARGS]} name=${2:?} runs=${3:?}
shift 3
here=$(cd "$(dirname "$0")" && pwd)
if [[ ! -f $tree/build.ninja ]]; then
  echo "SKIPPED: no fuzzer build in $tree; run scripts/setup.sh --tests to make it"
  exit 77
fi
if ! flock "$tree/.q2-build.lock" cmake --build "$tree" --target quartet2_fuzzers >"$tree/.q2-build-$name.log" 2>&1; then
  cat "$tree/.q2-build-$name.log"
  echo "FAILED: building the fuzzers in $tree"
  exit 1
fi
work=$(if [[ -d /dev/shm ]]; then mktemp -d -p /dev/shm; else mktemp -d; fi)
trap 'rm -rf "$work"' EXIT
mkdir "$work/new" "$work/tmp"
export Q2_FUZZ_TMPDIR="$work/tmp"
# shellcheck source=sanitizer_env.sh
. "$here/sanitizer_env.sh"
export OMP_NUM_THREADS=1
dict=()
[[ -f $here/dict/$name.dict ]] && dict=(-dict="$here/dict/$name.dict")
"$tree/fuzz/${name}_fuzz" -runs="$runs" -seed=1 -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
  "${dict[@]}" -artifact_prefix="$work/" "$@" "$work/new" "$here/corpus/$name"
rc=$?
if ((rc != 0)); then
  mkdir -p "$tree/artifacts"
  for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$work"/slow-unit-*; do
    [[ -f $a ]] || continue
    cp "$a" "$tree/artifacts/$name-$(basename "$a")"
    echo "reproducer $tree/artifacts/$name-$(basename "$a") ($(stat -c %s "$a") bytes), base64:"
    base64 "$a" | head -c 65536
    echo
  done
  echo "FAILED: fuzz_$name (re-run one input: $tree/fuzz/${name}_fuzz FILE)"
fi
exit $rc
