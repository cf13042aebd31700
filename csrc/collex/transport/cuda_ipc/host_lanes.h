// The CPU stand-in of the CUDA IPC collectives: the lane protocol (lanes.h) on
// host memory, each lane a thread, with the element arithmetic of the CUDA
// kernels (kernels/combine.h). It exists so that CI, which has no GPU, tests
// the protocol's chunking, offsets, sequence numbers and flags on the same code
// the kernels run: with every rank a set of threads of one process
// (run_host_lanes), or with ranks as processes whose staging buffers and flags
// lie in shared memory (run_host_lane_rank, one rank's part, as one kernel).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"
#include "collex/transport/cuda_ipc/lanes.h"

namespace collex::ipc {

struct HostLanesOptions {
  Collective kind = Collective::kAllReduce;
  int root = 0;
  int lanes = 1;
  std::size_t staging_bytes = 1 << 20;  // per rank, rounded down to a multiple of kVector
  Shots shots = Shots::kTwo;            // all-reduce and reduce
  double timeout_s = 30.0;
  int absent_rank = -1;  // a rank whose threads never start (tests of the timeout)
  bool direct = false;   // peers read each other's arrays in place (Call::direct)
};

// Runs inputs.size() collectives of options.kind back to back, each over as
// many ranks as inputs[call] has pointers: rank r's input inputs[call][r], its
// output outputs[call][r], `bytes` as in Call (of `dtype`; reduced with `op`).
// Throws CollectiveTimeout naming the lane and ranks when a flag does not
// arrive in time, CollectiveMismatch when ranks' calls differ (never here: they
// share `options`; the processes' stand-in can), and InvalidArgument for arguments outside the protocol's limits.
void run_host_lanes(const std::vector<std::vector<const void*>>& inputs, const std::vector<std::vector<void*>>& outputs,
                    std::size_t bytes, DType dtype, ReduceOp op, const HostLanesOptions& options);

// One rank's part of one collective, as its kernel would run it: peers.lanes
// threads, returning when all are done. `peers` points into memory the ranks
// share. A lane that waits longer than `timeout_s` fills in `status` and stops,
// as on the GPU; nothing is thrown for it.
void run_host_lane_rank(const Peers& peers, const Call& call, DType dtype, ReduceOp op, double timeout_s,
                        LaneStatus* status);

// Throws InvalidArgument, as from `who`, where `dtype` and `op` have no
// element arithmetic (avg of an integer dtype).
void check_supported(DType dtype, ReduceOp op, const char* who);

// A call_signature in words: collective, size, dtype, operator, root, way.
std::string describe_signature(std::uint64_t signature);

// What a filled-in LaneStatus says, as an error's text (a disagreement names
// both calls: collective, size, dtype, operator, root).
std::string describe_failure(const LaneStatus& status, double timeout_s);

}  // namespace collex::ipc
