// Internal interface between the shim's two translation units: c10d.cpp (stores, Gloo, the C ABI)
// and nccl.cpp (ProcessGroupNCCL, compiled only against a CUDA build of libtorch with the CUDA
// headers at hand). Not part of the C ABI that Rust sees.
#pragma once

#include <chrono>
#include <cstddef>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace rlvr_dist {

// Creates a ProcessGroupNCCL on `store` after making CUDA device `device` current. Throws on
// failure (for example c10::Error "no GPUs found" on a machine without a GPU).
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    int device,
    std::chrono::milliseconds timeout);

// sizeof(c10d::ProcessGroupNCCL) as the NCCL translation unit sees it.
std::size_t sizeof_nccl();

} // namespace rlvr_dist
