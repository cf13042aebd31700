// This process's private anonymous memory as /proc/self/maps lists it: what the
// shared-memory transport may re-back (huge pages, shared pages) without
// touching a file's pages, shared memory or a stack.
#pragma once

#include <cstdint>
#include <vector>

namespace collex::shm {

struct AddressRange {
  std::uintptr_t begin, end;
};

// This process's private, writable, anonymous mappings (no file behind them:
// the heap and mmap'd arrays), in address order, adjacent ones joined.
std::vector<AddressRange> anonymous_ranges();

// The mappings of the file with inode `inode` (a memfd's), in address order.
std::vector<AddressRange> ranges_of_inode(std::uint64_t inode);

// Whether [begin, end) lies wholly inside one of `ranges` (sorted, as above).
bool inside(const std::vector<AddressRange>& ranges, std::uintptr_t begin, std::uintptr_t end);

}  // namespace collex::shm
