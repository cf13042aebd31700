// Which gradients travel together: the assignment of gradients to fusion
// buckets, pure arithmetic with no memory or communication, so that it can be
// tested alone and computed alike on every rank.
#pragma once

#include <cstddef>
#include <vector>

#include "collex/common/dtype.h"

namespace collex::fusion {

struct Gradient {
  std::size_t count = 0;  // elements
  DType dtype = DType::kFloat32;
};

struct Member {
  std::size_t gradient = 0;  // index in registration order
  std::size_t offset = 0;    // first element in the bucket
};

struct Bucket {
  DType dtype = DType::kFloat32;
  std::vector<Member> members;  // in the order backward produces them
  std::size_t count = 0;        // elements in all
};

// Walks the gradients in reverse registration order (the order backward makes
// them final) and fills one open bucket per dtype, closing it when the next
// gradient would take it past its cap: `first_cap_bytes` for the first bucket
// made (so that communication starts early in the backward pass), `cap_bytes`
// for the others. A gradient is never split: one larger than the cap gets a
// bucket of its own. Buckets are numbered in the order they were opened, which
// is the order they are launched in.
std::vector<Bucket> assign_buckets(const std::vector<Gradient>& gradients, std::size_t cap_bytes,
                                   std::size_t first_cap_bytes);

}  // namespace collex::fusion
