#include "collex/kernels/stream.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include "collex/kernels/reduce.h"

namespace collex::kernels {
namespace {

// Seconds per call of `fn`, best of `repeats`; small arrays are timed over
// enough calls to reach about 50 us, so the clock's resolution does not matter.
template <typename Fn>
double best_seconds(int repeats, Fn fn) {
  using Clock = std::chrono::steady_clock;
  fn();  // warm: pages faulted in, caches primed as a repeated collective has them
  auto t0 = Clock::now();
  fn();
  double once = std::chrono::duration<double>(Clock::now() - t0).count();
  const int inner = std::max(1, static_cast<int>(50e-6 / std::max(once, 1e-9)));
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t = Clock::now();
    for (int i = 0; i < inner; ++i) fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t).count() / inner);
  }
  return best;
}

}  // namespace

StreamBandwidth measure_stream(std::size_t bytes, int repeats) {
  const std::size_t n = std::max<std::size_t>(1, bytes / sizeof(float));
  std::vector<float> a(n, 1.0f), c(n, 0.0f);
  const double nbytes = static_cast<double>(n * sizeof(float));
  StreamBandwidth bw;
  bw.copy = 2 * nbytes / best_seconds(repeats, [&] { std::memcpy(c.data(), a.data(), n * sizeof(float)); });
  bw.add =
      3 * nbytes / best_seconds(repeats, [&] { reduce_into(c.data(), a.data(), n, DType::kFloat32, ReduceOp::kSum); });
  return bw;
}

}  // namespace collex::kernels
