// The one description of memory that flows through every room.
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

  std::size_t bytes() const { return count * dtype_size(dtype); }
  char* bytes_at(std::size_t element) const { return static_cast<char*>(data) + element * dtype_size(dtype); }
};

}  // namespace collex
