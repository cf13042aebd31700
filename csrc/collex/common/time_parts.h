// Where a collective's time goes, for the bench's breakdown (`--breakdown`):
// process-wide totals of the time spent in reduction kernels, copies in place,
// copies through the kernel (cross-memory attach) and waits for peers, with the
// memory traffic (bytes read plus written) of each. Off unless turned on; off,
// each timed place costs one relaxed load.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "collex/common/waiting.h"

namespace collex::time_parts {

enum class Part : int { kReduce, kCopy, kKernelCopy, kWait, kCount };
constexpr std::size_t kParts = static_cast<std::size_t>(Part::kCount);

struct Totals {
  std::array<std::uint64_t, kParts> ns{};
  std::array<std::uint64_t, kParts> bytes{};
};

namespace detail {
extern std::atomic<bool> on;
void add(Part part, std::uint64_t ns, std::uint64_t bytes);
}  // namespace detail

inline bool enabled() { return detail::on.load(std::memory_order_relaxed); }
// Turns the accounting on or off; either way the totals start again from zero.
void enable(bool on);
Totals totals();

// Adds the time from its construction to its destruction to `part`, with
// `bytes` of memory traffic, when the accounting is on.
class Timed {
 public:
  explicit Timed(Part part, std::uint64_t bytes = 0) : part_(part), bytes_(bytes), on_(enabled()) {
    if (on_) start_ = Clock::now();
  }
  ~Timed() {
    if (on_) {
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start_).count();
      detail::add(part_, static_cast<std::uint64_t>(ns), bytes_);
    }
  }
  Timed(const Timed&) = delete;
  Timed& operator=(const Timed&) = delete;

 private:
  Part part_;
  std::uint64_t bytes_;
  bool on_;
  Clock::time_point start_{};
};

}  // namespace collex::time_parts
