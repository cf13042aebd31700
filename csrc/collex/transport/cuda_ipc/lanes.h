// The protocol of the CUDA IPC collectives, in plain C++ for host and device:
// how a call is cut into rounds (one per fill of the staging buffers), each
// round into lanes (one per CUDA block) and, for two-shot reductions, each lane
// into the ranks' shares; and the flags that order the ranks' lanes. The CUDA
// kernels (device_lanes.cu) and their CPU stand-in (host_lanes.cpp), which CI
// tests on threads and processes, run this same code (the rounds themselves
// in lane_rounds.h). Each supplies a Lane, which copies and combines ranges
// (copy, combine) and meets its peers' lanes (barrier). The barrier is this
// file's, run over the Lane's flags: an object that says how the lane's
// threads meet each other (sync, sync_and; leader() is the thread that
// signals), how flag words are published and read (signal with release, wait
// with acquire until a value or a timeout; store and load for words those
// order) and where a lane records why it gave up (report, first one wins). The
// GPU's Lane calls these out of line, the stand-in's inline.
//
// Every collective is the same skeleton: each round, every rank stages its part
// into its own staging buffer, a barrier says so, each rank reads what it needs
// from its peers' staging buffers (reducing or copying), and a last barrier
// says that nobody reads a staging buffer any more, so the next round may
// overwrite it. They differ only in what is staged and what is read.
//
// A direct call (Call::direct: every rank's arrays mapped into every peer, for
// large messages) stages nothing: the first barrier says that every rank's
// arrays are ready (its kernel has started, after their producers on its
// stream), peers read one another's inputs in place (and an all-reduce writes
// one another's outputs), and the last says that nobody reads or writes them
// any more, so that later work on each rank's stream may. Same rounds, flags
// and barriers.
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

// The collectives the protocol runs. The numbers are part of the binding
// contract (python/collex/cuda/lanes.py).
enum class Collective : std::uint8_t {
  kAllReduce = 0,
  kReduceScatter = 1,  // rank r gets block r of the reduction of every rank's input
  kAllGather = 2,      // block q of every rank's output is rank q's input
  kBroadcast = 3,      // every rank's output is the root's input
  kReduce = 4,         // the root's output is the reduction; the others' is not written
};
constexpr int kNumCollectives = 5;

// Collectives that only move bytes (their dtype and operator do not matter).
COLLEX_LANES bool moves_only(Collective kind) {
  return kind == Collective::kAllGather || kind == Collective::kBroadcast;
}

// The phases of a round, in order; a flag at token(seq, p) says its writer has
// finished phase p of round seq (and every phase before it, of every round before).
enum Phase : std::uint64_t { kStaged = 1, kReduced = 2, kDone = 3 };

COLLEX_LANES std::uint64_t token(std::uint64_t seq, Phase phase) { return seq * 4 + phase; }

struct Range {
  std::size_t begin = 0;
  std::size_t end = 0;
  COLLEX_LANES bool empty() const { return end <= begin; }
};

// The arrays a combine writes, each at the range's offsets: an output, with
// this rank's staging buffer too (a two-shot all-reduce), or every rank's
// output (a direct all-reduce).
struct Outs {
  char* at[kMaxRanks] = {};
  int count = 0;
  COLLEX_LANES explicit Outs(char* out, char* also = nullptr) : count(also != nullptr ? 2 : 1) {
    at[0] = out;
    at[1] = also;
  }
  // The first `n` of `arrays`, each from `offset` on.
  COLLEX_LANES Outs(char* const* arrays, int n, std::size_t offset) : count(n) {
    for (int q = 0; q < n; ++q) at[q] = arrays[q] + offset;
  }
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

// How many of a call's `bytes` (see Call) one round takes: a staging buffer's
// worth, except for reduce-scatter, which stages a part of every rank's block
// and so takes a ranks'th (whole vectors: 0 where the buffer holds less than a
// vector per rank, which the checks refuse).
COLLEX_LANES std::size_t round_capacity(Collective kind, std::size_t staging_bytes, int ranks) {
  if (kind != Collective::kReduceScatter) return staging_bytes;
  return staging_bytes / static_cast<std::size_t>(ranks) / kVector * kVector;
}

// The rounds (sequence numbers) a call of `bytes` takes.
COLLEX_LANES std::uint64_t rounds(Collective kind, std::size_t bytes, std::size_t staging_bytes, int ranks) {
  const std::size_t capacity = round_capacity(kind, staging_bytes, ranks);
  return capacity == 0 ? 0 : (bytes + capacity - 1) / capacity;
}

// Lane `lane`'s bytes of a round of `length` bytes (offsets within the round):
// its fixed part of the round's capacity, clipped to the round. Fixed, because a
// lane that has finished a round stages the next one while other lanes may
// still read theirs: cut by the round's length instead, the last, shorter
// round would give one lane bytes that another still reads (the stand-in's
// tests found exactly that).
COLLEX_LANES Range lane_bytes(std::size_t capacity, std::size_t length, int lanes, int lane) {
  return vector_bytes(0, part(capacity / kVector, lanes, lane), length);
}

// Rank r's share of a lane's bytes (two-shot).
COLLEX_LANES Range share_bytes(Range lane, int ranks, int r) {
  return vector_bytes(lane.begin, part(vectors_in(lane.end - lane.begin), ranks, r), lane.end);
}

// What every rank's lane sees of the others: staging buffers and flag words,
// mapped into this process (device pointers on the GPU).
struct Peers {
  char* staging[kMaxRanks];         // each rank's staging buffer
  std::uint64_t* flags[kMaxRanks];  // each rank's flag area (kFlagWords words; see flag and signature_word)
  std::size_t staging_bytes = 0;    // each staging buffer's size, a multiple of kVector
  int ranks = 1;
  int rank = 0;
  int lanes = 1;
};

// One collective, as one rank runs it. `bytes`, a whole number of elements, is
// the array's size for all-reduce, broadcast and reduce, and the size of one
// rank's block for reduce-scatter (its output; the input holds ranks blocks)
// and all-gather (its input; the output holds ranks blocks).
struct Call {
  Collective kind = Collective::kAllReduce;
  const char* input = nullptr;
  char* output = nullptr;  // may be the input (all-reduce, broadcast, reduce)
  std::size_t bytes = 0;
  std::uint64_t first_seq = 1;  // the communicator's round count before the call, plus one
  Shots shots = Shots::kTwo;    // all-reduce and reduce
  int root = 0;                 // broadcast and reduce
  std::uint64_t signature = 0;  // what every rank's call must agree on (call_signature); 0: unchecked
  // A direct call: every rank's input and output as mapped in this process
  // (inputs[rank] == input, outputs[rank] == output); read in place, no staging.
  bool direct = false;
  const char* inputs[kMaxRanks] = {};
  char* outputs[kMaxRanks] = {};
};

// A call's collective, size, root, shots, dtype, operator and way (staged or
// direct: a staged rank would read a direct peer's empty staging buffer) in one word that
// every rank's lanes compare at each round's first barrier, so that ranks
// calling different collectives (which the flags alone would let run, each
// reading what it takes for its own) stop with an error instead of a wrong
// result. Exact, not a hash: sizes below 2^48 bytes; the host decodes it for
// the error (python/collex/cuda/lanes.py).
COLLEX_LANES std::uint64_t call_signature(const Call& c, int dtype, int op) {
  const std::uint64_t fields = static_cast<std::uint64_t>(c.kind) | static_cast<std::uint64_t>(c.root) << 3 |
                               static_cast<std::uint64_t>(c.shots == Shots::kTwo) << 6 |
                               static_cast<std::uint64_t>(dtype) << 7 | static_cast<std::uint64_t>(op) << 11 |
                               static_cast<std::uint64_t>(c.direct) << 14;
  return std::uint64_t{1} << 63 | fields << 48 | (c.bytes & ((std::uint64_t{1} << 48) - 1));
}

// Why a lane gave up (LaneStatus::failed).
enum Failure : std::uint64_t { kTimedOut = 1, kDisagreed = 2 };

// Where a lane that gave up says why: the first to fail sets `failed` and
// fills in the rest (on the GPU: device memory, or host memory mapped for it).
struct LaneStatus {
  std::uint64_t failed;  // a Failure
  std::uint64_t lane;
  std::uint64_t from;    // the rank whose flag did not come, or whose call differs
  std::uint64_t token;   // the value waited for: round * 4 + phase
  std::uint64_t waiter;  // the rank that waited
  std::uint64_t mine;    // kDisagreed: the waiter's call_signature
  std::uint64_t theirs;  // and the other's
};

// Why `peers` and `call` are outside what the protocol can run, or nullptr.
COLLEX_LANES const char* invalid(const Peers& w, const Call& c) {
  if (w.ranks < 1 || w.ranks > kMaxRanks || w.rank < 0 || w.rank >= w.ranks) return "bad rank or rank count";
  if (w.lanes < 1 || w.lanes > kMaxLanes) return "bad lane count";
  if (w.staging_bytes == 0 || w.staging_bytes % kVector != 0) return "staging buffers must hold whole vectors";
  if (static_cast<int>(c.kind) >= kNumCollectives) return "unknown collective";
  if (round_capacity(c.kind, w.staging_bytes, w.ranks) == 0) {
    return "staging buffers too small: reduce-scatter needs a vector per rank";
  }
  if (c.root < 0 || c.root >= w.ranks) return "root outside the ranks";
  if (c.direct) {
    // One shot would have a rank write its output while peers still read it in place.
    if (c.shots == Shots::kOne && c.kind == Collective::kAllReduce) return "a direct all-reduce is two-shot";
    for (int q = 0; q < w.ranks; ++q) {
      if (c.inputs[q] == nullptr || c.outputs[q] == nullptr) return "a direct call needs every rank's arrays";
    }
    if (c.inputs[w.rank] != c.input || c.outputs[w.rank] != c.output) {
      return "a direct call's own arrays are its input and output";
    }
  }
  return nullptr;
}

// Fills in everything but `failed` (which the first lane to give up has just
// claimed) from `why`: the host and device Lanes' report() share it.
COLLEX_LANES void fill_status(LaneStatus* status, const LaneStatus& why) {
  status->lane = why.lane;
  status->from = why.from;
  status->token = why.token;
  status->waiter = why.waiter;
  status->mine = why.mine;
  status->theirs = why.theirs;
}

// A rank's flag area: kMaxLanes * kMaxRanks flag words, then kMaxLanes signature words.
constexpr std::size_t kFlagWords = static_cast<std::size_t>(kMaxLanes) * (kMaxRanks + 1);

// The flag word in rank `owner`'s flags where rank `from`'s lane `lane` signals.
COLLEX_LANES std::uint64_t* flag(const Peers& w, int owner, int lane, int from) {
  return w.flags[owner] + static_cast<std::size_t>(lane) * static_cast<std::size_t>(w.ranks) + from;
}

// Where lane `lane` of rank `owner` puts its call's signature for its peers to
// compare, written by that lane alone. It holds still while they read it: the
// owner writes the next round's only after every peer has passed this round's
// last barrier.
COLLEX_LANES std::uint64_t* signature_word(const Peers& w, int owner, int lane) {
  return w.flags[owner] + static_cast<std::size_t>(kMaxLanes) * kMaxRanks + lane;
}

// Every peer's lane learns that this rank's lane has finished `phase` of round
// `seq`, and this lane waits until every peer's has; with a `signature`, it
// also publishes its own and checks each peer's. False (on every thread of the
// lane, the reason in the status) when a wait timed out or a peer's call differs.
// `ctx` is a Lane's flags (see the top of this file).
template <typename Flags>
COLLEX_LANES bool barrier(const Peers& w, int lane, std::uint64_t value, Flags& ctx, std::uint64_t signature = 0) {
  ctx.sync();  // every thread's part of the phase is written
  bool ok = true;
  if (ctx.leader()) {
    if (signature != 0) ctx.store(signature_word(w, w.rank, lane), signature);  // the signals below release it
    for (int q = 0; q < w.ranks; ++q) {
      if (q != w.rank) ctx.signal(flag(w, q, lane, w.rank), value);
    }
    for (int q = 0; q < w.ranks && ok; ++q) {
      if (q == w.rank) continue;
      LaneStatus why{};
      why.failed = kTimedOut;
      why.lane = static_cast<std::uint64_t>(lane);
      why.from = static_cast<std::uint64_t>(q);
      why.token = value;
      why.waiter = static_cast<std::uint64_t>(w.rank);
      ok = ctx.wait(flag(w, w.rank, lane, q), value);
      if (ok && signature != 0) {
        why.failed = kDisagreed;
        why.mine = signature;
        why.theirs = ctx.load(signature_word(w, q, lane));  // after the acquire of q's flag: q's for this round
        ok = why.theirs == signature;
      }
      if (!ok) ctx.report(why);
    }
  }
  return ctx.sync_and(ok);  // and no thread reads a peer's bytes before the leader saw its flag
}

}  // namespace collex::ipc
