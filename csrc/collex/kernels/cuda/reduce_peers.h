// The CUDA reduction kernel: combines the same range of several device buffers
// (the ranks' staging buffers, mapped into this process by CUDA IPC) into one.
// Like the CPU kernels, the only CUDA code that interprets element bits.
#pragma once

#include <cstddef>
#include <cstdint>

#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"

namespace collex::cuda {

constexpr int kMaxPeers = 32;

struct Sources {
  const void* at[kMaxPeers];  // one buffer per rank, in rank order
  int count = 0;
};

// out[i] = src[0][i] OP src[1][i] OP ... for i < n, queued on `stream` of
// `device`. Ranks are combined in rank order, so every rank computing it
// gets the same bits; fp16/bf16 accumulate in float32 and are rounded once;
// integers wrap like NumPy's; avg divides the sum by the rank count at the end.
// Throws with the runtime's message when the launch fails.
void reduce_peers(void* out, const Sources& src, std::size_t n, DType dtype, ReduceOp op, std::uintptr_t stream,
                  int device);

}  // namespace collex::cuda
