#pragma once
// OpenBLAS built on OpenMP shares its work buffers between concurrent multi-threaded calls (its
// NUM_PARALLEL is 1) and keeps one global thread count, so that BLAS calls from threads of their
// own, such as the ranks of an in-process job (model/in_process.h), would corrupt each other's
// results: every BLAS call made outside an OpenMP parallel region holds this lock.
#include <mutex>

namespace q2 {

inline std::mutex& blas_lock() {
  static std::mutex m;
  return m;
}

}  // namespace q2
