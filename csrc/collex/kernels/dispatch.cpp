// Chooses, once at start-up, which instruction set's copy of the kernel loops
// runs (the best the CPU has, or COLLEX_KERNELS), and forwards the type-erased
// entry points of reduce.h, convert.h and copy.h to it.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "collex/common/time_parts.h"
#include "collex/kernels/convert.h"
#include "collex/kernels/copy.h"
#include "collex/kernels/reduce.h"

namespace collex::kernels {
namespace {

struct Loops {
  const char* isa;
  ReduceFn (*reduce)(DType, ReduceOp);
  StreamingFn (*reduce_streaming)(DType, ReduceOp);
  MaxAbsFn (*max_abs)();
  CompressFn (*compress)(DType);
  DecompressFn (*decompress)(DType);
  DivideCopyFn (*divide_copy)(DType);
  CopyFn (*copy_streaming)(CopyLoop);
};

#define COLLEX_LOOPS(ns)                                                                                            \
  Loops {                                                                                                           \
    #ns, &ns::pick_reduce, &ns::pick_reduce_streaming, &ns::pick_max_abs, &ns::pick_compress, &ns::pick_decompress, \
        &ns::pick_divide_copy, &ns::pick_copy_streaming                                                             \
  }
constexpr Loops kGeneric = COLLEX_LOOPS(generic);
#if defined(COLLEX_X86_KERNELS)
constexpr Loops kAvx2 = COLLEX_LOOPS(avx2);
constexpr Loops kAvx512 = COLLEX_LOOPS(avx512);
#endif
#undef COLLEX_LOOPS

bool cpu_has(const char* isa) {
  if (std::strcmp(isa, "generic") == 0) return true;
#if defined(COLLEX_X86_KERNELS)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (std::strcmp(isa, "avx2") == 0) return avx2;
  if (std::strcmp(isa, "avx512") == 0) {
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }
#endif
  return false;
}

const Loops* loops_for(const char* isa) {
  if (!cpu_has(isa)) return nullptr;
#if defined(COLLEX_X86_KERNELS)
  if (std::strcmp(isa, "avx512") == 0) return &kAvx512;
  if (std::strcmp(isa, "avx2") == 0) return &kAvx2;
#endif
  return &kGeneric;
}

const Loops* best() {
  const char* forced = std::getenv("COLLEX_KERNELS");
  if (forced != nullptr && *forced != '\0') {
    if (const Loops* l = loops_for(forced)) return l;
  }
  for (const char* isa : {"avx512", "avx2"}) {
    if (const Loops* l = loops_for(isa)) return l;
  }
  return &kGeneric;
}

std::atomic<const Loops*>& current() {
  static std::atomic<const Loops*> chosen{best()};
  return chosen;
}

CopyLoop default_copy_loop() {
#if defined(COLLEX_X86_KERNELS)
  __builtin_cpu_init();
  if (__builtin_cpu_is("intel")) return CopyLoop::kTwoPages;
#endif
  return CopyLoop::kOneStream;
}

std::atomic<CopyLoop>& current_copy_loop() {
  static std::atomic<CopyLoop> chosen{default_copy_loop()};
  return chosen;
}

}  // namespace

// The reductions read two operands and write one; a division reads and writes one.
void reduce(void* dst, const void* a, const void* b, std::size_t n, DType dtype, ReduceOp op) {
  if (n == 0) return;
  const time_parts::Timed timed(time_parts::Part::kReduce, 3 * n * dtype_size(dtype));
  current().load(std::memory_order_relaxed)->reduce(dtype, op)(dst, a, b, n);
}

void reduce_streaming(void* dst, const void* a, const void* b, std::size_t n, DType dtype, ReduceOp op,
                      double divisor) {
  if (n == 0) return;
  if (StreamingFn f = current().load(std::memory_order_relaxed)->reduce_streaming(dtype, op)) {
    const time_parts::Timed timed(time_parts::Part::kReduce, 3 * n * dtype_size(dtype));
    return f(dst, a, b, n, divisor);
  }
  reduce(dst, a, b, n, dtype, op);
  if (divisor != 1.0) divide(dst, n, dtype, divisor);
}

void divide(void* dst, std::size_t n, DType dtype, double divisor) { divide_copy(dst, dst, n, dtype, divisor); }

void copy_result(void* dst, const void* src, std::size_t bytes, std::size_t result_bytes, Stores stores) {
  const time_parts::Timed timed(time_parts::Part::kCopy, 2 * bytes);
  const bool stream =
      stores == Stores::kBySize ? std::max(bytes, result_bytes) >= kStreamingCopyBytes : stores == Stores::kStreaming;
  if (stream) {
    const CopyLoop loop = current_copy_loop().load(std::memory_order_relaxed);
    if (CopyFn f = current().load(std::memory_order_relaxed)->copy_streaming(loop)) return f(dst, src, bytes);
  }
  if (bytes > 0) std::memcpy(dst, src, bytes);
}

float max_abs(const float* src, const float* residual, std::size_t n) {
  return current().load(std::memory_order_relaxed)->max_abs()(src, residual, n);
}

void compress(void* wire, DType wire_dtype, const float* src, float* residual, std::size_t n, float scale) {
  if (n == 0) return;
  current().load(std::memory_order_relaxed)->compress(wire_dtype)(wire, src, residual, n, scale);
}

void decompress(float* dst, const void* wire, DType wire_dtype, std::size_t n, float factor) {
  if (n == 0) return;
  current().load(std::memory_order_relaxed)->decompress(wire_dtype)(dst, wire, n, factor);
}

void divide_copy(void* dst, const void* src, std::size_t n, DType dtype, double divisor) {
  if (n == 0) return;
  const time_parts::Timed timed(time_parts::Part::kReduce, 2 * n * dtype_size(dtype));
  if (DivideCopyFn f = current().load(std::memory_order_relaxed)->divide_copy(dtype)) f(dst, src, n, divisor);
}

const char* kernel_isa() { return current().load()->isa; }

CopyLoop copy_loop() { return current_copy_loop().load(); }

void use_copy_loop(CopyLoop loop) { current_copy_loop().store(loop); }

const char* copy_loop_name(CopyLoop loop) { return loop == CopyLoop::kTwoPages ? "two-pages" : "one-stream"; }

bool copy_loop_from_name(const std::string& name, CopyLoop* loop) {
  for (const CopyLoop l : {CopyLoop::kOneStream, CopyLoop::kTwoPages}) {
    if (name == copy_loop_name(l)) {
      *loop = l;
      return true;
    }
  }
  return false;
}

bool use_kernel_isa(const char* isa) {
  const Loops* l = loops_for(isa);
  if (l == nullptr) return false;
  current().store(l);
  return true;
}

}  // namespace collex::kernels
