// The one description of memory that flows through every room: where the
// elements are, how many of what type, and on which device. A CUDA buffer
// (device.kind == kCuda, device.id the CUDA ordinal) comes with the stream its
// producer wrote it on, so that a GPU algorithm orders its kernels after that
// work without synchronising the host. Today only host buffers reach the core's
// collectives (the CUDA path runs in python/collex/cuda/), whose entry points
// refuse any other with an InvalidArgument; a CUDA Buffer reaches only
// point-to-point, with the DeviceEnd that moves its bytes (core/p2p.h).
#pragma once

#include <cstddef>

#include "collex/common/dtype.h"

namespace collex {

enum class DeviceKind { kCpu = 0, kCuda = 1 };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int id = 0;
};

struct Buffer {
  void* data = nullptr;
  std::size_t count = 0;  // elements, not bytes
  DType dtype = DType::kFloat32;
  Device device{};
  void* stream = nullptr;  // cudaStream_t for CUDA buffers; unused on the CPU

  bool on_host() const { return device.kind == DeviceKind::kCpu; }
  std::size_t bytes() const { return count * dtype_size(dtype); }
  char* bytes_at(std::size_t element) const { return static_cast<char*>(data) + element * dtype_size(dtype); }
};

}  // namespace collex
