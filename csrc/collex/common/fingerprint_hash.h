// FNV-1a, 64 bits: the one hash behind every fingerprint the ranks compare
// (a call's print in tags, a reducer's buckets, a communicator's settings).
// Not for adversaries; two different inputs collide with odds near 2^-64.
#pragma once

#include <cstdint>
#include <string_view>

namespace collex {

class Fnv1a {
 public:
  // An integer's 8 bytes, least significant first.
  Fnv1a& mix(std::uint64_t v) {
    for (int i = 0; i < 8; ++i, v >>= 8) byte(static_cast<unsigned char>(v & 0xff));
    return *this;
  }
  Fnv1a& mix(std::string_view text) {
    for (const char ch : text) byte(static_cast<unsigned char>(ch));
    return *this;
  }
  std::uint64_t value() const { return h_; }

 private:
  void byte(unsigned char b) { h_ = (h_ ^ b) * 1099511628211ull; }
  std::uint64_t h_ = 1469598103934665603ull;
};

}  // namespace collex
