// Transparent huge pages under memory that peers read in place every step.
//
// A peer reads a rank's ordinary memory through cross-memory attach, which pins
// and copies it a page at a time. On 4 KiB pages that per-page work is what made
// a reducer's many small gradients slower than one large array (NumPy asks for
// huge pages only for arrays of 4 MiB or more): process_vm_readv of 32 MiB in
// 1 MiB pieces took 2.1-2.4x as long from 4 KiB pages as from huge ones here
// (bench/cross_copy.py).
#pragma once

#include <cstddef>

#include "collex/common/memory.h"

namespace collex::shm {

// Backs the regions of one huge page (2 MiB on x86-64; the kernel's
// hpage_pmd_size) that `spans` touch with transparent huge pages where
// the kernel allows it: regions lying wholly in this process's private
// anonymous memory (the heap, NumPy's mappings), when the system's policy is
// not "never". Contents, addresses and protections stay as they are; the
// regions are marked MADV_HUGEPAGE (as NumPy marks its large arrays) and
// collapsed now (MADV_COLLAPSE, Linux 6.1 and later; older kernels refuse it and
// keep only the mark, which lets their background collapsing, khugepaged, do it
// later). Returns how many bytes of `spans` lie in regions
// on huge pages afterwards, whether this call put them there or they were
// already. Never throws.
std::size_t back_with_huge_pages(const Span* spans, std::size_t n);

}  // namespace collex::shm
