// The CPU stand-in of the CUDA IPC all-reduce: the lane protocol (lanes.h) on
// host memory, every (rank, lane) a thread of this process, with the element
// arithmetic of the CUDA kernels (kernels/combine.h). It exists so that CI,
// which has no GPU, tests the protocol's chunking, offsets, sequence numbers
// and flags on the same code the kernels run.
#pragma once

#include <cstddef>
#include <vector>

#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"
#include "collex/transport/cuda_ipc/lanes.h"

namespace collex::ipc {

struct HostLanesOptions {
  int lanes = 1;
  std::size_t staging_bytes = 1 << 20;  // per rank, rounded down to a multiple of kVector
  Shots shots = Shots::kTwo;
  double timeout_s = 30.0;
  int absent_rank = -1;  // a rank whose threads never start (tests of the timeout)
};

// Runs inputs.size() all-reduces back to back, each over as many ranks as
// inputs[call] has pointers: rank r reduces inputs[call][r] (`bytes` of
// `dtype`) with the others into outputs[call][r]. Throws CollectiveTimeout
// naming the lane and rank waited for when a flag does not arrive in time, and
// InvalidArgument for a rank or lane count beyond the protocol's limits.
void run_host_lanes(const std::vector<std::vector<const void*>>& inputs, const std::vector<std::vector<void*>>& outputs,
                    std::size_t bytes, DType dtype, ReduceOp op, const HostLanesOptions& options);

}  // namespace collex::ipc
