#include "collex/kernels/reduce.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace collex::kernels {
namespace {

struct Loops {
  const char* isa;
  ReduceFn (*reduce)(DType, ReduceOp);
  DivideFn (*divide)(DType);
};

constexpr Loops kGeneric{"generic", &generic::pick_reduce, &generic::pick_divide};
#if defined(COLLEX_X86_KERNELS)
constexpr Loops kAvx2{"avx2", &avx2::pick_reduce, &avx2::pick_divide};
constexpr Loops kAvx512{"avx512", &avx512::pick_reduce, &avx512::pick_divide};
#endif

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

}  // namespace

void reduce(void* dst, const void* a, const void* b, std::size_t n, DType dtype, ReduceOp op) {
  if (n == 0) return;
  current().load(std::memory_order_relaxed)->reduce(dtype, op)(dst, a, b, n);
}

void divide(void* dst, std::size_t n, DType dtype, double divisor) {
  if (DivideFn f = current().load(std::memory_order_relaxed)->divide(dtype)) f(dst, n, divisor);
}

const char* kernel_isa() { return current().load()->isa; }

bool use_kernel_isa(const char* isa) {
  const Loops* l = loops_for(isa);
  if (l == nullptr) return false;
  current().store(l);
  return true;
}

}  // namespace collex::kernels
