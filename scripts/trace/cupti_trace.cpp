// A CUPTI injection library: the GPU timeline (kernels, memsets, memcpys with start/end and
// stream) and the CPU launch calls of any CUDA program, as CSV, for finding gaps and overlap
// that Nsight Compute (which serializes kernels) cannot show. The device image has no nsys.
//
//   CUDA_INJECTION64_PATH=gpu-bundle/libcupti_trace.so Q2_TRACE=out.csv PROGRAM ...
//
// Rows: kind,name,stream,start_ns,end_ns,correlation,grid (kind: K kernel, S memset, C memcpy,
// R runtime API call on the CPU; correlation links an R row to the GPU row it launched; grid:
// a kernel's block count). With Q2_TRACE_MEMORY=1 also every device allocation and release
// (M rows, name alloc or free, grid: bytes), followed by address, its stream-ordered pool's
// size, utilized bytes and base address (0 outside a pool), whether it was stream-ordered and
// the library that asked: the pool's growth and the memory outside it, which cudaMemGetInfo counts
// together.
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace {

FILE* out = nullptr;
std::mutex mu;

void CUPTIAPI requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = 8 << 20;
  *buffer = static_cast<uint8_t*>(aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(mu);
  CUpti_Activity* r = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) {
    switch (r->kind) {
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        auto* k = reinterpret_cast<CUpti_ActivityKernel10*>(r);
        std::fprintf(out, "K,\"%s\",%u,%llu,%llu,%u,%d\n", k->name, k->streamId, (unsigned long long)k->start,
                     (unsigned long long)k->end, k->correlationId, k->gridX * k->gridY * k->gridZ);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        auto* m = reinterpret_cast<CUpti_ActivityMemset4*>(r);
        std::fprintf(out, "S,memset,%u,%llu,%llu,%u,0\n", m->streamId, (unsigned long long)m->start,
                     (unsigned long long)m->end, m->correlationId);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        auto* m = reinterpret_cast<CUpti_ActivityMemcpy6*>(r);
        std::fprintf(out, "C,memcpy,%u,%llu,%llu,%u,0\n", m->streamId, (unsigned long long)m->start,
                     (unsigned long long)m->end, m->correlationId);
        break;
      }
      case CUPTI_ACTIVITY_KIND_RUNTIME: {
        auto* a = reinterpret_cast<CUpti_ActivityAPI*>(r);
        const char* name = nullptr;
        cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &name);
        std::fprintf(out, "R,%s,0,%llu,%llu,%u,0\n", name ? name : "?", (unsigned long long)a->start,
                     (unsigned long long)a->end, a->correlationId);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMORY2: {
        auto* m = reinterpret_cast<CUpti_ActivityMemory4*>(r);
        if (m->memoryKind != CUPTI_ACTIVITY_MEMORY_KIND_DEVICE) break;
        const bool alloc = m->memoryOperationType == CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION;
        const bool pool = m->memoryPoolConfig.memoryPoolType == CUPTI_ACTIVITY_MEMORY_POOL_TYPE_LOCAL;
        std::fprintf(out, "M,%s,%u,%llu,%llu,%u,%llu,%llu,%llu,%llu,%llu,%u,\"%s\"\n", alloc ? "alloc" : "free", m->streamId,
                     (unsigned long long)m->timestamp, (unsigned long long)m->timestamp, m->correlationId,
                     (unsigned long long)m->bytes, (unsigned long long)m->address,
                     (unsigned long long)(pool ? m->memoryPoolConfig.pool.size : 0),
                     (unsigned long long)(pool ? m->memoryPoolConfig.utilizedSize : 0),
                     (unsigned long long)(pool ? m->memoryPoolConfig.address : 0), m->isAsync,
                     m->source ? m->source : "");
        break;
      }
      default: break;
    }
  }
  std::free(buffer);
}

void finish() {
  cuptiActivityFlushAll(1);
  if (out) std::fclose(out);
}

}  // namespace

extern "C" int InitializeInjection() {
  const char* path = std::getenv("Q2_TRACE");
  out = std::fopen(path ? path : "trace.csv", "w");
  if (!out) return 0;
  cuptiActivityRegisterCallbacks(requested, completed);
  for (CUpti_ActivityKind k : {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMSET,
                               CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_RUNTIME})
    cuptiActivityEnable(k);
  const char* memory = std::getenv("Q2_TRACE_MEMORY");
  if (memory && std::strcmp(memory, "1") == 0) cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMORY2);
  std::atexit(finish);
  return 1;
}
