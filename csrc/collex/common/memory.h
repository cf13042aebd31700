// What the layers above a transport say about memory without knowing how it is
// shared: a range of bytes in some rank's memory, and a buffer every rank of a
// node can read in place (made by a window, used by fusion buffers and the
// algorithms that read peers directly).
#pragma once

#include <cstddef>
#include <cstdint>

namespace collex {

// A range of bytes in some rank's memory.
struct Span {
  std::uintptr_t address = 0;
  std::size_t bytes = 0;
};

// Memory every rank of a node's window can read in place: each rank's part of
// a collectively made buffer. Unmapped when the last reference goes.
class SymmetricMemory {
 public:
  virtual ~SymmetricMemory() = default;
  virtual void* data() const = 0;         // this rank's part
  virtual std::size_t bytes() const = 0;  // its size
};

}  // namespace collex
