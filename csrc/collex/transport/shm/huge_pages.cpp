#include "collex/transport/shm/huge_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "collex/transport/shm/process_maps.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; older C library headers lack the name
#endif

namespace collex::shm {
namespace {

// The system's policy for anonymous memory: "[never]" means the administrator
// turned huge pages off, which this code respects.
bool huge_pages_allowed() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string policy;
  if (!std::getline(f, policy)) return false;
  return policy.find("[never]") == std::string::npos;
}

// The size of one huge page, as the kernel maps it (2 MiB on x86-64).
std::uintptr_t huge_page_bytes() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
  unsigned long bytes = 0;
  if (!(f >> bytes) || bytes == 0 || (bytes & (bytes - 1)) != 0) bytes = 2ul << 20;
  return bytes;
}

}  // namespace

std::size_t back_with_huge_pages(const Span* spans, std::size_t n) {
  if (n == 0 || !huge_pages_allowed()) return 0;
  const std::uintptr_t huge = huge_page_bytes();
  std::set<std::uintptr_t> regions;
  for (std::size_t i = 0; i < n; ++i) {
    if (spans[i].bytes == 0) continue;
    const std::uintptr_t last = spans[i].address + spans[i].bytes - 1;
    for (std::uintptr_t r = spans[i].address / huge * huge; r <= last; r += huge) regions.insert(r);
  }
  const std::vector<AddressRange> anonymous = anonymous_ranges();
  std::set<std::uintptr_t> collapsed;
  for (std::uintptr_t r : regions) {
    if (!inside(anonymous, r, r + huge)) continue;
    void* at = reinterpret_cast<void*>(r);
    // The mark first: it also lets a region over two neighbouring mappings
    // (one that NumPy marked, one it did not) become one mapping to collapse.
    if (madvise(at, huge, MADV_HUGEPAGE) != 0) continue;
    if (madvise(at, huge, MADV_COLLAPSE) == 0) collapsed.insert(r);
  }
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uintptr_t begin = spans[i].address, end = begin + spans[i].bytes;
    for (std::uintptr_t r = begin / huge * huge; r < end; r += huge) {
      if (collapsed.count(r) != 0) bytes += std::min(end, r + huge) - std::max(begin, r);
    }
  }
  return bytes;
}

}  // namespace collex::shm
