// How the CUDA code reports a failed runtime call: one exception whose text names
// the step and the runtime's error. Only translation units built with the CUDA
// runtime include this; the rest of common knows nothing of CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace collex {

// Throws std::runtime_error "collex: <what>: <error name> (<error text>)" unless
// `status` is success. It clears the runtime's last error first, so that a later
// cudaGetLastError (after a launch) does not report this failure a second time.
inline void throw_if_cuda_failed(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();
  throw std::runtime_error(std::string("collex: ") + what + ": " + cudaGetErrorName(status) + " (" +
                           cudaGetErrorString(status) + ")");
}

}  // namespace collex
