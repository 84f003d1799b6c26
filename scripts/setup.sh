#!/usr/bin/env bash
# Installs what quartet2 needs from Debian's packages (only what is missing) and builds it
# into build/. Safe to re-run. CUDA code is compiled too when nvcc is on PATH or in
# /usr/local/cuda/bin.
#
#   scripts/setup.sh            the program and its tests (build/)
#   scripts/setup.sh --tests    also the hardening trees the test suite runs (fuzz/CMakeLists.txt):
#                               build-sanitize/ (GCC, ASan + UBSan, CPU only) and build-fuzz/
#                               (clang, libFuzzer targets); without them those tests are skipped
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
for arg in "$@"; do
  case $arg in
    --tests) tests=1 ;;
    *) echo "usage: scripts/setup.sh [--tests]" >&2; exit 2 ;;
  esac
done

packages=(build-essential cmake ninja-build pkg-config libgtest-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev libopenblas-openmp-dev libtomlplusplus-dev zlib1g-dev libzstd-dev libsentencepiece-dev dict-gcide gnuplot-nox)
# clang with libFuzzer and the sanitizer runtimes; libomp-14-dev only so that the fuzz tree's
# CMake finds OpenMP for clang (the fuzzers themselves are built without it); llvm-14 for
# llvm-symbolizer (readable sanitizer stacks); util-linux for flock.
((tests)) && packages+=(clang-14 libclang-rt-14-dev libomp-14-dev llvm-14 util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"

if ((tests)); then
  cmake -S . -B build-sanitize -G Ninja -DCMAKE_CXX_COMPILER=g++ -DQUARTET2_ENABLE_CUDA=OFF -DQUARTET2_SANITIZE=ON
  cmake --build build-sanitize -j"$(nproc)" --target quartet2_tests quartet2 quartet2_capi_tests quartet2_capi_c_test
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 -DQUARTET2_ENABLE_CUDA=OFF -DQUARTET2_FUZZ=ON \
    -DBUILD_TESTING=OFF
  cmake --build build-fuzz -j"$(nproc)" --target quartet2_fuzzers
fi
