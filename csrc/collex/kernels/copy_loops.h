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
constexpr std::size_t kLine = 64, kStep = 128, kPage = 4096;

// Where the loop is CopyLoop::kTwoPages, copies of at least this many bytes
// take two pages at a time (below). From 4 MiB first; from 16 KiB the
// reducer's bucketed all-reduce of ResNet-50's gradients, whose pieces are
// mostly smaller, took 1.08-1.15x the flat ideal against 1.17-1.29x (training
// bench on the Intel host, four launches each way); mid-size collectives moved
// within the noise.
constexpr std::size_t kTwoPagesFrom = 16 * 1024;

__m256i load(const char* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
void store(char* p, __m256i v) { _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v); }

// The copy from `done` up to the last whole pair of pages: per step, the next
// lines of both pages are prefetched, 128 bytes of each loaded, then both
// stored. On the project's Intel VM the one-stream loop below copied 32 MiB
// at 12-15 GB/s where the C library's large memcpy (which works this way)
// reached 19-23; a two-page loop that stored each page's bytes right after
// loading them ran at 4-5 GB/s. Returns where it stopped. (Prefetches past
// the end of `src` are hints and never fault.)
std::size_t copy_two_pages(char* dst, const char* src, std::size_t done, std::size_t bytes) {
  for (; done + 2 * kPage <= bytes; done += 2 * kPage) {
    const char* s = src + done;
    char* d = dst + done;
    for (std::size_t j = 0; j < kPage; j += kStep) {
      for (std::size_t ahead = kStep; ahead < 3 * kStep; ahead += kLine) {
        _mm_prefetch(s + j + ahead, _MM_HINT_T0);
        _mm_prefetch(s + kPage + j + ahead, _MM_HINT_T0);
      }
      const __m256i a0 = load(s + j), a1 = load(s + j + 32), a2 = load(s + j + 64), a3 = load(s + j + 96);
      const char* t = s + kPage + j;
      const __m256i b0 = load(t), b1 = load(t + 32), b2 = load(t + 64), b3 = load(t + 96);
      store(d + j, a0);
      store(d + j + 32, a1);
      store(d + j + 64, a2);
      store(d + j + 96, a3);
      char* u = d + kPage + j;
      store(u, b0);
      store(u + 32, b1);
      store(u + 64, b2);
      store(u + 96, b3);
    }
  }
  return done;
}

// 256-bit streaming stores, four per step. (The AVX-512 build runs the same
// loops: wider stores would not move memory any faster; on the AMD host 512-bit
// ones copied 32 MiB at 20-25 GB/s against 34-36.)
template <bool kTwoPages>
void copy_streaming(void* dst_v, const void* src_v, std::size_t bytes) {
  char* dst = static_cast<char*>(dst_v);
  const char* src = static_cast<const char*>(src_v);
  // Streaming stores need aligned addresses, and whole cache lines: the head
  // up to a line goes the ordinary way. (With the destination half a line off,
  // as a NumPy array's data often is, the two-page loop ran at 7 GB/s.)
  std::size_t i = (kLine - reinterpret_cast<std::uintptr_t>(dst) % kLine) % kLine;
  if (i > bytes) i = bytes;
  std::memcpy(dst, src, i);
  if (kTwoPages && bytes >= kTwoPagesFrom) i = copy_two_pages(dst, src, i, bytes);
  for (; i + kStep <= bytes; i += kStep) {
    const __m256i a = load(src + i), b = load(src + i + 32), c = load(src + i + 64), d = load(src + i + 96);
    store(dst + i, a);
    store(dst + i + 32, b);
    store(dst + i + 64, c);
    store(dst + i + 96, d);
  }
  _mm_sfence();  // order the streaming stores before whatever signals that they are done
  std::memcpy(dst + i, src + i, bytes - i);
}
#endif

}  // namespace

CopyFn pick_copy_streaming(CopyLoop loop) {
#if defined(__AVX2__)
  return loop == CopyLoop::kTwoPages ? &copy_streaming<true> : &copy_streaming<false>;
#else
  (void)loop;
  return nullptr;
#endif
}

}  // namespace collex::kernels::COLLEX_KERNEL_ISA
