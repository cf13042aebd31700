// The protocol of the CUDA IPC all-reduce, in plain C++ for host and device:
// how a call is cut into rounds (one per fill of the staging buffers), each
// round into lanes (one per CUDA block) and, for two-shot, each lane into the
// ranks' shares; and the flags that order the ranks' lanes. The CUDA kernels
// (device_lanes.cu) and their CPU stand-in (host_lanes.cpp), which CI tests on
// threads, run this same code; each supplies a Lane: how its threads copy,
// combine, synchronise and signal.
//
// Lanes are independent: lane b of every rank stages, reduces and gathers the
// same part of the staging buffers in every round, and waits only for lane b
// of the others, so no block ever waits
// for another block of its own or a peer's kernel. Each rank's flag words are
// [lane][from rank], each written by one lane of one rank only, with values
// that only grow (token(seq, phase); seq counts rounds on the communicator), so
// nothing is ever reset and a late reader of an old value just waits on.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define COLLEX_LANES __host__ __device__ inline
#else
#define COLLEX_LANES inline
#endif

namespace collex::ipc {

constexpr int kMaxRanks = 8;
constexpr int kMaxLanes = 128;
constexpr std::size_t kVector = 16;  // bytes per vector step; lane and share bounds fall on them

// One-shot: every rank reduces the whole lane from every staging buffer (for
// small messages: one barrier less). Two-shot: each rank reduces its share of
// the lane into its own staging buffer, then gathers the others' shares.
enum class Shots : std::uint8_t { kOne = 1, kTwo = 2 };

// The phases of a round, in order; a flag at token(seq, p) says its writer has
// finished phase p of round seq (and every phase before it, of every round before).
enum Phase : std::uint64_t { kStaged = 1, kReduced = 2, kDone = 3 };

COLLEX_LANES std::uint64_t token(std::uint64_t seq, Phase phase) { return seq * 4 + phase; }

struct Range {
  std::size_t begin = 0;
  std::size_t end = 0;
  COLLEX_LANES bool empty() const { return end <= begin; }
};

// Part i of `units` cut into n nearly equal parts (the first units % n one larger).
COLLEX_LANES Range part(std::size_t units, int n, int i) {
  const std::size_t k = static_cast<std::size_t>(n), at = static_cast<std::size_t>(i);
  const std::size_t base = units / k, extra = units % k;
  const std::size_t begin = at * base + (at < extra ? at : extra);
  return {begin, begin + base + (at < extra ? 1 : 0)};
}

// Whole vectors [first, last) of `range`, clipped to `limit` bytes: a range's
// last vector is partial only at the end of a round.
COLLEX_LANES Range vector_bytes(std::size_t offset, Range vectors, std::size_t limit) {
  const std::size_t begin = offset + vectors.begin * kVector, end = offset + vectors.end * kVector;
  return {begin < limit ? begin : limit, end < limit ? end : limit};
}

COLLEX_LANES std::size_t vectors_in(std::size_t bytes) { return (bytes + kVector - 1) / kVector; }

// The rounds of a call of `bytes`: each stages at most `staging_bytes` (a multiple of kVector).
COLLEX_LANES std::uint64_t rounds(std::size_t bytes, std::size_t staging_bytes) {
  return (bytes + staging_bytes - 1) / staging_bytes;
}

// Lane `lane`'s bytes of a round of `length` bytes (offsets within the round):
// its fixed part of the staging buffer, clipped to the round. Fixed, because a
// lane that has finished a round stages the next one while other lanes may
// still read theirs: cut by the round's length instead, the last, shorter
// round would give one lane bytes that another still reads (the stand-in's
// tests found exactly that).
COLLEX_LANES Range lane_bytes(std::size_t staging_bytes, std::size_t length, int lanes, int lane) {
  return vector_bytes(0, part(staging_bytes / kVector, lanes, lane), length);
}

// Rank r's share of a lane's bytes (two-shot).
COLLEX_LANES Range share_bytes(Range lane, int ranks, int r) {
  return vector_bytes(lane.begin, part(vectors_in(lane.end - lane.begin), ranks, r), lane.end);
}

// What every rank's lane sees of the others: staging buffers and flag words,
// mapped into this process (device pointers on the GPU).
struct Peers {
  char* staging[kMaxRanks];         // each rank's staging buffer
  std::uint64_t* flags[kMaxRanks];  // each rank's flag words, [lane * ranks + from rank]
  std::size_t staging_bytes = 0;    // each staging buffer's size, a multiple of kVector
  int ranks = 1;
  int rank = 0;
  int lanes = 1;
};

// One all-reduce, as one rank runs it.
struct Call {
  const char* input = nullptr;
  char* output = nullptr;
  std::size_t bytes = 0;        // a whole number of elements
  std::uint64_t first_seq = 1;  // the communicator's round count before the call, plus one
  Shots shots = Shots::kTwo;
};

// Where a lane that gave up says why: the first to fail sets `failed` to 1 and
// fills in the rest (on the GPU: device memory, or host memory mapped for it).
struct LaneStatus {
  std::uint64_t failed;
  std::uint64_t lane;
  std::uint64_t from;    // the rank whose flag did not come
  std::uint64_t token;   // the value waited for: round * 4 + phase
  std::uint64_t waiter;  // the rank that waited
};

// The flag word in rank `owner`'s flags where rank `from`'s lane `lane` signals.
COLLEX_LANES std::uint64_t* flag(const Peers& w, int owner, int lane, int from) {
  return w.flags[owner] + static_cast<std::size_t>(lane) * static_cast<std::size_t>(w.ranks) + from;
}

// Every peer's lane learns that this rank's lane has finished `phase` of round
// `seq`, and this lane waits until every peer's has. False (on every thread of
// the lane) when a wait timed out.
template <typename Lane>
COLLEX_LANES bool barrier(const Peers& w, int lane, std::uint64_t value, Lane& ctx) {
  ctx.sync();  // every thread's part of the phase is written
  bool ok = true;
  if (ctx.leader()) {
    for (int q = 0; q < w.ranks; ++q) {
      if (q != w.rank) ctx.signal(flag(w, q, lane, w.rank), value);
    }
    for (int q = 0; q < w.ranks && ok; ++q) {
      if (q != w.rank) ok = ctx.wait(flag(w, w.rank, lane, q), value, q);
    }
  }
  return ctx.sync_and(ok);  // and no thread reads a peer's bytes before the leader saw its flag
}

// Runs one call's rounds for lane `lane`. Returns false when a wait timed out
// (the lane stops; its Lane says whom it waited for).
template <typename Lane>
COLLEX_LANES bool run_lane(const Peers& w, const Call& c, int lane, Lane& ctx) {
  const std::uint64_t n = rounds(c.bytes, w.staging_bytes);
  const char* sources[kMaxRanks];
  for (int r = 0; r < w.ranks; ++r) sources[r] = w.staging[r];
  char* staged = w.staging[w.rank];
  for (std::uint64_t k = 0; k < n; ++k) {
    const std::size_t base = static_cast<std::size_t>(k) * w.staging_bytes;
    const std::size_t left = c.bytes - base;
    const std::size_t length = left < w.staging_bytes ? left : w.staging_bytes;
    const std::uint64_t seq = c.first_seq + k;
    const Range mine = lane_bytes(w.staging_bytes, length, w.lanes, lane);
    if (mine.empty()) continue;  // alike on every rank: a short round, or fewer vectors than lanes
    char* out = c.output + base;
    ctx.copy(staged, c.input + base, mine);
    if (!barrier(w, lane, token(seq, kStaged), ctx)) return false;
    if (c.shots == Shots::kOne) {
      ctx.combine(out, nullptr, sources, w.ranks, mine);
    } else {
      // The reduced share goes to the output and over this rank's own staged
      // input, which no peer reads (each reads only its own share of it).
      ctx.combine(out, staged, sources, w.ranks, share_bytes(mine, w.ranks, w.rank));
      if (!barrier(w, lane, token(seq, kReduced), ctx)) return false;
      for (int q = 0; q < w.ranks; ++q) {
        if (q != w.rank) ctx.copy(out, w.staging[q], share_bytes(mine, w.ranks, q));
      }
    }
    // No peer may stage the next round over bytes this rank still reads.
    if (!barrier(w, lane, token(seq, kDone), ctx)) return false;
  }
  return true;
}

}  // namespace collex::ipc
