#!/usr/bin/env bash
# run_sanitize_suite.sh TREE: the whole CPU test suite of the ASan + UBSan build TREE
# (build-sanitize/, made by scripts/setup.sh --tests), two tests at a time. The tree is brought
# up to date first. Exits 77 (CTest: skipped) when the tree was never built.
set -uo pipefail
tree=${1:?usage: run_sanitize_suite.sh BUILD_SANITIZE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
if [[ ! -f $tree/build.ninja || ! -f $tree/CTestTestfile.cmake ]]; then
  echo "SKIPPED: no sanitizer build in $tree; run scripts/setup.sh --tests to make it"
  exit 77
fi
if ! flock "$tree/.q2-build.lock" cmake --build "$tree" --target quartet2_tests quartet2 quartet2_capi_tests quartet2_capi_c_test >"$tree/.q2-build.log" 2>&1; then
  cat "$tree/.q2-build.log"
  echo "FAILED: building the sanitizer tree $tree"
  exit 1
fi
# shellcheck source=sanitizer_env.sh
. "$here/sanitizer_env.sh"
# (Each test runs with one OpenMP thread: CMakeLists.txt's Q2_TEST_ENVIRONMENT.)
exec ctest --test-dir "$tree" --output-on-failure -j2
