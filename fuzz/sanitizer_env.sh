# Sourced by the hardening runners: how ASan, UBSan and LSan report. Every report fails the run
# (ASan halts by default; UBSan is built with -fno-sanitize-recover), with a symbolized stack.
# (detect_stack_use_after_return stays off, as by default: it took the sanitizer suite's longest
# test from 90 to 148 s of CPU.)
export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1:strict_string_checks=1:print_summary=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:print_summary=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export LSAN_OPTIONS="print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
# GCC's and clang's sanitizer runtimes symbolize with llvm-symbolizer when it is on PATH.
for s in llvm-symbolizer llvm-symbolizer-14; do
  if command -v "$s" >/dev/null; then
    export ASAN_SYMBOLIZER_PATH="$(command -v "$s")"
    break
  fi
done
