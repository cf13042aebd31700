// Reduction kernels: the only code (with convert) that interprets element bits.
// Entry points are type-erased (a dtype tag chooses a precompiled loop) so that the
// algorithms and transports above stay free of templates and compile once.
#pragma once

#include <cstddef>

#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"

namespace collex::kernels {

// dst[i] = a[i] OP b[i] for i < n (dst may be a). fp16/bf16 are computed in
// float32 and rounded once. Integer sum and prod wrap around, as NumPy's do.
// avg reduces as sum.
void reduce(void* dst, const void* a, const void* b, std::size_t n, DType dtype, ReduceOp op);

// As reduce(), then dst /= divisor when divisor != 1 (an average's last step),
// for results nobody reads again soon (the large pieces of a big collective):
// float32 sums bypass the cache (streaming stores, with the division fused),
// which saves the read of every line written. Other dtypes and ops reduce and
// divide as usual.
void reduce_streaming(void* dst, const void* a, const void* b, std::size_t n, DType dtype, ReduceOp op, double divisor);

// dst[i] = dst[i] OP src[i].
inline void reduce_into(void* dst, const void* src, std::size_t n, DType dtype, ReduceOp op) {
  reduce(dst, dst, src, n, dtype, op);
}

// dst[i] = dst[i] / divisor, computed in the dtype's accumulation type (float32 for
// fp16/bf16). Used once on the final sum to make an average. Floats only.
void divide(void* dst, std::size_t n, DType dtype, double divisor);

// The instruction set the loops were chosen for at start-up: "avx512", "avx2" or
// "generic". COLLEX_KERNELS=generic|avx2|avx512 forces one (if the CPU has it).
const char* kernel_isa();
// Chooses the loops again, for tests: returns false if the CPU lacks `isa`.
bool use_kernel_isa(const char* isa);

// One compiled copy of the loops per instruction set (see reduce_loops.h).
using ReduceFn = void (*)(void* dst, const void* a, const void* b, std::size_t n);
using StreamingFn = void (*)(void* dst, const void* a, const void* b, std::size_t n, double divisor);
namespace generic {
ReduceFn pick_reduce(DType dtype, ReduceOp op);
StreamingFn pick_reduce_streaming(DType dtype, ReduceOp op);
}  // namespace generic
namespace avx2 {
ReduceFn pick_reduce(DType dtype, ReduceOp op);
StreamingFn pick_reduce_streaming(DType dtype, ReduceOp op);
}  // namespace avx2
namespace avx512 {
ReduceFn pick_reduce(DType dtype, ReduceOp op);
StreamingFn pick_reduce_streaming(DType dtype, ReduceOp op);
}  // namespace avx512

}  // namespace collex::kernels
