#include "collex/transport/shm/huge_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; older C library headers lack the name
#endif

namespace collex::shm {
namespace {

struct Range {
  std::uintptr_t begin, end;
};

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

// This process's private, writable, anonymous mappings (no file behind them:
// the heap and mmap'd arrays), adjacent ones joined: only regions lying wholly
// inside one of these are touched, never a file's pages, shared memory or a stack.
std::vector<Range> anonymous_ranges() {
  std::vector<Range> ranges;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long begin = 0, end = 0, inode = 0;
    char perms[8] = {};
    int name_at = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %*s %*s %lu %n", &begin, &end, perms, &inode, &name_at) < 4) continue;
    const std::string name = name_at > 0 ? line.substr(static_cast<std::size_t>(name_at)) : "";
    const bool anonymous = inode == 0 && (name.empty() || name == "[heap]");
    if (!anonymous || std::strncmp(perms, "rw", 2) != 0 || perms[3] != 'p') continue;
    if (!ranges.empty() && ranges.back().end == begin) {
      ranges.back().end = end;
    } else {
      ranges.push_back(Range{begin, end});
    }
  }
  return ranges;
}

bool inside(const std::vector<Range>& ranges, std::uintptr_t begin, std::uintptr_t end) {
  auto after = std::upper_bound(ranges.begin(), ranges.end(), begin,
                                [](std::uintptr_t a, const Range& r) { return a < r.begin; });
  if (after == ranges.begin()) return false;
  const Range& r = *(after - 1);
  return r.begin <= begin && end <= r.end;
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
  const std::vector<Range> anonymous = anonymous_ranges();
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
