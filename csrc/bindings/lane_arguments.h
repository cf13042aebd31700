// The lane protocol's arguments (transport/cuda_ipc/lanes.h) from the addresses
// Python passes: collex._cuda.lanes_launch and its CPU stand-in,
// _core._ipc_lane_rank, take the same ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "collex/common/errors.h"
#include "collex/transport/cuda_ipc/lanes.h"
#include "collex/transport/cuda_ipc/turns.h"

namespace collex::bindings {

// Every rank's staging buffer and flag area as this rank maps them.
inline ipc::Peers lane_peers(const std::vector<std::uintptr_t>& staging, const std::vector<std::uintptr_t>& flags,
                             std::size_t staging_bytes, int rank, int lanes) {
  if (staging.size() != flags.size() || staging.empty() || staging.size() > ipc::kMaxRanks) {
    throw InvalidArgument("staging, flags: one staging buffer and one flag area per rank, at most " +
                          std::to_string(ipc::kMaxRanks));
  }
  ipc::Peers peers;
  for (std::size_t r = 0; r < staging.size(); ++r) {
    peers.staging[r] = reinterpret_cast<char*>(staging[r]);
    peers.flags[r] = reinterpret_cast<std::uint64_t*>(flags[r]);
  }
  peers.staging_bytes = staging_bytes;
  peers.ranks = static_cast<int>(staging.size());
  peers.rank = rank;
  peers.lanes = lanes;
  return peers;
}

inline ipc::Call lane_call(int collective, std::uintptr_t input, std::uintptr_t output, std::size_t bytes,
                           std::uint64_t first_seq, int shots, int root) {
  if (shots != 1 && shots != 2) throw InvalidArgument("shots: expected 1 or 2, got " + std::to_string(shots));
  if (collective < 0 || collective >= ipc::kNumCollectives) {
    throw InvalidArgument("collective: expected 0 to " + std::to_string(ipc::kNumCollectives - 1) + ", got " +
                          std::to_string(collective));
  }
  ipc::Call call;
  call.kind = static_cast<ipc::Collective>(collective);
  call.root = root;
  call.input = reinterpret_cast<const char*>(input);
  call.output = reinterpret_cast<char*>(output);
  call.bytes = bytes;
  call.first_seq = first_seq;
  call.shots = shots == 1 ? ipc::Shots::kOne : ipc::Shots::kTwo;
  return call;
}

// Makes `call` direct when `inputs` and `outputs` (every rank's arrays as mapped
// here) are given; both empty leaves it staged.
inline void lane_direct(ipc::Call& call, const std::vector<std::uintptr_t>& inputs,
                        const std::vector<std::uintptr_t>& outputs, int ranks) {
  if (inputs.empty() && outputs.empty()) return;
  if (inputs.size() != static_cast<std::size_t>(ranks) || outputs.size() != inputs.size()) {
    throw InvalidArgument("inputs, outputs: a direct call takes one input and one output per rank");
  }
  call.direct = true;
  for (std::size_t r = 0; r < inputs.size(); ++r) {
    call.inputs[r] = reinterpret_cast<const char*>(inputs[r]);
    call.outputs[r] = reinterpret_cast<char*>(outputs[r]);
  }
}

// A turn's part (turns.h): 0 stages, 1 reads.
inline ipc::TurnPart turn_part_arg(int part) {
  if (part != 0 && part != 1)
    throw InvalidArgument("part: expected 0 (stage) or 1 (read), got " + std::to_string(part));
  return static_cast<ipc::TurnPart>(part);
}

}  // namespace collex::bindings
