// The rounds of every collective of the lane protocol (lanes.h), staged and
// direct, and run_lane, which runs a call's rounds for one lane: the code the
// CUDA kernels (device_lanes.cu) and their CPU stand-in (host_lanes.cpp) share.
#pragma once

#include <cstddef>
#include <cstdint>

#include "collex/transport/cuda_ipc/lanes.h"

namespace collex::ipc {

// A round of each collective, up to its last barrier: `base` is the round's
// first byte within the call's blocks, `mine` this lane's bytes of the round.
// Each returns false when a barrier failed (a wait timed out, or a peer's call differs).

template <typename Lane>
COLLEX_LANES bool allreduce_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base, Range mine,
                                  int lane, Lane& ctx) {
  char* staged = w.staging[w.rank];
  char* out = c.output + base;
  ctx.copy(staged, c.input + base, mine);
  if (!ctx.barrier(w, lane, token(seq, kStaged), c.signature)) return false;
  if (c.shots == Shots::kOne) {
    ctx.combine(Outs(out), w.staging, w.ranks, mine);
    return true;
  }
  // The reduced share goes to the output and over this rank's own staged
  // input, which no peer reads (each reads only its own share of it).
  ctx.combine(Outs(out, staged), w.staging, w.ranks, share_bytes(mine, w.ranks, w.rank));
  if (!ctx.barrier(w, lane, token(seq, kReduced))) return false;
  for (int q = 0; q < w.ranks; ++q) {
    if (q != w.rank) ctx.copy(out, w.staging[q], share_bytes(mine, w.ranks, q));
  }
  return true;
}

// The root's output the reduction, as all-reduce's but gathered by the root
// alone; the others reduce their share in place in their staging buffers.
template <typename Lane>
COLLEX_LANES bool reduce_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base, Range mine, int lane,
                               Lane& ctx) {
  char* staged = w.staging[w.rank];
  const bool root = w.rank == c.root;
  ctx.copy(staged, c.input + base, mine);
  if (!ctx.barrier(w, lane, token(seq, kStaged), c.signature)) return false;
  if (c.shots == Shots::kOne) {
    if (root) ctx.combine(Outs(c.output + base), w.staging, w.ranks, mine);
    return true;
  }
  ctx.combine(Outs(root ? c.output + base : staged), w.staging, w.ranks, share_bytes(mine, w.ranks, w.rank));
  if (!ctx.barrier(w, lane, token(seq, kReduced))) return false;
  if (root) {
    for (int q = 0; q < w.ranks; ++q) {
      if (q != w.rank) ctx.copy(c.output + base, w.staging[q], share_bytes(mine, w.ranks, q));
    }
  }
  return true;
}

// Each rank stages its part of every rank's block (block q at q * capacity in
// its staging buffer) and reduces its own block's part from every staging buffer.
template <typename Lane>
COLLEX_LANES bool reduce_scatter_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base, Range mine,
                                       int lane, Lane& ctx) {
  const std::size_t capacity = round_capacity(c.kind, w.staging_bytes, w.ranks);
  for (int q = 0; q < w.ranks; ++q) {
    ctx.copy(w.staging[w.rank] + q * capacity, c.input + q * c.bytes + base, mine);
  }
  if (!ctx.barrier(w, lane, token(seq, kStaged), c.signature)) return false;
  const char* blocks[kMaxRanks];
  for (int q = 0; q < w.ranks; ++q) blocks[q] = w.staging[q] + static_cast<std::size_t>(w.rank) * capacity;
  ctx.combine(Outs(c.output + base), blocks, w.ranks, mine);
  return true;
}

template <typename Lane>
COLLEX_LANES bool all_gather_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base, Range mine,
                                   int lane, Lane& ctx) {
  const char* in = c.input + base;
  char* own = c.output + static_cast<std::size_t>(w.rank) * c.bytes + base;
  ctx.copy(w.staging[w.rank], in, mine);
  if (own != in) ctx.copy(own, in, mine);  // in place when the input is this rank's block of the output
  if (!ctx.barrier(w, lane, token(seq, kStaged), c.signature)) return false;
  for (int q = 0; q < w.ranks; ++q) {
    if (q != w.rank) ctx.copy(c.output + static_cast<std::size_t>(q) * c.bytes + base, w.staging[q], mine);
  }
  return true;
}

template <typename Lane>
COLLEX_LANES bool broadcast_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base, Range mine,
                                  int lane, Lane& ctx) {
  const bool root = w.rank == c.root;
  if (root) {
    ctx.copy(w.staging[w.rank], c.input + base, mine);
    if (c.output != c.input) ctx.copy(c.output + base, c.input + base, mine);
  }
  // Every rank signals (the others' "staged" says nothing but costs one flag):
  // one barrier for all collectives keeps the flags' rule simple.
  if (!ctx.barrier(w, lane, token(seq, kStaged), c.signature)) return false;
  if (!root) ctx.copy(c.output + base, w.staging[c.root], mine);
  return true;
}

// The direct rounds: the same barriers, the peers' arrays read in place.
// `at(arrays, offset)` is every rank's array at one offset.
struct Arrays {
  const char* at[kMaxRanks];
};

COLLEX_LANES Arrays offset_all(const char* const* arrays, int ranks, std::size_t offset) {
  Arrays a{};
  for (int q = 0; q < ranks; ++q) a.at[q] = arrays[q] + offset;
  return a;
}

// Each rank reduces its share of every input into that share of every output:
// every byte is read once and written once, with one barrier (reducing into its
// own output and then reading the others' shares from theirs read a share more
// per rank, and waited once more). In place, a rank overwrites only its share
// of each array, which only it reads, each vector after reading it.
template <typename Lane>
COLLEX_LANES bool direct_allreduce_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base, Range mine,
                                         int lane, Lane& ctx) {
  if (!ctx.barrier(w, lane, token(seq, kStaged), c.signature)) return false;
  const Arrays in = offset_all(c.inputs, w.ranks, base);
  ctx.combine(Outs(c.outputs, w.ranks, base), in.at, w.ranks, share_bytes(mine, w.ranks, w.rank));
  return true;
}

// Each rank reduces its share straight into the root's output (one shot: the
// root reduces everything); the last barrier tells the root they have.
template <typename Lane>
COLLEX_LANES bool direct_reduce_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base, Range mine,
                                      int lane, Lane& ctx) {
  if (!ctx.barrier(w, lane, token(seq, kStaged), c.signature)) return false;
  const Arrays in = offset_all(c.inputs, w.ranks, base);
  char* out = c.outputs[c.root] + base;
  if (c.shots == Shots::kOne) {
    if (w.rank == c.root) ctx.combine(Outs(out), in.at, w.ranks, mine);
    return true;
  }
  ctx.combine(Outs(out), in.at, w.ranks, share_bytes(mine, w.ranks, w.rank));
  return true;
}

template <typename Lane>
COLLEX_LANES bool direct_reduce_scatter_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base,
                                              Range mine, int lane, Lane& ctx) {
  if (!ctx.barrier(w, lane, token(seq, kStaged), c.signature)) return false;
  const Arrays in = offset_all(c.inputs, w.ranks, static_cast<std::size_t>(w.rank) * c.bytes + base);
  ctx.combine(Outs(c.output + base), in.at, w.ranks, mine);
  return true;
}

template <typename Lane>
COLLEX_LANES bool direct_all_gather_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base,
                                          Range mine, int lane, Lane& ctx) {
  if (!ctx.barrier(w, lane, token(seq, kStaged), c.signature)) return false;
  for (int q = 0; q < w.ranks; ++q) {
    char* block = c.output + static_cast<std::size_t>(q) * c.bytes + base;
    const char* from = c.inputs[q] + base;
    if (block != from) ctx.copy(block, from, mine);  // in place when the input is this rank's block
  }
  return true;
}

template <typename Lane>
COLLEX_LANES bool direct_broadcast_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base, Range mine,
                                         int lane, Lane& ctx) {
  if (!ctx.barrier(w, lane, token(seq, kStaged), c.signature)) return false;
  if (c.output != c.inputs[c.root]) ctx.copy(c.output + base, c.inputs[c.root] + base, mine);
  return true;
}

template <typename Lane>
COLLEX_LANES bool run_round(const Peers& w, const Call& c, std::uint64_t seq, std::size_t base, Range mine, int lane,
                            Lane& ctx) {
  if (c.direct) {
    switch (c.kind) {
      case Collective::kAllReduce: return direct_allreduce_round(w, c, seq, base, mine, lane, ctx);
      case Collective::kReduce: return direct_reduce_round(w, c, seq, base, mine, lane, ctx);
      case Collective::kReduceScatter: return direct_reduce_scatter_round(w, c, seq, base, mine, lane, ctx);
      case Collective::kAllGather: return direct_all_gather_round(w, c, seq, base, mine, lane, ctx);
      case Collective::kBroadcast: return direct_broadcast_round(w, c, seq, base, mine, lane, ctx);
    }
    return false;
  }
  switch (c.kind) {
    case Collective::kAllReduce: return allreduce_round(w, c, seq, base, mine, lane, ctx);
    case Collective::kReduce: return reduce_round(w, c, seq, base, mine, lane, ctx);
    case Collective::kReduceScatter: return reduce_scatter_round(w, c, seq, base, mine, lane, ctx);
    case Collective::kAllGather: return all_gather_round(w, c, seq, base, mine, lane, ctx);
    case Collective::kBroadcast: return broadcast_round(w, c, seq, base, mine, lane, ctx);
  }
  return false;
}

// Runs one call's rounds for lane `lane`. Returns false when a barrier failed
// (the lane stops; the status its Lane reported to says why).
template <typename Lane>
COLLEX_LANES bool run_lane(const Peers& w, const Call& c, int lane, Lane& ctx) {
  const std::size_t capacity = round_capacity(c.kind, w.staging_bytes, w.ranks);
  const std::uint64_t n = rounds(c.kind, c.bytes, w.staging_bytes, w.ranks);
  for (std::uint64_t k = 0; k < n; ++k) {
    const std::size_t base = static_cast<std::size_t>(k) * capacity;
    const std::size_t left = c.bytes - base;
    const std::size_t length = left < capacity ? left : capacity;
    const std::uint64_t seq = c.first_seq + k;
    const Range mine = lane_bytes(capacity, length, w.lanes, lane);
    if (mine.empty()) continue;  // alike on every rank: a short round, or fewer vectors than lanes
    // No peer may stage the next round over bytes this rank still reads (nor,
    // after a direct call, its stream touch arrays a peer still reads or writes).
    if (!run_round(w, c, seq, base, mine, lane, ctx) || !ctx.barrier(w, lane, token(seq, kDone))) return false;
  }
  return true;
}

}  // namespace collex::ipc
