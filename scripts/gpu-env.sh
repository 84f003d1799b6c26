# Sourced on the GPU machine by the device scripts: unpacks gpu-bundle/ (the programs and their
# libraries, one xz archive from 'scripts/device-test.sh build', so that a device call can carry
# them with data beside) and points the library path at it.
bundle="${bundle:-$(pwd)/gpu-bundle}"
[[ -x "$bundle/quartet2" ]] || tar -xJf "$bundle/programs.tar.xz" -C "$bundle" \
  || { echo "gpu-bundle: $bundle/programs.tar.xz missing; run 'scripts/device-test.sh build' first" >&2; exit 1; }
export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
