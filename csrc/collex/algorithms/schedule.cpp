#include "collex/algorithms/schedule.h"

#include <algorithm>

namespace collex {

namespace {

Step make_step(StepKind kind, int peer, std::size_t offset, std::size_t count, int round, int channel,
               bool from_input) {
  return {kind, static_cast<std::uint8_t>(channel), from_input, static_cast<std::uint16_t>(round), peer, offset, count};
}

}  // namespace

void Schedule::send(int peer, std::size_t offset, std::size_t count, int round, int channel, bool from_input) {
  steps.push_back(make_step(StepKind::kSend, peer, offset, count, round, channel, from_input));
}

void Schedule::recv_reduce(int peer, std::size_t offset, std::size_t count, int round, int channel, bool from_input) {
  steps.push_back(make_step(StepKind::kRecvReduce, peer, offset, count, round, channel, from_input));
  max_recv_count = std::max(max_recv_count, count);
}

void Schedule::recv_copy(int peer, std::size_t offset, std::size_t count, int round, int channel) {
  steps.push_back(make_step(StepKind::kRecvCopy, peer, offset, count, round, channel, false));
}

void Schedule::divide(std::size_t offset, std::size_t count, int round) {
  steps.push_back(make_step(StepKind::kDivide, -1, offset, count, round, 0, false));
}

Range block_range(std::size_t count, int parts, int b) {
  const std::size_t p = static_cast<std::size_t>(parts);
  const std::size_t i = static_cast<std::size_t>(b);
  const std::size_t base = count / p;
  const std::size_t extra = count % p;
  return {i * base + std::min(i, extra), base + (i < extra ? 1 : 0)};
}

std::size_t chunk_count(std::size_t count, std::size_t chunk) { return count == 0 ? 0 : (count + chunk - 1) / chunk; }

Range chunk_of(Range r, std::size_t chunk, std::size_t c) {
  const std::size_t begin = c * chunk;
  return {r.offset + begin, std::min(chunk, r.count - begin)};
}

}  // namespace collex
