#include "collex/algorithms/copy_ways.h"

#include <algorithm>
#include <cstdio>

namespace collex {
namespace {

// Operations per window (the ranks exchange their times at the end of each;
// the exchange costs about as much as a small all-reduce, a few microseconds,
// against mid-size operations of 10 us or more). A class's first window is
// short, so that the first probe comes early in a loop, yet past its first
// calls, which pay for touching fresh pages whichever way they take (the first
// two all-reduces of a loop took up to 30x as long as the third): those go
// untimed. So do the calls around the fourth, where the bindings move a plain
// array onto shared pages (bindings/sharing.cpp) and the peers then map those
// pages and touch each once: timed, they made reading in place look slow, and
// all-gathers of 4 MiB that came right after larger broadcasts in a bench
// sweep took the slots (0.68-0.75x MPICH) until their next probe hundreds of
// calls later.
constexpr std::uint64_t kFirstWindow = 12, kWindow = 32, kUntimedFirst = 6;
// A probe is this many operations the other way, of which all but the first
// are timed (on the project's VM the first all-reduce after a switch to
// attaching took up to 1.5x as long as the next ones). The mean counts, not the
// best: a broadcast's receiver that finds the data already there finishes in a
// copy's time, so on that VM the best call of a window ran 3x faster than the
// loop around it.
constexpr std::uint64_t kProbeOps = 4;
// Operations from one probe to the next: short after a switch, doubling each
// time the choice holds, and never so short that probing the slower way (as
// slow as it last measured) would cost more than kProbeShare of the class's
// time: after a probe that ran 8x slower the next comes 1400 operations later
// rather than 16 (it would have doubled a bench repeat of 33 calls).
constexpr std::uint64_t kFirstInterval = 16, kMaxInterval = 4096;
constexpr double kProbeShare = 0.02;
// A probe comes at once when the way in use has slowed this much since it was
// chosen: on the project's VM the slots slowed 3-4x within a minute, and a
// probe scheduled far ahead would have left them in use.
constexpr double kSlowedBy = 1.5;
// The other way takes over only when it was this much faster: a near tie keeps
// the way in use rather than flipping on noise.
constexpr double kMargin = 0.9;
// Until the first probe, classes up to this size stream through the slots (on
// every machine measured so far they won below it on some day).
constexpr std::size_t kSlotsFirstUpTo = 1024 * 1024;

// Until the first probe, the results of operations that read peers in place
// are written with ordinary stores up to this size, streamed above it (as by
// size: copies stream from 8 MiB, reductions from 16 MiB).
constexpr std::size_t kOrdinaryResultsFirstUpTo = 8 * 1024 * 1024;

const char* kind_name(int kind) {
  constexpr const char* kNames[] = {"all-reduce",         "broadcast",
                                    "all-gather",         "staged all-reduce",
                                    "staged broadcast",   "staged reduce",
                                    "staged all-gather",  "staged reduce-scatter",
                                    "all-reduce results", "segmented all-reduce results"};
  return kNames[kind];
}

}  // namespace

// The two ways, in the words of a kind: mid-size copies go through the slots or
// attach; staged operations write their slots, and operations that read in
// place their results, with ordinary or streaming stores.
const char* CopyWays::way_name(int kind, bool first) {
  if (kind < kMidsizeKinds) return first ? "slots" : "attach";
  return first ? "ordinary stores" : "streaming stores";
}

namespace {

std::string size_label(int size_class) {
  const std::size_t bytes = std::size_t{1} << size_class;
  char text[32];
  if (bytes >= 1024 * 1024) {
    std::snprintf(text, sizeof text, "%zu MiB", bytes >> 20);
  } else {
    std::snprintf(text, sizeof text, "%zu KiB", bytes >> 10);
  }
  return text;
}

}  // namespace

void CopyWays::fix(bool slots) {
  fixed_ = true;
  fixed_slots_ = slots;
}

CopyWays::Pick CopyWays::pick(direct::Streamable kind, std::size_t bytes) {
  Pick p;
  if (fixed_) p.slots = fixed_slots_;
  if (fixed_ || bytes == 0) {
    p.slots_limit = p.slots ? direct::kSlotsLimit : 0;
    return p;
  }
  return pick_class(static_cast<int>(kind), bytes, kSlotsFirstUpTo);
}

CopyWays::Pick CopyWays::pick(direct::Staged kind, std::size_t bytes) {
  if (bytes == 0) return Pick{};
  return pick_class(kMidsizeKinds + static_cast<int>(kind), bytes, kSlotsFirstUpTo);
}

CopyWays::Pick CopyWays::pick(direct::Large kind, std::size_t bytes) {
  // Chosen for the all-reduces, whose peers read the reduced blocks within the
  // operation; the other collectives' results are read next by their own rank,
  // from its cache, and go by size (in the project's bench runs choosing for
  // them too made broadcasts of 2-8 MiB 1.4-1.9x slower in the medians).
  const bool chosen = kind == direct::Large::kAllreduce || kind == direct::Large::kSegments;
  if (!chosen || bytes < direct::kMinChosenStores || bytes > direct::kMaxChosenStores) return Pick{};
  return pick_class(kLargeKinds + (kind == direct::Large::kSegments ? 1 : 0), bytes, kOrdinaryResultsFirstUpTo);
}

const char* CopyWays::decides(const Pick& p) {
  return p.kind < kMidsizeKinds ? "mid-size copies" : p.kind < kLargeKinds ? "staged writes" : "result writes";
}

CopyWays::Pick CopyWays::pick_class(int kind, std::size_t bytes, std::size_t first_up_to) {
  Pick p;
  int size_class = 0;  // bytes <= 2^size_class
  while (size_class < kClasses - 1 && (std::size_t{1} << size_class) < bytes) ++size_class;
  Class& c = classes_[static_cast<std::size_t>(kind)][static_cast<std::size_t>(size_class)];
  if (c.window_end == 0) {  // the class's first operation
    c.slots = (std::size_t{1} << size_class) <= first_up_to;
    c.window_end = kFirstWindow;
    c.interval = kFirstInterval;
  }
  const std::uint64_t n = c.ops++;
  p.kind = kind;
  p.size_class = size_class;
  p.slots = c.probing ? !c.slots : c.slots;
  p.slots_limit = p.slots ? direct::kSlotsLimit : 0;
  p.timed = n >= kUntimedFirst && !(c.probing && n + kProbeOps == c.window_end);  // nor a probe's first
  p.settle = n + 1 == c.window_end;
  return p;
}

void CopyWays::record(const Pick& p, std::size_t bytes, double seconds) {
  if (!p.timed || bytes == 0) return;
  Class& c = classes_[static_cast<std::size_t>(p.kind)][static_cast<std::size_t>(p.size_class)];
  const int way = p.slots ? 0 : 1;
  c.seconds[way] += seconds;
  c.bytes[way] += static_cast<double>(bytes);
}

std::array<double, 2> CopyWays::mean(const Pick& p) const {
  const Class& c = classes_[static_cast<std::size_t>(p.kind)][static_cast<std::size_t>(p.size_class)];
  std::array<double, 2> per_byte{};
  for (int way = 0; way < 2; ++way) per_byte[way] = c.bytes[way] > 0 ? c.seconds[way] / c.bytes[way] : 1e30;
  return per_byte;
}

std::string CopyWays::settle(const Pick& p, const std::array<double, 2>& slowest) {
  Class& c = classes_[static_cast<std::size_t>(p.kind)][static_cast<std::size_t>(p.size_class)];
  c.seconds[0] = c.seconds[1] = c.bytes[0] = c.bytes[1] = 0;
  const int used = c.slots ? 0 : 1;
  if (!c.probing) {
    // A window of the way in use: probe next if one is due or the way has slowed.
    c.in_use = slowest[used];
    if (c.reference == 0) c.reference = c.in_use;
    c.probing = c.ops >= c.probe_at || c.in_use > kSlowedBy * c.reference;
    c.window_end = c.ops + (c.probing ? kProbeOps : kWindow);
    return "";
  }
  const double other = slowest[1 - used];
  const bool was_slots = c.slots;
  const bool switches = other < kMargin * c.in_use;
  if (switches) c.slots = !c.slots;
  c.reference = switches ? other : c.in_use;  // the way now in use, as it measured
  // The slower way's time over the faster's: what the next probe will cost per operation.
  const double gap = std::max(c.in_use, other) / std::max(std::min(c.in_use, other), 1e-30);
  const double affordable = static_cast<double>(kProbeOps) * (gap - 1) / kProbeShare;
  const double interval = std::max(static_cast<double>(switches ? kFirstInterval : 2 * c.interval), affordable);
  c.interval = static_cast<std::uint64_t>(std::min(interval, static_cast<double>(kMaxInterval)));
  c.probe_at = c.ops + c.interval;
  c.probing = false;
  c.window_end = c.ops + kWindow;

  const double first_time = was_slots ? c.in_use : other, second_time = was_slots ? other : c.in_use;
  char line[240];
  std::snprintf(line, sizeof line, "%s <=%s: %s %.2f GB/s, %s %.2f GB/s: %s%s, next probe in %llu", kind_name(p.kind),
                size_label(p.size_class).c_str(), way_name(p.kind, true), 1e-9 / first_time, way_name(p.kind, false),
                1e-9 / second_time, c.slots == was_slots ? "keeps " : "switches to ", way_name(p.kind, c.slots),
                static_cast<unsigned long long>(c.interval));
  return line;
}

std::string CopyWays::describe() const {
  std::string text = fixed_ ? (fixed_slots_ ? "slots" : "attach") : "";
  for (int k = fixed_ ? kMidsizeKinds : 0; k < kKinds; ++k) {
    std::string sizes;
    for (int s = 0; s < kClasses; ++s) {
      const Class& c = classes_[static_cast<std::size_t>(k)][static_cast<std::size_t>(s)];
      if (c.ops == 0) continue;
      sizes += (sizes.empty() ? " <=" : ", <=") + size_label(s) + " " + way_name(k, c.slots);
    }
    if (!sizes.empty()) text += (text.empty() ? "" : "; ") + std::string(kind_name(k)) + sizes;
  }
  return text.empty() ? "no mid-size operation yet" : text;
}

}  // namespace collex
