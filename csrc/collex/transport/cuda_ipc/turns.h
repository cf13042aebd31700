// The CUDA IPC collectives for ranks that take turns on one GPU: ranks sharing
// a GPU without MPS never run their kernels at the same time (the GPU switches
// between their processes), so a kernel that spins on a peer's flag (lanes.h)
// waits a time slice for every flag. Here no kernel waits for another: each
// round of a call is two kernels on the rank's stream, one that stages this
// rank's part into its own staging buffer and one that reads what it needs from
// every rank's, and between them, and after the second, the host records a CUDA
// IPC event on the stream and makes the stream wait for its peers' events
// (python/collex/cuda/turns.py). The GPU then runs each rank's kernel once its
// peers' have finished, one switch per rank and turn.
//
// This file says what each kernel does, in plain C++ for host and device: a
// Turn is up to kMaxRanks Pieces, each "every out = the sources combined" (or
// copied, for one source). A direct call (every rank's arrays mapped here)
// stages nothing and reads and writes the ranks' arrays in place, in one round;
// its all-reduce has each rank reduce its share of every input into that share
// of every output, so every byte is read once and written once, the least any
// schedule can do. Sources are combined in rank order: every rank gets the same bits.
#pragma once

#include <cstddef>
#include <cstdint>

#include "collex/transport/cuda_ipc/lanes.h"

namespace collex::ipc {

// Every out[k] (k < outs) = src[0 .. count) combined element by element (one
// source: copied), over `bytes` bytes.
struct Piece {
  char* out[kMaxRanks] = {};
  const char* src[kMaxRanks] = {};
  int outs = 0;
  int count = 0;
  std::size_t bytes = 0;
};

// One kernel's work.
struct Turn {
  Piece piece[kMaxRanks];
  int count = 0;

  // A piece with one out and one source, unless it would copy bytes onto themselves.
  COLLEX_LANES void copy(char* out, const char* src, std::size_t bytes) {
    if (bytes == 0 || out == src) return;
    Piece& p = piece[count++];
    p.out[0] = out;
    p.outs = 1;
    p.src[0] = src;
    p.count = 1;
    p.bytes = bytes;
  }

  // A piece with every rank's `src + offset` as sources, one out.
  COLLEX_LANES Piece& reduce(char* out, char* const* src, int ranks, std::size_t offset, std::size_t bytes) {
    Piece& p = piece[count++];
    p.out[0] = out;
    p.outs = 1;
    for (int q = 0; q < ranks; ++q) p.src[q] = src[q] + offset;
    p.count = ranks;
    p.bytes = bytes;
    return p;
  }
};

// The two kernels of a round: staging this rank's part, reading every rank's.
enum class TurnPart : std::uint8_t { kStage = 0, kRead = 1 };

// The rounds a call takes: one per fill of the staging buffers (as the lanes
// take), or one for a direct call.
COLLEX_LANES std::uint64_t turn_rounds(const Peers& w, const Call& c) {
  return c.direct ? 1 : rounds(c.kind, c.bytes, w.staging_bytes, w.ranks);
}

// What part `which` of round `round` of `c` does on rank w.rank. `w.lanes` and
// the flags play no part; `c`'s first_seq and shots neither.
COLLEX_LANES Turn turn_part(const Peers& w, const Call& c, TurnPart which, std::uint64_t round) {
  Turn t;
  const int p = w.ranks, r = w.rank;
  char* mine = w.staging[r];
  char* out = c.output;
  const char* in = c.input;
  if (c.direct) {
    if (which == TurnPart::kStage) return t;
    // Rank r's share, by whole vectors of the array, for the all-reduce and reduce.
    const Range share = vector_bytes(0, part(vectors_in(c.bytes), p, r), c.bytes);
    char* inputs[kMaxRanks];
    for (int q = 0; q < p; ++q) inputs[q] = const_cast<char*>(c.inputs[q]);
    switch (c.kind) {
      case Collective::kAllReduce:
        if (!share.empty()) {
          Piece& piece = t.reduce(c.outputs[0] + share.begin, inputs, p, share.begin, share.end - share.begin);
          for (int q = 1; q < p; ++q) piece.out[q] = c.outputs[q] + share.begin;
          piece.outs = p;
        }
        break;
      case Collective::kReduce:
        if (!share.empty()) t.reduce(c.outputs[c.root] + share.begin, inputs, p, share.begin, share.end - share.begin);
        break;
      case Collective::kBroadcast: t.copy(out, c.inputs[c.root], c.bytes); break;
      case Collective::kAllGather:
        for (int q = 0; q < p; ++q) t.copy(out + static_cast<std::size_t>(q) * c.bytes, c.inputs[q], c.bytes);
        break;
      case Collective::kReduceScatter: t.reduce(out, inputs, p, static_cast<std::size_t>(r) * c.bytes, c.bytes); break;
    }
    return t;
  }
  const std::size_t capacity = round_capacity(c.kind, w.staging_bytes, p);
  const std::size_t at = static_cast<std::size_t>(round) * capacity;
  if (at >= c.bytes) return t;
  const std::size_t length = c.bytes - at < capacity ? c.bytes - at : capacity;
  if (which == TurnPart::kStage) {
    switch (c.kind) {
      case Collective::kAllReduce:
      case Collective::kReduce:
      case Collective::kAllGather: t.copy(mine, in + at, length); break;
      case Collective::kBroadcast:
        if (r == c.root) t.copy(mine, in + at, length);
        break;
      case Collective::kReduceScatter:  // a part of every block, each where its reader finds it
        for (int q = 0; q < p; ++q) {
          t.copy(mine + static_cast<std::size_t>(q) * capacity, in + static_cast<std::size_t>(q) * c.bytes + at,
                 length);
        }
        break;
    }
    return t;
  }
  switch (c.kind) {
    case Collective::kAllReduce: t.reduce(out + at, w.staging, p, 0, length); break;
    case Collective::kReduce:
      if (r == c.root) t.reduce(out + at, w.staging, p, 0, length);
      break;
    case Collective::kBroadcast: t.copy(out + at, r == c.root ? in + at : w.staging[c.root], length); break;
    case Collective::kAllGather:
      for (int q = 0; q < p; ++q) {
        t.copy(out + static_cast<std::size_t>(q) * c.bytes + at, q == r ? in + at : w.staging[q], length);
      }
      break;
    case Collective::kReduceScatter:
      t.reduce(out + at, w.staging, p, static_cast<std::size_t>(r) * capacity, length);
      break;
  }
  return t;
}

}  // namespace collex::ipc
