// Reduction operators. avg is sum followed by one division by the rank count,
// applied once by whichever rank owns the final value, so all ranks agree bitwise.
#pragma once

#include <cstdint>

namespace collex {

// The numeric values are part of the binding contract (python/collex/_api.py).
enum class ReduceOp : std::uint8_t { kSum = 0, kProd = 1, kMin = 2, kMax = 3, kAvg = 4 };

// Every operator, in code order.
inline constexpr ReduceOp kReduceOps[] = {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMin, ReduceOp::kMax,
                                          ReduceOp::kAvg};

const char* reduce_op_name(ReduceOp op);
bool reduce_op_from_int(int code, ReduceOp* out);

// The operator applied pairwise inside reduction steps (avg reduces as sum).
constexpr ReduceOp pairwise_op(ReduceOp op) { return op == ReduceOp::kAvg ? ReduceOp::kSum : op; }

}  // namespace collex
