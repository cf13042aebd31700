// Copies of a collective's results, which nobody reads again soon.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace collex::kernels {

// Results of at least this many bytes are copied with streaming stores, which
// bypass the cache. On the project's VM an 8 MiB copy ran 1.4-1.8x faster that
// way, and all-gathers of 4 MiB blocks went from 0.80-0.84x MPICH to 0.97-1.04x
// when the threshold came down from 16 MiB; the price is that a consumer
// reading the result right away finds it in memory rather than in cache.
constexpr std::size_t kStreamingCopyBytes = 8 * 1024 * 1024;

// How a collective writes its results (the reductions and the copies of them):
// chosen by size (kBySize: streaming for copies from kStreamingCopyBytes, for
// reductions from their own threshold), or as the collective decided while
// running (algorithms/copy_ways.h). Where the cores pass data between their
// caches slowly, results that a peer reads next are faster streamed to memory
// even when they would fit in a cache: on the project's VM at such times an
// 8 MiB all-reduce took 3.1-3.4 ms with ordinary stores and 0.6 ms streamed
// (and 0.4 ms against 0.6 ms the other way round at other times).
enum class Stores : std::uint8_t { kBySize, kOrdinary, kStreaming };

// memcpy(dst, src, bytes) for ranges that do not overlap, with streaming stores
// as `stores` says; by size, when the whole result this copy is part of
// (`result_bytes`; 0: just these bytes) has kStreamingCopyBytes or more: they
// skip the read of every line written, a third of a large copy's memory
// traffic. The C library makes that choice from the cache size the system
// reports, which a virtual machine may overstate: on the project's VM it
// streamed only from 192 MiB, and copies of 8-128 MiB ran at 7-11 GB/s against
// 11-17.5 GB/s streamed.
void copy_result(void* dst, const void* src, std::size_t bytes, std::size_t result_bytes = 0,
                 Stores stores = Stores::kBySize);

// How a streaming copy walks its source. The C library's large memcpy on Intel
// CPUs loads from two pages at a time before it stores, and collex's copy does
// the same there (kTwoPages): on the project's Intel VM that copied 32 MiB at
// 23-25 GB/s against 16-19 in one stream. On the AMD EPYC VM it is the other way
// round: 31-46 GB/s in two pages against 33-62 in one stream (two
// processes copying at once, 32 and 64 MiB, shared and private memory).
enum class CopyLoop : std::uint8_t { kOneStream, kTwoPages };

// The loop in use: COLLEX_COPY_LOOP as the communicator set it (use_copy_loop),
// else two pages on Intel CPUs and one stream on others.
CopyLoop copy_loop();
void use_copy_loop(CopyLoop loop);
const char* copy_loop_name(CopyLoop loop);  // "one-stream" or "two-pages"
// The loop of that name (COLLEX_COPY_LOOP's values but "auto"); false for another name.
bool copy_loop_from_name(const std::string& name, CopyLoop* loop);

// One compiled copy of the streaming loops per instruction set (see
// copy_loops.h); null where it has none.
using CopyFn = void (*)(void* dst, const void* src, std::size_t bytes);
namespace generic {
CopyFn pick_copy_streaming(CopyLoop loop);
}
namespace avx2 {
CopyFn pick_copy_streaming(CopyLoop loop);
}
namespace avx512 {
CopyFn pick_copy_streaming(CopyLoop loop);
}

}  // namespace collex::kernels
