#include "cuda/dist.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/rendezvous.h"
#include "cuda/runtime/device.h"

namespace q2::cuda {

struct Communicator::State {
  ncclComm_t comm = nullptr;
  bool aborted = false;
  double* values = nullptr;  // device slots of the float64 all-reduce
  size_t values_capacity = 0;
  // The tensor collectives' stream (non-blocking: the legacy stream 0 must not serialize with it)
  // and the events that order it after stream 0's work and stream 0 after the collectives.
  cudaStream_t stream = nullptr;
  cudaEvent_t computed = nullptr, finished = nullptr;
};

namespace {

// Non-blocking NCCL answers ncclInProgress for work it accepted but has not enqueued yet.
bool failed(ncclResult_t r) { return r != ncclSuccess && r != ncclInProgress; }

std::string seconds(double s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

}  // namespace

Communicator::Communicator(const model::DistConfig& dist) : dist_(dist), s_(std::make_unique<State>()) {
  int devices = 0;
  check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
  if (devices < 1) throw Error("rank " + std::to_string(dist.rank) + ": no CUDA device");
  check(cudaSetDevice(dist.local_rank % devices), "cudaSetDevice");
  // NVLink multicast (NVLS) must stay off on the lent machines; a user's own setting wins.
  setenv("NCCL_NVLS_ENABLE", "0", 0);

  ncclUniqueId id;
  if (dist.rank == 0) {
    if (ncclGetUniqueId(&id) != ncclSuccess) throw Error("rank 0: ncclGetUniqueId failed");
    publish_rendezvous(dist.rendezvous, std::string(id.internal, sizeof id.internal));
  } else {
    const std::string bytes = await_rendezvous(dist.rendezvous, sizeof id.internal, dist.timeout_s);
    std::copy(bytes.begin(), bytes.end(), id.internal);
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so that init and collectives can be abandoned at the deadline
  const ncclResult_t r = ncclCommInitRankConfig(&s_->comm, dist.world, id, dist.rank, &config);
  if (failed(r)) throw Error("rank " + std::to_string(dist.rank) + ": ncclCommInitRankConfig: " + ncclGetErrorString(r));
  wait("communicator start-up (NCCL id from '" + rendezvous_file(dist.rendezvous) +
       "'; a stale file from an earlier launch also ends here)");
  // Every rank has joined, so every rank has read the id: remove it so a later launch cannot
  // pick up this one.
  if (dist.rank == 0) std::filesystem::remove(rendezvous_file(dist.rendezvous));
  check(cudaStreamCreateWithFlags(&s_->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  check(cudaEventCreateWithFlags(&s_->computed, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  check(cudaEventCreateWithFlags(&s_->finished, cudaEventDisableTiming), "cudaEventCreateWithFlags");
}

Communicator::~Communicator() {
  if (s_->comm && !s_->aborted) ncclCommDestroy(s_->comm);
  if (s_->finished) cudaEventDestroy(s_->finished);
  if (s_->computed) cudaEventDestroy(s_->computed);
  if (s_->stream) cudaStreamDestroy(s_->stream);
  if (s_->values) cudaFree(s_->values);
}

void Communicator::fail(const std::string& why) {
  if (s_->comm && !s_->aborted) {
    ncclCommAbort(s_->comm);
    s_->aborted = true;
  }
  throw Error("rank " + std::to_string(dist_.rank) + ": " + why);
}

// Non-blocking NCCL: first the communicator leaves ncclInProgress (the operations are then
// enqueued), then, with `drain`, stream 0 drains. Both polls share one deadline.
void Communicator::wait(const std::string& what, bool drain) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(dist_.timeout_s);
  auto timed_out = [&] { return std::chrono::steady_clock::now() >= deadline; };
  auto too_late = [&] {
    fail("the " + what + " did not complete within " + seconds(dist_.timeout_s) + " s; another rank may have died");
  };
  for (;;) {
    ncclResult_t st = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(s_->comm, &st);
    if (r != ncclSuccess) fail(std::string("ncclCommGetAsyncError during the ") + what + ": " + ncclGetErrorString(r));
    if (st == ncclSuccess) break;
    if (failed(st)) fail("NCCL error during the " + what + ": " + ncclGetErrorString(st));
    if (timed_out()) too_late();
    std::this_thread::yield();
  }
  while (drain) {
    const cudaError_t q = cudaStreamQuery(0);
    if (q == cudaSuccess) return;
    if (q != cudaErrorNotReady) check(q, "cudaStreamQuery (" + what + ")");
    ncclResult_t st = ncclSuccess;
    ncclCommGetAsyncError(s_->comm, &st);
    if (failed(st)) fail("NCCL error during the " + what + ": " + ncclGetErrorString(st));
    if (timed_out()) too_late();
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void Communicator::ok(int result, const char* call, const std::string& what) {
  const auto r = static_cast<ncclResult_t>(result);
  if (failed(r)) fail(std::string(call) + " (" + what + "): " + ncclGetErrorString(r));
}

void Communicator::start(const std::vector<model::Tensor>& tensors, const std::string& what,
                         const std::function<void(const model::Tensor&, size_t)>& op) {
  if (s_->aborted) fail("the communicator was aborted by an earlier error");
  check(cudaEventRecord(s_->computed, 0), "cudaEventRecord (" + what + ")");
  check(cudaStreamWaitEvent(s_->stream, s_->computed, 0), "cudaStreamWaitEvent (" + what + ")");
  ok(ncclGroupStart(), "ncclGroupStart", what);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].dtype != model::DType::kF32) fail(what + ": only float32 tensors are summed or copied");
    op(tensors[i], i);
  }
  ok(ncclGroupEnd(), "ncclGroupEnd", what);
  // Enqueued before the next NCCL call or event record on the stream, as non-blocking NCCL requires.
  wait(what, false);
}

void Communicator::start_allreduce_sum(const std::vector<model::Tensor>& tensors, const std::string& what) {
  const std::string op = "all-reduce of " + what;
  start(tensors, op, [&](const model::Tensor& t, size_t) {
    ok(ncclAllReduce(t.data, t.data, static_cast<size_t>(t.size()), ncclFloat32, ncclSum, s_->comm, s_->stream),
       "ncclAllReduce", op);
  });
}

void Communicator::start_reduce_scatter_sum(const std::vector<model::Tensor>& tensors, const std::vector<int>& owners,
                                            const std::string& what) {
  const std::string op = "reduce-scatter of " + what;
  if (owners.size() != tensors.size()) fail(op + ": " + std::to_string(owners.size()) + " owners of " +
                                            std::to_string(tensors.size()) + " tensors");
  start(tensors, op, [&](const model::Tensor& t, size_t i) {
    ok(ncclReduce(t.data, t.data, static_cast<size_t>(t.size()), ncclFloat32, ncclSum, owners[i], s_->comm,
                  s_->stream),
       "ncclReduce", op);
  });
}

void Communicator::start_all_gather(const std::vector<model::Tensor>& tensors, const std::vector<int>& owners,
                                    const std::string& what) {
  const std::string op = "all-gather of " + what;
  if (owners.size() != tensors.size()) fail(op + ": " + std::to_string(owners.size()) + " owners of " +
                                            std::to_string(tensors.size()) + " tensors");
  start(tensors, op, [&](const model::Tensor& t, size_t i) {
    ok(ncclBroadcast(t.data, t.data, static_cast<size_t>(t.size()), ncclFloat32, owners[i], s_->comm, s_->stream),
       "ncclBroadcast", op);
  });
}

void Communicator::finish(const std::string& what) {
  if (s_->aborted) fail("the communicator was aborted by an earlier error");
  check(cudaEventRecord(s_->finished, s_->stream), "cudaEventRecord (" + what + ")");
  check(cudaStreamWaitEvent(0, s_->finished, 0), "cudaStreamWaitEvent (" + what + ")");
  // Waiting here, against the deadline, rather than in the next synchronizing call: a rank
  // that died turns into the timeout error instead of a hang.
  wait("collectives of " + what);
}

void Communicator::allreduce_sum(std::vector<double>& values, const std::string& what) {
  if (s_->aborted) fail("the communicator was aborted by an earlier error");
  if (values.empty()) return;
  const size_t bytes = values.size() * sizeof(double);
  if (values.size() > s_->values_capacity) {
    if (s_->values) check(cudaFree(s_->values), "cudaFree (all-reduce values)");
    s_->values = nullptr;
    check(cudaMalloc(&s_->values, bytes), "cudaMalloc (all-reduce values)");
    s_->values_capacity = values.size();
  }
  check(cudaMemcpy(s_->values, values.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy (all-reduce values)");
  ok(ncclAllReduce(s_->values, s_->values, values.size(), ncclFloat64, ncclSum, s_->comm, 0), "ncclAllReduce",
     "all-reduce of " + what);
  wait("all-reduce of " + what);
  check(cudaMemcpy(values.data(), s_->values, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (all-reduce values)");
}

}  // namespace q2::cuda
