// Which element arithmetic a call of the lane protocol is instantiated with,
// shared by the kernels' launch and the CPU stand-in: a reduction's own dtype
// and operator; for a collective that only moves bytes, bytes (any dtype and
// operator would do, and avg of an integer dtype, which has no arithmetic, must
// still move).
#pragma once

#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"
#include "collex/transport/cuda_ipc/lanes.h"
#include "collex/transport/cuda_ipc/turns.h"

namespace collex::ipc {

struct LaneElements {
  DType dtype;
  ReduceOp op;
};

inline LaneElements lane_elements(Collective kind, DType dtype, ReduceOp op) {
  if (moves_only(kind)) return {DType::kUInt8, ReduceOp::kSum};
  return {dtype, op};
}

// A turn's kernels (turns.h): staging only copies; reading as the lanes do.
inline LaneElements turn_elements(Collective kind, TurnPart which, DType dtype, ReduceOp op) {
  return which == TurnPart::kStage ? LaneElements{DType::kUInt8, ReduceOp::kSum} : lane_elements(kind, dtype, op);
}

}  // namespace collex::ipc
