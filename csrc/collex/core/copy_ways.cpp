#include "collex/core/copy_ways.h"

#include <algorithm>
#include <cstdio>

namespace collex {
namespace {

// Before a probe, this many operations time the way in use; a probe is this
// many operations the other way, of which all but the first are timed (on the
// project's VM the first all-reduce after a switch to attaching took up to 1.5x
// as long as the next ones). Only the best time of each counts, so one
// operation slowed by the machine does not decide.
constexpr std::uint64_t kTimedBefore = 3, kProbeOps = 4;
// Operations from one probe to the next: short after a switch, doubling each
// time the choice holds. At the longest, a probe that runs 5x slower adds about
// 1.5 % to the class's time.
constexpr std::uint64_t kFirstInterval = 16, kMaxInterval = 1024;
// The other way takes over only when it was this much faster: a near tie keeps
// the way in use rather than flipping on noise.
constexpr double kMargin = 0.9;
// Until the first probe, classes up to this size stream through the slots (on
// every machine measured so far they won below it on some day).
constexpr std::size_t kSlotsFirstUpTo = 1024 * 1024;

const char* kind_name(int kind) {
  constexpr const char* kNames[] = {"all-reduce", "broadcast", "all-gather"};
  return kNames[kind];
}

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
  int size_class = 0;  // bytes <= 2^size_class
  while (size_class < kClasses - 1 && (std::size_t{1} << size_class) < bytes) ++size_class;
  Class& c = classes_[static_cast<std::size_t>(kind)][static_cast<std::size_t>(size_class)];
  if (c.interval == 0) {  // the class's first operation
    c.slots = (std::size_t{1} << size_class) <= kSlotsFirstUpTo;
    c.probe_at = kTimedBefore;
    c.interval = kFirstInterval;
  }
  const std::uint64_t n = c.ops++;
  const bool probing = n >= c.probe_at;
  p.slots = probing ? !c.slots : c.slots;
  p.slots_limit = p.slots ? direct::kSlotsLimit : 0;
  if (n + kTimedBefore >= c.probe_at && n != c.probe_at) {
    p.kind = static_cast<int>(kind);
    p.size_class = size_class;
  }
  p.settle = n + 1 == c.probe_at + kProbeOps;
  return p;
}

void CopyWays::record(const Pick& p, std::size_t bytes, double seconds) {
  if (p.kind < 0 || bytes == 0) return;
  Class& c = classes_[static_cast<std::size_t>(p.kind)][static_cast<std::size_t>(p.size_class)];
  double& best = c.best[p.slots ? 0 : 1];
  best = std::min(best, seconds / static_cast<double>(bytes));
}

std::array<double, 2> CopyWays::best(const Pick& p) const {
  const Class& c = classes_[static_cast<std::size_t>(p.kind)][static_cast<std::size_t>(p.size_class)];
  return {c.best[0], c.best[1]};
}

std::string CopyWays::settle(const Pick& p, const std::array<double, 2>& slowest) {
  Class& c = classes_[static_cast<std::size_t>(p.kind)][static_cast<std::size_t>(p.size_class)];
  const double in_use = slowest[c.slots ? 0 : 1], other = slowest[c.slots ? 1 : 0];
  const bool was_slots = c.slots;
  if (other < kMargin * in_use) {
    c.slots = !c.slots;
    c.interval = kFirstInterval;
  } else {
    c.interval = std::min(2 * c.interval, kMaxInterval);
  }
  c.probe_at = c.ops + c.interval;
  c.best[0] = c.best[1] = 1e30;

  char line[200];
  std::snprintf(line, sizeof line, "%s <=%s: slots %.2f GB/s, attach %.2f GB/s: %s%s, next probe in %llu",
                kind_name(p.kind), size_label(p.size_class).c_str(), 1e-9 / slowest[0], 1e-9 / slowest[1],
                c.slots == was_slots ? "keeps " : "switches to ", c.slots ? "slots" : "attach",
                static_cast<unsigned long long>(c.interval));
  return line;
}

std::string CopyWays::describe() const {
  if (fixed_) return fixed_slots_ ? "slots" : "attach";
  std::string text;
  for (int k = 0; k < kKinds; ++k) {
    std::string sizes;
    for (int s = 0; s < kClasses; ++s) {
      const Class& c = classes_[static_cast<std::size_t>(k)][static_cast<std::size_t>(s)];
      if (c.ops == 0) continue;
      sizes += (sizes.empty() ? " <=" : ", <=") + size_label(s) + (c.slots ? " slots" : " attach");
    }
    if (!sizes.empty()) text += (text.empty() ? "" : "; ") + std::string(kind_name(k)) + sizes;
  }
  return text.empty() ? "no mid-size operation yet" : text;
}

}  // namespace collex
