// Reduction kernels: the only code (with convert) that interprets element bits.
// Entry points are type-erased (a dtype tag chooses a precompiled loop) so that the
// algorithms and transports above stay free of templates and compile once.
#pragma once

#include <cstddef>

#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"

namespace collex::kernels {

// dst[i] = dst[i] OP src[i] for i < n. fp16/bf16 are computed in float32 and
// rounded once. Integer sum and prod wrap around, as NumPy's do. avg reduces as sum.
void reduce_into(void* dst, const void* src, std::size_t n, DType dtype, ReduceOp op);

// dst[i] = dst[i] / divisor, computed in the dtype's accumulation type (float32 for
// fp16/bf16). Used once on the final sum to make an average. Floats only.
void divide(void* dst, std::size_t n, DType dtype, double divisor);

}  // namespace collex::kernels
