// The totals of time_parts.h: relaxed atomics, since they are read only after
// the calls they count have returned.
#include "collex/common/time_parts.h"

namespace collex::time_parts {
namespace {
std::array<std::atomic<std::uint64_t>, kParts> ns_total{};
std::array<std::atomic<std::uint64_t>, kParts> bytes_total{};
}  // namespace

namespace detail {
std::atomic<bool> on{false};

void add(Part part, std::uint64_t ns, std::uint64_t bytes) {
  const auto i = static_cast<std::size_t>(part);
  ns_total[i].fetch_add(ns, std::memory_order_relaxed);
  bytes_total[i].fetch_add(bytes, std::memory_order_relaxed);
}
}  // namespace detail

void enable(bool on) {
  for (std::size_t i = 0; i < kParts; ++i) {
    ns_total[i].store(0, std::memory_order_relaxed);
    bytes_total[i].store(0, std::memory_order_relaxed);
  }
  detail::on.store(on, std::memory_order_relaxed);
}

Totals totals() {
  Totals t;
  for (std::size_t i = 0; i < kParts; ++i) {
    t.ns[i] = ns_total[i].load(std::memory_order_relaxed);
    t.bytes[i] = bytes_total[i].load(std::memory_order_relaxed);
  }
  return t;
}

}  // namespace collex::time_parts
