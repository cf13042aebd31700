#include "collex/fusion/staging.h"

#include <algorithm>
#include <limits>

namespace collex::fusion {
namespace {

// Gradients under this size that peers could not read mostly in place (most of
// their bytes on private pages: every array under 256 KiB) are staged whole.
// On ResNet-50 peers' reads of them through the kernel took about 1 ms a step,
// at 6-7 GB/s, for 3 MB (bench/README.md). Larger ones stay where they are:
// read through the kernel from huge pages, they cost about what staging would.
constexpr std::size_t kWholeBelowBytes = 1 << 20;

// A private first or last part of at most this size is staged (a page is
// 4 KiB, and pages are what stay private); a larger one is read where it lies.
constexpr std::size_t kEdgeBytes = 64 * 1024;

std::int32_t word(std::size_t n) {
  return static_cast<std::int32_t>(std::min<std::size_t>(n, std::numeric_limits<std::int32_t>::max()));
}

}  // namespace

Staging staging_of(const Buffer& gradient, Span shared) {
  const std::size_t bytes = gradient.bytes(), es = dtype_size(gradient.dtype);
  const bool small = bytes < kWholeBelowBytes;
  if (bytes == 0 || shared.bytes == bytes) return {};  // nothing private
  if (small && 2 * shared.bytes < bytes) return {Staging::kWhole};
  const auto begin = reinterpret_cast<std::uintptr_t>(gradient.data);
  // Elements that lie partly on a private page count as private.
  const std::size_t head = shared.bytes == 0 ? bytes : shared.address - begin;
  const std::size_t tail = shared.bytes == 0 ? 0 : begin + bytes - (shared.address + shared.bytes);
  if (head > kEdgeBytes || tail > kEdgeBytes) return {small ? Staging::kWhole : Staging::kNone};
  return {Staging::kEdges, (head + es - 1) / es, (tail + es - 1) / es};
}

// The mode as is, the edges negated: the minimum over ranks keeps the largest.
void to_words(const Staging& s, std::int32_t* words) {
  words[0] = s.mode;
  words[1] = -word(s.head);
  words[2] = -word(s.tail);
}

Staging from_words(const std::int32_t* words) {
  Staging s{static_cast<Staging::Mode>(words[0])};
  if (s.mode == Staging::kEdges) {
    s.head = static_cast<std::size_t>(-static_cast<std::int64_t>(words[1]));
    s.tail = static_cast<std::size_t>(-static_cast<std::int64_t>(words[2]));
  }
  return s;
}

SegmentTables lay_out(const Bucket& bucket, const std::vector<Buffer>& gradients, const std::vector<Staging>& staging,
                      char* area) {
  auto published = std::make_shared<std::vector<Span>>();
  auto home = std::make_shared<std::vector<Span>>();
  bool last_staged = false, any = false;  // the last part, any part went into `area`
  // One part of a gradient, where it lies and where peers read it.
  auto add = [&](const Buffer& g, std::size_t first, std::size_t count, bool staged) {
    if (count == 0) return;
    const std::size_t bytes = count * dtype_size(g.dtype);
    const Span here{reinterpret_cast<std::uintptr_t>(g.bytes_at(first)), bytes};
    home->push_back(here);
    if (!staged) {
      published->push_back(here);
    } else if (last_staged) {  // next to the last copy: one segment (alike on every rank)
      published->back().bytes += bytes;
    } else {
      published->push_back(Span{reinterpret_cast<std::uintptr_t>(area), bytes});
    }
    if (staged) area += bytes;
    last_staged = staged;
    any = any || staged;
  };
  for (const Member& m : bucket.members) {
    const Buffer& g = gradients[m.gradient];
    const Staging& s = staging[m.gradient];
    if (s.mode == Staging::kEdges && s.head + s.tail < g.count) {
      add(g, 0, s.head, true);
      add(g, s.head, g.count - s.head - s.tail, false);
      add(g, g.count - s.tail, s.tail, true);
    } else {
      add(g, 0, g.count, s.staged(g.count) > 0);
    }
  }
  return {std::move(published), any ? std::move(home) : nullptr};
}

}  // namespace collex::fusion
