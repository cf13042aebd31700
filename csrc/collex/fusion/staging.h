// How a bucket reduced where its gradients lie (Communicator::allreduce_segments)
// is laid out: which parts of its gradients the peers read in place, and which
// from copies in the bucket's staging area (its part of the fusion buffers),
// because they lie on pages the peers do not map: whole small arrays, and the
// first and last pages of a large array moved onto shared pages (its
// allocator's bookkeeping keeps them private). Those would otherwise be read
// through the kernel, a system call each.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "collex/common/buffer.h"
#include "collex/common/memory.h"
#include "collex/fusion/bucketer.h"

namespace collex::fusion {

// Which parts of one gradient go through the staging area.
struct Staging {
  // When ranks see it differently, the lowest wins: a gradient one rank must
  // stage whole is staged whole everywhere.
  enum Mode : std::int32_t { kWhole = 0, kNone = 1, kEdges = 2 };
  Mode mode = kEdges;
  std::size_t head = 0, tail = 0;  // kEdges: its first and last elements staged (maybe none)

  // Elements of a gradient of `count` elements that are staged.
  std::size_t staged(std::size_t count) const {
    return mode == kWhole ? count : mode == kEdges ? std::min(head + tail, count) : 0;
  }
};

// What this rank would stage of `gradient`, whose bytes on pages its peers map
// are `shared` (Communicator::shared_parts).
Staging staging_of(const Buffer& gradient, Span shared);

// The ranks agree on every gradient's staging through one all-reduce (kMin) of
// int32 words: kWordsPerGradient for each, written by to_words and read back by from_words.
constexpr std::size_t kWordsPerGradient = 3;
void to_words(const Staging& s, std::int32_t* words);
Staging from_words(const std::int32_t* words);

// A segmented bucket's two tables (direct.h, allreduce_segments): `published`,
// where peers read each part of its gradients (cut alike on every rank: the
// staged parts lie at consecutive places of `area`, in the bucket's order), and
// `home`, where those parts lie here; null when nothing is staged.
struct SegmentTables {
  std::shared_ptr<const std::vector<Span>> published, home;
};
SegmentTables lay_out(const Bucket& bucket, const std::vector<Buffer>& gradients, const std::vector<Staging>& staging,
                      char* area);

}  // namespace collex::fusion
