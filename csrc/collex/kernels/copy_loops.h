// The streaming copy, compiled once per instruction set: included by
// loops_<isa>.cpp with COLLEX_KERNEL_ISA set (see reduce_loops.h).
#include <cstdint>
#include <cstring>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "collex/kernels/copy.h"

namespace collex::kernels::COLLEX_KERNEL_ISA {
namespace {

#if defined(__AVX2__)
// 256-bit streaming stores, four per step. (The AVX-512 build runs the same
// loop: wider stores would not move memory any faster.)
void copy_streaming(void* dst_v, const void* src_v, std::size_t bytes) {
  char* dst = static_cast<char*>(dst_v);
  const char* src = static_cast<const char*>(src_v);
  constexpr std::size_t kVector = 32, kStep = 4 * kVector;
  // Streaming stores need aligned addresses: the head goes the ordinary way.
  std::size_t i = (kVector - reinterpret_cast<std::uintptr_t>(dst) % kVector) % kVector;
  if (i > bytes) i = bytes;
  std::memcpy(dst, src, i);
  for (; i + kStep <= bytes; i += kStep) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + kVector));
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 2 * kVector));
    const __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i + 3 * kVector));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), a);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + kVector), b);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 2 * kVector), c);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i + 3 * kVector), d);
  }
  _mm_sfence();  // order the streaming stores before whatever signals that they are done
  std::memcpy(dst + i, src + i, bytes - i);
}
#endif

}  // namespace

CopyFn pick_copy_streaming() {
#if defined(__AVX2__)
  return &copy_streaming;
#else
  return nullptr;
#endif
}

}  // namespace collex::kernels::COLLEX_KERNEL_ISA
