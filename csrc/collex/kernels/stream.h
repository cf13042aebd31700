// A STREAM-like measurement of what memory gives one rank: the bench's physical
// limit. Bandwidths count bytes read plus bytes written, per second.
#pragma once

#include <cstddef>

namespace collex::kernels {

struct StreamBandwidth {
  double copy = 0;  // c = a: reads and writes `bytes`
  double add = 0;   // c += a (float32): reads 2 x `bytes`, writes `bytes`
};

// Best of `repeats` timings on arrays of `bytes` each (the working set a
// collective of that size touches, so caches count as they would for it).
StreamBandwidth measure_stream(std::size_t bytes, int repeats);

}  // namespace collex::kernels
