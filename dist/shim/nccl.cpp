// The NCCL half of the shim: built with -DUSE_C10D_NCCL -DUSE_CUDA against the CUDA build of
// libtorch (libtorch_cuda.so) and the CUDA/NCCL headers. No GPU is needed to compile or link it;
// without one, ProcessGroupNCCL's constructor throws "no GPUs found", which the caller reports.

#include <stdexcept>
#include <string>

#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "shim.hpp"

namespace rlvr_dist {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    int device,
    std::chrono::milliseconds timeout) {
  // One GPU per rank: the rank's local index picks it. With no GPU at all, leave the check to
  // ProcessGroupNCCL, whose message says so.
  const auto visible = static_cast<int>(c10::cuda::device_count());
  if (visible > 0) {
    if (device < 0 || device >= visible) {
      throw std::runtime_error(
          "NCCL: local rank " + std::to_string(device) + " has no GPU (" + std::to_string(visible) +
          " visible)");
    }
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  }
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
}

std::size_t sizeof_nccl() {
  return sizeof(c10d::ProcessGroupNCCL);
}

} // namespace rlvr_dist
