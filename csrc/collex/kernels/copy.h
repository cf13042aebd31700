// Copies of a collective's results, which nobody reads again soon.
#pragma once

#include <cstddef>

namespace collex::kernels {

// Copies of at least this many bytes bypass the cache (streaming stores): far
// larger than the caches, the copy would be evicted before anyone read it.
constexpr std::size_t kStreamingCopyBytes = 8 * 1024 * 1024;

// memcpy(dst, src, bytes) for ranges that do not overlap, with streaming stores
// when the whole result this copy is part of (`result_bytes`; 0: just these
// bytes) has kStreamingCopyBytes or more: they skip the read of every line
// written, a third of a large copy's memory traffic. The C library makes that
// choice from the cache size the system reports, which a virtual machine may
// overstate: on the project's VM it streamed only from 192 MiB, and copies of
// 8-128 MiB ran at 7-11 GB/s against 11-17.5 GB/s streamed.
void copy_result(void* dst, const void* src, std::size_t bytes, std::size_t result_bytes = 0);

// One compiled copy of the streaming loop per instruction set (see copy_loops.h);
// null where it has none.
using CopyFn = void (*)(void* dst, const void* src, std::size_t bytes);
namespace generic {
CopyFn pick_copy_streaming();
}
namespace avx2 {
CopyFn pick_copy_streaming();
}
namespace avx512 {
CopyFn pick_copy_streaming();
}

}  // namespace collex::kernels
