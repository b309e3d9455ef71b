// C ABI over PyTorch's c10d for the `rlvr-dist` crate: a TCPStore (behind a PrefixStore), a Gloo or
// NCCL backend, the collectives the crate exposes, and a heartbeat per process that lets the Rust
// side name the ranks that vanished when a collective fails.
//
// Conventions: every function returns 0 on success and -1 on failure, after storing a message that
// rlvr_c10d_last_error() returns (per thread, valid until the next failing call on that thread).
// Tensors cross as tch's C_tensor, which is an at::Tensor*.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include "shim.hpp"

namespace {

using Millis = std::chrono::milliseconds;

thread_local std::string last_error;

// Runs `body`, turning every exception into -1 and a stored message. c10::Error (and the c10d
// errors derived from it) carry a C++ backtrace in what(); keep the message without it.
template <class Body>
int guarded(Body&& body) {
  try {
    body();
    return 0;
  } catch (const c10::Error& e) {
    last_error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return -1;
}

constexpr int kBackendGloo = 0;
constexpr int kBackendNccl = 1;

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp(c10d::ReduceOp::SUM);
    case 1:
      return c10d::ReduceOp(c10d::ReduceOp::MAX);
    case 2:
      return c10d::ReduceOp(c10d::ReduceOp::MIN);
    default:
      throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

std::string heartbeat_key(int rank) {
  return "hb/" + std::to_string(rank);
}

} // namespace

// One process's membership in a group: the store, the backend, the timeout every collective waits
// with, and the heartbeat thread.
struct rlvr_pg {
  int rank = 0;
  int world = 1;
  Millis timeout{0};
  bool nccl = false;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;

  // The heartbeat thread owns a second client connection to the store, so that a collective
  // blocked on the main connection (NCCL uses it lazily) never delays a beat.
  c10::intrusive_ptr<c10d::Store> beat_store;
  std::thread beat_thread;
  std::mutex beat_mutex;
  std::condition_variable beat_wake;
  bool beat_stop = false;

  void start_heartbeat(Millis period) {
    beat_thread = std::thread([this, period] {
      const std::string key = heartbeat_key(rank);
      std::unique_lock<std::mutex> lock(beat_mutex);
      while (!beat_stop) {
        lock.unlock();
        try {
          beat_store->add(key, 1);
        } catch (...) {
          // The store is gone (a TCPStore client does not reconnect): stop beating rather than
          // log the same failure twice a second. The other ranks see our counter stand still,
          // which is the truth as far as they can know.
          return;
        }
        lock.lock();
        beat_wake.wait_for(lock, period, [this] { return beat_stop; });
      }
    });
  }

  void stop_heartbeat() {
    {
      std::lock_guard<std::mutex> lock(beat_mutex);
      beat_stop = true;
    }
    beat_wake.notify_all();
    if (beat_thread.joinable()) {
      beat_thread.join();
    }
  }

  // Waits for `work` with the group's timeout; Work::wait rethrows the backend's error.
  void finish(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
    if (!work->wait(timeout)) {
      throw std::runtime_error(std::string(what) + " did not complete within the timeout");
    }
  }
};

extern "C" {

const char* rlvr_c10d_last_error() {
  return last_error.c_str();
}

size_t rlvr_c10d_sizeof_gloo() {
  return sizeof(c10d::ProcessGroupGloo);
}

// 0 when this build has no NCCL translation unit.
size_t rlvr_c10d_sizeof_nccl() {
#ifdef RLVR_HAVE_NCCL
  return rlvr_dist::sizeof_nccl();
#else
  return 0;
#endif
}

int rlvr_c10d_has_nccl() {
#ifdef RLVR_HAVE_NCCL
  return 1;
#else
  return 0;
#endif
}

// Connects to (or, with is_server, hosts) the TCPStore at host:port, wraps it in PrefixStore(prefix),
// starts the heartbeat and creates the backend (0 Gloo, 1 NCCL on CUDA device `device`).
int rlvr_pg_new(
    const char* host,
    uint16_t port,
    int rank,
    int world,
    int is_server,
    int backend,
    int device,
    int64_t timeout_ms,
    int64_t heartbeat_ms,
    const char* prefix,
    rlvr_pg** out) {
  *out = nullptr;
  auto pg = std::make_unique<rlvr_pg>();
  int rc = guarded([&] {
    if (backend != kBackendGloo && backend != kBackendNccl) {
      throw std::invalid_argument("unknown backend " + std::to_string(backend));
    }
    pg->rank = rank;
    pg->world = world;
    pg->timeout = Millis(timeout_ms);
    pg->nccl = backend == kBackendNccl;

    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = pg->timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(host, opts);
    pg->store = c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
    pg->beat_store = c10::make_intrusive<c10d::PrefixStore>(prefix, tcp->clone());
    pg->start_heartbeat(Millis(heartbeat_ms));

    if (pg->nccl) {
#ifdef RLVR_HAVE_NCCL
      pg->backend = rlvr_dist::make_nccl_backend(pg->store, rank, world, device, pg->timeout);
#else
      (void)device;
      throw std::runtime_error(
          "this build of rlvr-dist has no NCCL support: libtorch is not a CUDA build, or the CUDA "
          "headers were missing when rlvr-dist was compiled (see the cargo warning from its "
          "build script; scripts/dist-deps.sh fetches them)");
#endif
    } else {
      auto options = c10d::ProcessGroupGloo::Options::create_default(pg->timeout);
      options->timeout = pg->timeout;
      pg->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(pg->store, rank, world, options);
    }
  });
  if (rc != 0) {
    pg->stop_heartbeat();
    return rc;
  }
  *out = pg.release();
  return 0;
}

// Stops the heartbeat and shuts the backend down. Never throws.
void rlvr_pg_free(rlvr_pg* pg) {
  if (pg == nullptr) {
    return;
  }
  pg->stop_heartbeat();
  if (pg->backend) {
    guarded([&] {
      // ProcessGroupNCCL wants an explicit shutdown (its destructor warns and aborts otherwise);
      // ProcessGroupGloo's destructor drains its queue and joins its threads.
      if (pg->nccl) {
        pg->backend->shutdown();
      }
      pg->backend.reset();
    });
  }
  guarded([&] {
    pg->beat_store.reset();
    pg->store.reset();
  });
  delete pg;
}

// Reads every rank's heartbeat counter into counts[0..world) (add of 0: never blocks on a missing
// key). Uses the main store connection with the group's timeout.
int rlvr_pg_heartbeats(rlvr_pg* pg, int64_t* counts, int world) {
  return guarded([&] {
    if (world != pg->world) {
      throw std::invalid_argument("heartbeat buffer has the wrong length");
    }
    for (int r = 0; r < world; ++r) {
      counts[r] = pg->store->add(heartbeat_key(r), 0);
    }
  });
}

int rlvr_all_reduce(rlvr_pg* pg, at::Tensor* tensor, int op) {
  return guarded([&] {
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    opts.timeout = pg->timeout;
    std::vector<at::Tensor> tensors{*tensor};
    pg->finish(pg->backend->allreduce(tensors, opts), "all_reduce");
  });
}

int rlvr_broadcast(rlvr_pg* pg, at::Tensor* tensor, int root) {
  return guarded([&] {
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    opts.timeout = pg->timeout;
    std::vector<at::Tensor> tensors{*tensor};
    pg->finish(pg->backend->broadcast(tensors, opts), "broadcast");
  });
}

int rlvr_all_gather(rlvr_pg* pg, at::Tensor* out, at::Tensor* input) {
  return guarded([&] {
    c10d::AllgatherOptions opts;
    opts.timeout = pg->timeout;
    pg->finish(pg->backend->_allgather_base(*out, *input, opts), "all_gather");
  });
}

int rlvr_reduce_scatter(rlvr_pg* pg, at::Tensor* out, at::Tensor* input, int op) {
  return guarded([&] {
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = reduce_op(op);
    opts.timeout = pg->timeout;
    pg->finish(pg->backend->_reduce_scatter_base(*out, *input, opts), "reduce_scatter");
  });
}

int rlvr_all_to_all(
    rlvr_pg* pg,
    at::Tensor* out,
    at::Tensor* input,
    const int64_t* out_splits,
    size_t n_out,
    const int64_t* in_splits,
    size_t n_in) {
  return guarded([&] {
    c10d::AllToAllOptions opts;
    opts.timeout = pg->timeout;
    std::vector<int64_t> outs(out_splits, out_splits + n_out);
    std::vector<int64_t> ins(in_splits, in_splits + n_in);
    pg->finish(pg->backend->alltoall_base(*out, *input, outs, ins, opts), "all_to_all");
  });
}

// libtorch's global deterministic mode (`torch.use_deterministic_algorithms`): ops with a
// nondeterministic CUDA kernel (float atomics: scatter_add, index_add, ...) take their
// deterministic path or fail; cuDNN picks deterministic algorithms and stops benchmarking. tch has
// no binding for the global context, so it lives beside the other C++ calls of the project.
void rlvr_set_deterministic(int on) {
  at::globalContext().setDeterministicAlgorithms(on != 0, /*warn_only=*/false);
  at::globalContext().setDeterministicCuDNN(on != 0);
  at::globalContext().setBenchmarkCuDNN(false);
}

int rlvr_deterministic() {
  return at::globalContext().deterministicAlgorithms() ? 1 : 0;
}

int rlvr_barrier(rlvr_pg* pg) {
  return guarded([&] {
    c10d::BarrierOptions opts;
    opts.timeout = pg->timeout;
    pg->finish(pg->backend->barrier(opts), "barrier");
  });
}

} // extern "C"
