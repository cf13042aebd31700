// The steps the direct algorithms (direct.cpp, direct_copies.cpp,
// direct_segments.cpp) are made of: progress markers, the per-call context, and
// staging, fetching and combining pieces of the ranks' data. Internal to them.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "collex/algorithms/direct.h"
#include "collex/algorithms/schedule.h"
#include "collex/kernels/copy.h"
#include "collex/kernels/reduce.h"

namespace collex::direct::detail {

// Markers: operation e passes step 1 (inputs published or staged), step 2 (own
// block reduced) and step 3 (done reading peers), which is the last marker of
// the operation; pipelined broadcasts and all-gathers count their chunks in
// between. Markers only grow.
constexpr std::uint64_t kMarkersPerOp = kMarkersPerEpoch;
constexpr int kDone = 3;
constexpr std::uint64_t marker(std::uint64_t epoch, int step) {
  return epoch * kMarkersPerOp + (step == kDone ? kMarkersPerOp - 1 : static_cast<std::uint64_t>(step));
}
constexpr std::uint64_t chunk_marker(std::uint64_t epoch, std::size_t chunk) {
  return epoch * kMarkersPerOp + kDone + chunk;
}

// Pieces read from a peer at a time: big enough that the system call is cheap
// beside the copy, small enough to stay in the core's cache until reduced: the
// core's L2 (within [256 KiB, 2 MiB]). On the project's 2-core EPYC (1 MiB of
// L2) 1 MiB pieces beat 256 KiB by 4-26 % on 32 and 64 MiB reduce-scatters,
// all-reduces and reduces, and 2 MiB pieces were mixed (bench/README.md).
inline std::size_t piece_bytes() {
  static const std::size_t bytes = [] {
    constexpr std::size_t kMin = 256 * 1024, kMax = 2 * 1024 * 1024, kPage = 4096;
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    const std::size_t b = l2 > 0 ? static_cast<std::size_t>(l2) / kPage * kPage : kMin;
    return std::min(std::max(b, kMin), kMax);
  }();
  return bytes;
}

// Reductions of at least this many bytes write their results with streaming
// stores (unless Op::result_stores says otherwise): far larger than the
// caches, the result would be evicted before use.
constexpr std::size_t kStreamingBytes = 16 * 1024 * 1024;

// Whether the reductions of an operation of `bytes` write their results with
// streaming stores.
inline bool streams_results(const Op& o, std::size_t bytes) {
  return o.result_stores == kernels::Stores::kBySize ? bytes >= kStreamingBytes
                                                     : o.result_stores == kernels::Stores::kStreaming;
}

// Broadcasts up to kSlotsLimit may stream through the root's staging slot in
// chunks (see broadcast_pipelined), all-gathers whose blocks are up to a quarter
// of it likewise (allgather_pipelined; on 3 ranks they lost at 32 MiB); larger
// ones read the source in one copy (bench/README.md).
constexpr std::size_t kPipelinedAllgatherBytes = kSlotsLimit / 4;
// Chunks in flight in a slot: the owner fills one while its readers empty others.
constexpr std::size_t kRingChunks = 4;
// All-reduces up to this size stream through the slots where broadcasts do
// (allreduce_pipelined), if each step moves at least kMinPipelinedPieceBytes of
// every block; larger ones read peers' inputs in one copy.
constexpr std::size_t kPipelinedReduceBytes = 4 * 1024 * 1024;
constexpr std::size_t kMinPipelinedPieceBytes = 16 * 1024;

struct Ctx {
  Window& w;
  const Op& o;
  int me, p;
  std::size_t es;

  // Names step `step` of `steps` in a wait's timeout message.
  struct Step final : WaitContext {
    const OpLabel& label;
    int step, steps;
    Step(const OpLabel& l, int s, int n) : label(l), step(s), steps(n) {}
    std::string describe() const override {
      return label.describe() + " step " + std::to_string(step) + "/" + std::to_string(steps);
    }
  };
  Step at(int step, int steps) const { return Step(o.label, step, steps); }
  char* out(std::size_t element) const { return static_cast<char*>(o.out) + element * es; }
  const char* in(std::size_t element) const { return static_cast<const char*>(o.in) + element * es; }
  // Arrives at marker step (1-3) of this operation and waits for every rank;
  // `steps` is how many waits the operation has, for the error message.
  void sync(int step, int steps) {
    w.arrive(marker(o.epoch, step));
    w.wait_all(marker(o.epoch, step), o.timeout_s, at(step == 3 ? steps : step, steps));
  }
};

// dst = src[0] OP src[1] OP ... OP src[p-1], left to right. dst may be src[0] or
// src[1] but no later source (it is written before those are read).
inline void combine(void* dst, const char* const* src, int p, std::size_t n, DType dtype, ReduceOp op) {
  if (p == 1) {
    if (dst != src[0]) std::memmove(dst, src[0], n * dtype_size(dtype));
    return;
  }
  kernels::reduce(dst, src[0], src[1], n, dtype, op);
  for (int r = 2; r < p; ++r) kernels::reduce(dst, dst, src[r], n, dtype, op);
}

inline void divide_if_average(const Ctx& c, void* data, std::size_t n) {
  if (c.o.op == ReduceOp::kAvg && c.p > 1) kernels::divide(data, n, c.o.dtype, static_cast<double>(c.p));
}

// Copies `bytes` of `src` into this rank's slot for this operation, with
// streaming stores when the operation says so (Op::stream_stage). Before
// writing, waits until every rank has finished the operation that last used the
// same slot (two back).
inline void put_in_slot(Ctx& c, const void* src, std::size_t bytes, int steps) {
  const int parity = static_cast<int>(c.o.epoch & 1);
  if (c.o.epoch >= 2) c.w.wait_all(marker(c.o.epoch - 2, kDone), c.o.timeout_s, c.at(1, steps));
  if (bytes == 0) return;
  if (c.o.stream_stage) {
    kernels::copy_result(c.w.slot(c.me, parity), src, bytes, kernels::kStreamingCopyBytes);
  } else {
    std::memcpy(c.w.slot(c.me, parity), src, bytes);
  }
}

// put_in_slot, then waits until every rank has staged; returns each rank's slot.
inline std::vector<const char*> stage(Ctx& c, const void* src, std::size_t bytes, int steps) {
  const int parity = static_cast<int>(c.o.epoch & 1);
  put_in_slot(c, src, bytes, steps);
  c.sync(1, steps);
  std::vector<const char*> slots(static_cast<std::size_t>(c.p));
  for (int r = 0; r < c.p; ++r) slots[static_cast<std::size_t>(r)] = c.w.slot(r, parity);
  return slots;
}

inline void done_reading(Ctx& c) { c.w.arrive(marker(c.o.epoch, kDone)); }

// The scratch buffers of one piece of a reduction (piece_buffers).
using PieceBuffers = std::array<char*, 4>;

// Combines k elements of every rank's data into `to`, in rank order. fetch(r,
// into) says where rank r's elements are: in place, or in `into` after reading
// them (tmp holds two such buffers). The last combination divides an average
// while the piece is still in cache and, with `streaming`, writes past the cache.
template <typename Fetch>
inline void combine_ranks(const Ctx& c, char* to, std::size_t k, const PieceBuffers& tmp, bool streaming,
                          Fetch&& fetch) {
  const bool average = c.o.op == ReduceOp::kAvg && c.p > 1;
  auto combine = [&](const char* x, const char* y, bool last) {
    if (last && streaming) {
      kernels::reduce_streaming(to, x, y, k, c.o.dtype, c.o.op, average ? c.p : 1);
    } else {
      kernels::reduce(to, x, y, k, c.o.dtype, c.o.op);
      if (last && average) kernels::divide(to, k, c.o.dtype, static_cast<double>(c.p));
    }
  };
  const char* a = fetch(0, tmp[0]);
  const char* b = fetch(1, tmp[1]);
  combine(a, b, c.p == 2);
  for (int r = 2; r < c.p; ++r) combine(to, fetch(r, tmp[0]), r == c.p - 1);
}

// Three buffers of `piece` elements each in the scratch space, for pieces read
// from peers. They start on a page boundary: with them where malloc put them,
// the kernel's copy from a page-aligned peer input ran 4x slower on the
// project's VM (a 2 MiB reduce-scatter 860-960 us, whatever the output's
// offset); page-aligned pieces took 200-240 us at every input offset tried.
// A fourth holds a result piece on its way to another rank's memory.
inline PieceBuffers piece_buffers(const Ctx& c, std::size_t piece) {
  constexpr std::size_t kPage = 4096;
  std::vector<char>& buf = *c.o.scratch;
  const std::size_t need = 4 * piece * c.es + kPage;
  if (buf.size() < need) buf.resize(need);
  char* base = buf.data() + (kPage - reinterpret_cast<std::uintptr_t>(buf.data()) % kPage) % kPage;
  PieceBuffers tmp;
  for (std::size_t i = 0; i < tmp.size(); ++i) tmp[i] = base + i * piece * c.es;
  return tmp;
}

// Where reduce_from_inputs puts its result: this rank's memory at `local`, or
// rank `rank`'s at address `remote` (a reduce's root: each rank writes the block
// it reduced straight into the root's output, so the root fetches nothing after).
struct ResultAt {
  char* local = nullptr;
  int rank = -1;
  std::uintptr_t remote = 0;
};

// The elements [from, to) of `count` at rank r's `base` that lie on shared
// pages, when only some do (an ordinary array moved onto them keeps its first
// and last pages private); {0, count} when all or none do.
struct SharedElements {
  std::size_t from, to;
};
inline SharedElements shared_elements(const Window& w, int r, std::uintptr_t base, std::size_t count, std::size_t es) {
  const Span s = w.shared_part(r, base, count * es);
  if (s.bytes == 0 || s.bytes == count * es) return {0, count};
  return {(s.address - base + es - 1) / es, (s.address - base + s.bytes) / es};
}

// At most k elements from element `at`, ending at an edge of `shared` where the
// piece would otherwise straddle one: the part inside is then read (or
// written) in place, and only the few elements outside go through the kernel,
// instead of the whole piece.
inline std::size_t up_to_edge(std::size_t at, std::size_t k, SharedElements shared) {
  if (at < shared.from) return std::min(k, shared.from - at);
  if (at < shared.to) return std::min(k, shared.to - at);
  return k;
}

// Reduces elements [first, first + n) of every rank's input (read from the peers
// in pieces) into `at`, in rank order. Pieces end at the edges of this rank's
// input's shared part (its peers' arrays lie alike in their pages where each
// came from its own mapping; where not, a straddling piece is still read right,
// in parts) and of a peer's result it writes into.
inline void reduce_from_inputs(Ctx& c, std::size_t first, std::size_t n, ResultAt at) {
  const std::size_t piece = std::max<std::size_t>(1, piece_bytes() / c.es);
  const PieceBuffers tmp = piece_buffers(c, piece);
  const bool elsewhere = at.rank >= 0 && at.rank != c.me;
  const SharedElements input = shared_elements(c.w, c.me, reinterpret_cast<std::uintptr_t>(c.o.in), first + n, c.es);
  const SharedElements result = elsewhere ? shared_elements(c.w, at.rank, at.remote, n, c.es) : SharedElements{0, n};
  for (std::size_t done = 0, k = 0; done < n; done += k) {
    const std::size_t off = first + done;
    k = up_to_edge(done, up_to_edge(off, std::min(piece, n - done), input), result);
    // A result for another rank is made in a piece buffer that stays in cache and
    // then written across (or in place, when its memory is mapped here).
    char* to = elsewhere ? tmp[3] : at.local + done * c.es;
    const char* mapped_to = elsewhere ? c.w.mapped(at.rank, at.remote + done * c.es, k * c.es) : nullptr;
    // In place there, the result overwrites that rank's input: combined into
    // directly, it would be written before a rank after the second is read.
    if (mapped_to && at.rank >= 2 && c.w.peer_input(at.rank) == c.w.peer_result(at.rank)) mapped_to = nullptr;
    if (mapped_to) to = const_cast<char*>(mapped_to);
    const bool streaming = streams_results(c.o, c.o.count * c.es) && (!elsewhere || mapped_to);
    // Own input, saved first if the result overwrites it before it is combined.
    const char* own = c.in(off);
    if (static_cast<const void*>(to) == static_cast<const void*>(own) && c.me >= 2) {
      std::memcpy(tmp[2], own, k * c.es);
      own = tmp[2];
    }
    auto fetch = [&](int r, char* into) -> const char* {
      if (r == c.me) return own;
      const std::uintptr_t remote = c.w.peer_input(r) + off * c.es;
      if (const char* in_place = c.w.mapped(r, remote, k * c.es)) return in_place;  // symmetric buffer
      c.w.read(r, remote, into, k * c.es, kernels::Stores::kOrdinary);              // a piece buffer, in cache
      return into;
    };
    if (c.p == 1) {
      if (to != own) std::memmove(to, own, k * c.es);
    } else {
      combine_ranks(c, to, k, tmp, streaming, fetch);
    }
    if (elsewhere && !mapped_to) c.w.write(at.rank, at.remote + done * c.es, to, k * c.es, c.o.result_stores);
  }
}

inline void reduce_from_inputs(Ctx& c, std::size_t first, std::size_t n, char* dst) {
  reduce_from_inputs(c, first, n, ResultAt{dst, -1, 0});
}

// Copies every peer's reduced block (block r of rank r's published result) into
// this rank's output: the all-gather half of a reduce-scatter + all-gather.
inline void fetch_reduced_blocks(Ctx& c) {
  for (int r = 0; r < c.p; ++r) {
    const Range b = block_range(c.o.count, c.p, r);
    if (r != c.me && b.count > 0)
      c.w.read(r, c.w.peer_result(r) + b.offset * c.es, c.out(b.offset), b.count * c.es, c.o.result_stores);
  }
}

// The staged path of an all-reduce or reduce-scatter: every rank stages
// `staged_bytes` of its input, then `dst` gets elements [first, first + n) of the
// reduction, combined from every rank's slot in rank order.
inline void reduce_staged(Ctx& c, std::size_t staged_bytes, std::size_t first, std::size_t n, void* dst) {
  auto slots = stage(c, c.o.in, staged_bytes, 1);
  for (auto& s : slots) s += first * c.es;
  combine(dst, slots.data(), c.p, n, c.o.dtype, c.o.op);
  divide_if_average(c, dst, n);
  done_reading(c);
}

// Small operations stage whole (one copy in, one synchronisation); larger ones
// stream through the slots in chunks or read peers' buffers. Broadcasts stage
// up to a smaller size (staged_broadcast).
inline bool staged(const Window& w, std::size_t bytes, std::size_t limit = kStagedBytes) {
  return bytes <= std::min(w.slot_bytes(), limit);
}
inline bool staged_broadcast(const Window& w, std::size_t bytes) { return staged(w, bytes, kStagedBroadcastBytes); }

// Bytes of each block that one step of allreduce_pipelined moves: a chunk of the
// slot holds one such piece per rank. 0 when that would be too small to pay for
// the step's three synchronisations.
inline std::size_t pipelined_piece_bytes(const Window& w) {
  const std::size_t piece = w.slot_bytes() / kRingChunks / static_cast<std::size_t>(w.size()) / 64 * 64;
  return piece >= kMinPipelinedPieceBytes ? piece : 0;
}

// Whether a mid-size operation streams through the slots (see midsize_bytes).
inline bool streams(const Window& w, Streamable kind, const Op& o) {
  const std::size_t bytes = midsize_bytes(w, kind, o);
  return bytes > 0 && (bytes <= o.slots_limit || !w.can_read_peers());
}

}  // namespace collex::direct::detail
