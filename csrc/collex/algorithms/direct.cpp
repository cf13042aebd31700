#include "collex/algorithms/direct.h"

#include <algorithm>
#include <cstring>

#include "collex/algorithms/schedule.h"
#include "collex/kernels/copy.h"
#include "collex/kernels/reduce.h"

namespace collex::direct {
namespace {

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
// beside the copy, small enough to stay in the core's cache until reduced.
constexpr std::size_t kPieceBytes = 256 * 1024;

// Reductions of at least this many bytes write their results with streaming
// stores: far larger than the caches, the result would be evicted before use.
constexpr std::size_t kStreamingBytes = 16 * 1024 * 1024;

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
void combine(void* dst, const char* const* src, int p, std::size_t n, DType dtype, ReduceOp op) {
  if (p == 1) {
    if (dst != src[0]) std::memmove(dst, src[0], n * dtype_size(dtype));
    return;
  }
  kernels::reduce(dst, src[0], src[1], n, dtype, op);
  for (int r = 2; r < p; ++r) kernels::reduce(dst, dst, src[r], n, dtype, op);
}

void divide_if_average(const Ctx& c, void* data, std::size_t n) {
  if (c.o.op == ReduceOp::kAvg && c.p > 1) kernels::divide(data, n, c.o.dtype, static_cast<double>(c.p));
}

// Copies `bytes` of `src` into this rank's slot for this operation. Before
// writing, waits until every rank has finished the operation that last used the
// same slot (two back).
void put_in_slot(Ctx& c, const void* src, std::size_t bytes, int steps) {
  const int parity = static_cast<int>(c.o.epoch & 1);
  if (c.o.epoch >= 2) c.w.wait_all(marker(c.o.epoch - 2, kDone), c.o.timeout_s, c.at(1, steps));
  if (bytes > 0) std::memcpy(c.w.slot(c.me, parity), src, bytes);
}

// put_in_slot, then waits until every rank has staged; returns each rank's slot.
std::vector<const char*> stage(Ctx& c, const void* src, std::size_t bytes, int steps) {
  const int parity = static_cast<int>(c.o.epoch & 1);
  put_in_slot(c, src, bytes, steps);
  c.sync(1, steps);
  std::vector<const char*> slots(static_cast<std::size_t>(c.p));
  for (int r = 0; r < c.p; ++r) slots[static_cast<std::size_t>(r)] = c.w.slot(r, parity);
  return slots;
}

void done_reading(Ctx& c) { c.w.arrive(marker(c.o.epoch, kDone)); }

// Combines k elements of every rank's data into `to`, in rank order. fetch(r,
// into) says where rank r's elements are: in place, or in `into` after reading
// them (tmp holds two such buffers). The last combination divides an average
// while the piece is still in cache and, with `streaming`, writes past the cache.
template <typename Fetch>
void combine_ranks(const Ctx& c, char* to, std::size_t k, char* const* tmp, bool streaming, Fetch&& fetch) {
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
void piece_buffers(const Ctx& c, std::size_t piece, char* tmp[3]) {
  constexpr std::size_t kPage = 4096;
  std::vector<char>& buf = *c.o.scratch;
  const std::size_t need = 3 * piece * c.es + kPage;
  if (buf.size() < need) buf.resize(need);
  char* base = buf.data() + (kPage - reinterpret_cast<std::uintptr_t>(buf.data()) % kPage) % kPage;
  for (int i = 0; i < 3; ++i) tmp[i] = base + static_cast<std::size_t>(i) * piece * c.es;
}

// Reduces elements [first, first + n) of every rank's input (read from the peers
// in pieces) into dst, in rank order.
void reduce_from_inputs(Ctx& c, std::size_t first, std::size_t n, char* dst) {
  const std::size_t piece = std::max<std::size_t>(1, kPieceBytes / c.es);
  char* tmp[3];
  piece_buffers(c, piece, tmp);
  const bool streaming = c.o.count * c.es >= kStreamingBytes;
  for (std::size_t done = 0; done < n; done += piece) {
    const std::size_t k = std::min(piece, n - done);
    const std::size_t off = first + done;
    char* to = dst + done * c.es;
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
      c.w.read(r, remote, into, k * c.es);
      return into;
    };
    if (c.p == 1) {
      if (to != own) std::memmove(to, own, k * c.es);
      continue;
    }
    combine_ranks(c, to, k, tmp, streaming, fetch);
  }
}

// Copies every peer's reduced block (block r of rank r's published result) into
// this rank's output: the all-gather half of a reduce-scatter + all-gather.
void fetch_reduced_blocks(Ctx& c) {
  for (int r = 0; r < c.p; ++r) {
    const Range b = block_range(c.o.count, c.p, r);
    if (r != c.me && b.count > 0) c.w.read(r, c.w.peer_result(r) + b.offset * c.es, c.out(b.offset), b.count * c.es);
  }
}

// The staged path of an all-reduce or reduce-scatter: every rank stages
// `staged_bytes` of its input, then `dst` gets elements [first, first + n) of the
// reduction, combined from every rank's slot in rank order.
void reduce_staged(Ctx& c, std::size_t staged_bytes, std::size_t first, std::size_t n, void* dst) {
  auto slots = stage(c, c.o.in, staged_bytes, 1);
  for (auto& s : slots) s += first * c.es;
  combine(dst, slots.data(), c.p, n, c.o.dtype, c.o.op);
  divide_if_average(c, dst, n);
  done_reading(c);
}

// Small operations stage whole (one copy in, one synchronisation); larger ones
// stream through the slots in chunks or read peers' buffers.
bool staged(const Window& w, std::size_t bytes) { return bytes <= std::min(w.slot_bytes(), kStagedBytes); }

// Bytes of each block that one step of allreduce_pipelined moves: a chunk of the
// slot holds one such piece per rank. 0 when that would be too small to pay for
// the step's three synchronisations.
std::size_t pipelined_piece_bytes(const Window& w) {
  const std::size_t piece = w.slot_bytes() / kRingChunks / static_cast<std::size_t>(w.size()) / 64 * 64;
  return piece >= kMinPipelinedPieceBytes ? piece : 0;
}

// Whether a mid-size operation streams through the slots (see midsize_bytes).
bool streams(const Window& w, Streamable kind, const Op& o) {
  const std::size_t bytes = midsize_bytes(w, kind, o);
  return bytes > 0 && (bytes <= o.slots_limit || !w.can_read_peers());
}

// Mid-size all-reduces of ordinary arrays stream through the slots, for the reason
// broadcast_pipelined does (attaching pins every 4 KiB page). Blocks as in the
// large all-reduce; step k moves piece k of every block, in three moves:
//   1. every rank puts piece k of each peer's block of its input into its chunk
//      (place b of the chunk for block b);
//   2. every rank reduces piece k of its own block from the peers' chunks and its
//      own input, in rank order, into place `me` of its chunk, and copies it out;
//   3. every rank copies the peers' reduced pieces out.
// Markers 3k, 3k + 1, 3k + 2 end the moves; a chunk is written again only after
// every rank has finished move 3 of the step that last used it.
void allreduce_pipelined(Ctx& c, std::size_t piece_bytes) {
  const Op& o = c.o;
  const int parity = static_cast<int>(o.epoch & 1);
  const std::size_t chunk = c.w.slot_bytes() / kRingChunks;
  const std::size_t per_step = piece_bytes / c.es;  // elements of each block per step
  const std::size_t steps = (block_range(o.count, c.p, 0).count + per_step - 1) / per_step;  // block 0 is the largest
  auto place = [&](int r, std::size_t k, int b) {
    return c.w.slot(r, parity) + (k % kRingChunks) * chunk + static_cast<std::size_t>(b) * piece_bytes;
  };
  // Elements [first, first + n) of the whole that piece k of block b covers.
  auto piece = [&](int b, std::size_t k) {
    const Range block = block_range(o.count, c.p, b);
    const std::size_t skip = std::min(block.count, k * per_step);
    return Range{block.offset + skip, std::min(per_step, block.count - skip)};
  };
  if (o.epoch >= 2) c.w.wait_all(marker(o.epoch - 2, kDone), o.timeout_s, c.at(1, 3));  // slots free again
  std::vector<const char*> sources(static_cast<std::size_t>(c.p));
  for (std::size_t k = 0; k < steps; ++k) {
    if (k >= kRingChunks) c.w.wait_all(chunk_marker(o.epoch, 3 * (k - kRingChunks) + 2), o.timeout_s, c.at(1, 3));
    for (int b = 0; b < c.p; ++b) {
      const Range part = piece(b, k);
      if (b != c.me && part.count > 0) std::memcpy(place(c.me, k, b), c.in(part.offset), part.count * c.es);
    }
    c.w.arrive(chunk_marker(o.epoch, 3 * k));
    c.w.wait_all(chunk_marker(o.epoch, 3 * k), o.timeout_s, c.at(1, 3));
    const Range mine = piece(c.me, k);
    char* result = place(c.me, k, c.me);
    if (mine.count > 0) {
      for (int r = 0; r < c.p; ++r)
        sources[static_cast<std::size_t>(r)] = r == c.me ? c.in(mine.offset) : place(r, k, c.me);
      combine(result, sources.data(), c.p, mine.count, o.dtype, o.op);
      divide_if_average(c, result, mine.count);
      std::memcpy(c.out(mine.offset), result, mine.count * c.es);
    }
    c.w.arrive(chunk_marker(o.epoch, 3 * k + 1));
    c.w.wait_all(chunk_marker(o.epoch, 3 * k + 1), o.timeout_s, c.at(2, 3));
    for (int r = 0; r < c.p; ++r) {
      const Range part = piece(r, k);
      if (r != c.me && part.count > 0) std::memcpy(c.out(part.offset), place(r, k, r), part.count * c.es);
    }
    c.w.arrive(chunk_marker(o.epoch, 3 * k + 2));
  }
  done_reading(c);
}

}  // namespace

bool supported(const Window& w, std::size_t staged_bytes) { return staged(w, staged_bytes) || w.can_read_peers(); }

std::size_t midsize_bytes(const Window& w, Streamable kind, const Op& o) {
  const std::size_t bytes = o.count * dtype_size(o.dtype);
  if (staged(w, bytes)) return 0;
  switch (kind) {
    case Streamable::kAllreduce: return bytes <= kPipelinedReduceBytes && pipelined_piece_bytes(w) > 0 ? bytes : 0;
    case Streamable::kBroadcast: return bytes <= kSlotsLimit ? bytes : 0;
    case Streamable::kAllgather: return bytes <= kPipelinedAllgatherBytes ? bytes : 0;
  }
  return 0;
}

void allreduce(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  const std::size_t bytes = o.count * c.es;
  if (staged(w, bytes)) return reduce_staged(c, bytes, 0, o.count, o.out);
  if (streams(w, Streamable::kAllreduce, o)) return allreduce_pipelined(c, pipelined_piece_bytes(w));
  w.publish(reinterpret_cast<std::uintptr_t>(o.in), reinterpret_cast<std::uintptr_t>(o.out));
  c.sync(1, 3);
  const Range mine = block_range(o.count, c.p, c.me);
  reduce_from_inputs(c, mine.offset, mine.count, c.out(mine.offset));
  c.sync(2, 3);  // every block reduced; peers no longer read our input
  fetch_reduced_blocks(c);
  c.sync(3, 3);  // nobody reads our result any more: the caller may reuse it
}

void reduce_own_block(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  w.publish(reinterpret_cast<std::uintptr_t>(o.in), 0);
  c.sync(1, 2);
  const Range mine = block_range(o.count, c.p, c.me);
  reduce_from_inputs(c, mine.offset, mine.count, c.out(mine.offset));
  c.sync(3, 2);  // peers no longer read our input
}

void gather_blocks(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  w.publish(0, reinterpret_cast<std::uintptr_t>(o.out));
  c.sync(1, 2);
  fetch_reduced_blocks(c);
  c.sync(3, 2);  // nobody reads our blocks any more
}

namespace {

// Cross-memory attach pins every page it copies, which costs more than the copy
// itself for data that fits in cache. Mid-size broadcasts therefore stream
// through the root's staging slot instead: the root copies chunk k in while the
// receivers copy chunk k - 1 out (two copies, both cache-resident, no system
// calls), at most kRingChunks chunks ahead of the slowest receiver.
void broadcast_pipelined(Ctx& c) {
  const Op& o = c.o;
  const std::size_t bytes = o.count * c.es;
  char* ring = c.w.slot(o.root, static_cast<int>(o.epoch & 1));
  const std::size_t chunk = c.w.slot_bytes() / kRingChunks;
  const std::size_t chunks = (bytes + chunk - 1) / chunk;
  if (c.me == o.root) {
    if (o.epoch >= 2) c.w.wait_all(marker(o.epoch - 2, kDone), o.timeout_s, c.at(1, 1));  // slot free again
    const char* in = static_cast<const char*>(o.in);
    for (std::size_t k = 0; k < chunks; ++k) {
      // Every receiver has emptied the place chunk k goes to.
      if (k >= kRingChunks) c.w.wait_all(chunk_marker(o.epoch, k - kRingChunks), o.timeout_s, c.at(1, 1));
      std::memcpy(ring + (k % kRingChunks) * chunk, in + k * chunk, std::min(chunk, bytes - k * chunk));
      c.w.arrive(chunk_marker(o.epoch, k));
    }
  } else {
    char* out = static_cast<char*>(o.out);
    for (std::size_t k = 0; k < chunks; ++k) {
      c.w.wait_for(o.root, chunk_marker(o.epoch, k), o.timeout_s, c.at(1, 1));
      std::memcpy(out + k * chunk, ring + (k % kRingChunks) * chunk, std::min(chunk, bytes - k * chunk));
      c.w.arrive(chunk_marker(o.epoch, k));
    }
  }
  done_reading(c);
}

}  // namespace

void broadcast(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  const std::size_t bytes = o.count * c.es;
  if (staged(w, bytes)) {
    // Only the root stages and only its slot is read: nobody waits for anyone else.
    const int parity = static_cast<int>(o.epoch & 1);
    if (c.me == o.root) {
      put_in_slot(c, o.in, bytes, 1);  // its done marker below also says the data is in
    } else {
      w.wait_for(o.root, marker(o.epoch, 1), o.timeout_s, c.at(1, 1));
      if (bytes > 0) std::memcpy(o.out, w.slot(o.root, parity), bytes);
    }
    done_reading(c);
    return;
  }
  if (streams(w, Streamable::kBroadcast, o)) return broadcast_pipelined(c);
  // The root writes block `root` of the data into every receiver while each
  // receiver reads the other p - 1 blocks: every rank copies (p - 1)/p of the
  // buffer, instead of receivers copying all of it while the root idles.
  w.publish(reinterpret_cast<std::uintptr_t>(o.in), reinterpret_cast<std::uintptr_t>(o.out));
  c.sync(1, 2);
  const Range pushed = block_range(o.count, c.p, o.root);
  if (c.me == o.root) {
    for (int r = 0; r < c.p; ++r) {
      if (r != o.root && pushed.count > 0)
        w.write(r, w.peer_result(r) + pushed.offset * c.es, c.in(pushed.offset), pushed.count * c.es);
    }
  } else {
    for (int b = 0; b < c.p; ++b) {
      const Range part = block_range(o.count, c.p, b);
      if (b != o.root && part.count > 0)
        w.read(o.root, w.peer_input(o.root) + part.offset * c.es, c.out(part.offset), part.count * c.es);
    }
  }
  c.sync(3, 2);
}

namespace {

// A small reduce on a rank that keeps no result: it reads no one, so it stages
// its input and is done without waiting for the others (its slot is not written
// again before every rank has finished this operation).
void reduce_staged_not_root(Ctx& c, std::size_t bytes) {
  put_in_slot(c, c.o.in, bytes, 1);
  done_reading(c);
}

// The root's side of a small reduce: the other ranks stage their inputs and are
// done (reduce_staged_not_root); the root reads its own input in place, so
// it neither stages nor marks a first step, and waits for nobody but the others'
// staging. Its slot, unwritten, needs no wait for the operation two back.
void reduce_staged_at_root(Ctx& c, std::size_t bytes) {
  const int parity = static_cast<int>(c.o.epoch & 1);
  const char* own = static_cast<const char*>(c.o.in);
  if (c.o.out == c.o.in && c.me >= 2) {
    // combine() writes the result before it reads sources after the second.
    std::vector<char>& copy = *c.o.scratch;
    if (copy.size() < bytes) copy.resize(bytes);
    if (bytes > 0) std::memcpy(copy.data(), own, bytes);
    own = copy.data();
  }
  std::vector<const char*> sources(static_cast<std::size_t>(c.p));
  for (int r = 0; r < c.p; ++r) {
    if (r != c.me) c.w.wait_for(r, marker(c.o.epoch, 1), c.o.timeout_s, c.at(1, 1));
    sources[static_cast<std::size_t>(r)] = r == c.me ? own : c.w.slot(r, parity);
  }
  combine(c.o.out, sources.data(), c.p, c.o.count, c.o.dtype, c.o.op);
  divide_if_average(c, c.o.out, c.o.count);
  done_reading(c);
}

}  // namespace

void reduce(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  const std::size_t bytes = o.count * c.es;
  if (staged(w, bytes)) return c.me == o.root ? reduce_staged_at_root(c, bytes) : reduce_staged_not_root(c, bytes);
  // Reduce-scatter into the root's result or a scratch block, then the root gathers.
  const Range mine = block_range(o.count, c.p, c.me);
  char* dst = c.out(mine.offset);
  if (c.me != o.root) {
    // Kept between calls: a fresh buffer would be zeroed and faulted in every time.
    if (o.block->size() < mine.count * c.es) o.block->resize(mine.count * c.es);
    dst = o.block->data();
  }
  // Published so that peer_result(r) + offset * es addresses rank r's block.
  const std::uintptr_t result = reinterpret_cast<std::uintptr_t>(dst) - mine.offset * c.es;
  w.publish(reinterpret_cast<std::uintptr_t>(o.in), result);
  c.sync(1, 3);
  reduce_from_inputs(c, mine.offset, mine.count, dst);
  c.sync(2, 3);
  if (c.me == o.root) {
    fetch_reduced_blocks(c);
  }
  c.sync(3, 3);
}

namespace {

// An all-gather's own block, copied from the input into its place in the
// output (nothing to do in place). Part of a result of p blocks: large ones
// bypass the cache.
void place_own_block(Ctx& c) {
  const std::size_t bytes = c.o.count * c.es;
  char* own = c.out(static_cast<std::size_t>(c.me) * c.o.count);
  const char* in = c.in(0);
  if (own + bytes <= in || in + bytes <= own) {
    kernels::copy_result(own, in, bytes, bytes * static_cast<std::size_t>(c.p));
  } else if (own != in) {
    std::memmove(own, in, bytes);
  }
}

// The all-gather counterpart of broadcast_pipelined: every rank streams its
// block through its own slot, and all ranks move in step: at step k each puts
// its chunk k in, then copies chunk k of every peer out. Two markers per step:
// 2k (own chunk k is in) and 2k + 1 (every peer's chunk k is out).
void allgather_pipelined(Ctx& c) {
  const Op& o = c.o;
  const std::size_t bytes = o.count * c.es;
  const int parity = static_cast<int>(o.epoch & 1);
  const std::size_t chunk = c.w.slot_bytes() / kRingChunks;
  const std::size_t chunks = (bytes + chunk - 1) / chunk;
  place_own_block(c);
  if (o.epoch >= 2) c.w.wait_all(marker(o.epoch - 2, kDone), o.timeout_s, c.at(1, 1));  // slots free again
  const char* in = static_cast<const char*>(o.in);
  char* mine = c.w.slot(c.me, parity);
  for (std::size_t k = 0; k < chunks; ++k) {
    const std::size_t at = k * chunk, len = std::min(chunk, bytes - at);
    const std::size_t place = (k % kRingChunks) * chunk;
    // Every peer has copied out what was in this place (chunk k - kRingChunks).
    if (k >= kRingChunks) c.w.wait_all(chunk_marker(o.epoch, 2 * (k - kRingChunks) + 1), o.timeout_s, c.at(1, 1));
    std::memcpy(mine + place, in + at, len);
    c.w.arrive(chunk_marker(o.epoch, 2 * k));
    for (int r = 0; r < c.p; ++r) {
      if (r == c.me) continue;
      c.w.wait_for(r, chunk_marker(o.epoch, 2 * k), o.timeout_s, c.at(1, 1));
      std::memcpy(c.out(static_cast<std::size_t>(r) * o.count) + at, c.w.slot(r, parity) + place, len);
    }
    c.w.arrive(chunk_marker(o.epoch, 2 * k + 1));
  }
  done_reading(c);
}

}  // namespace

void allgather(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  const std::size_t bytes = o.count * c.es;
  if (staged(w, bytes)) {
    auto slots = stage(c, o.in, bytes, 1);
    for (int r = 0; r < c.p; ++r) {
      if (bytes > 0)
        std::memcpy(c.out(static_cast<std::size_t>(r) * o.count), slots[static_cast<std::size_t>(r)], bytes);
    }
    done_reading(c);
    return;
  }
  if (streams(w, Streamable::kAllgather, o)) return allgather_pipelined(c);
  place_own_block(c);
  w.publish(reinterpret_cast<std::uintptr_t>(o.in), 0);
  c.sync(1, 2);
  for (int r = 0; r < c.p; ++r) {
    if (r != c.me) w.read(r, w.peer_input(r), c.out(static_cast<std::size_t>(r) * o.count), bytes);
  }
  c.sync(3, 2);
}

void reduce_scatter(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  const std::size_t total = o.count * static_cast<std::size_t>(c.p);
  const std::size_t offset = static_cast<std::size_t>(c.me) * o.count;
  if (staged(w, total * c.es)) return reduce_staged(c, total * c.es, offset, o.count, o.out);
  w.publish(reinterpret_cast<std::uintptr_t>(o.in), 0);
  c.sync(1, 2);
  reduce_from_inputs(c, offset, o.count, static_cast<char*>(o.out));
  c.sync(3, 2);
}

namespace {

// Where each segment starts in the bytes of the whole (the same on every rank).
std::vector<std::size_t> segment_starts(const std::vector<Span>& segments) {
  std::vector<std::size_t> starts(segments.size());
  std::size_t at = 0;
  for (std::size_t i = 0; i < segments.size(); ++i) {
    starts[i] = at;
    at += segments[i].bytes;
  }
  return starts;
}

// The spans of `table` that hold bytes [first, first + bytes) of the whole.
void slice(const std::vector<Span>& table, const std::vector<std::size_t>& starts, std::size_t first, std::size_t bytes,
           std::vector<Span>& out) {
  out.clear();
  if (bytes == 0) return;
  std::size_t i = static_cast<std::size_t>(std::upper_bound(starts.begin(), starts.end(), first) - starts.begin()) - 1;
  std::size_t offset = first - starts[i];
  for (; bytes > 0; ++i, offset = 0) {
    const std::size_t take = std::min(bytes, table[i].bytes - offset);
    if (take > 0) out.push_back(Span{table[i].address + offset, take});
    bytes -= take;
  }
}

// Copies the spans, in order, into `to`; and back: `from` into the spans.
void gather(const std::vector<Span>& spans, char* to) {
  for (const Span& s : spans) {
    std::memcpy(to, reinterpret_cast<const void*>(s.address), s.bytes);
    to += s.bytes;
  }
}
void scatter(const char* from, const std::vector<Span>& spans) {
  for (const Span& s : spans) {
    std::memcpy(reinterpret_cast<void*>(s.address), from, s.bytes);
    from += s.bytes;
  }
}

}  // namespace

void allreduce_segments(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  const std::vector<Span>& mine = *o.segments;
  const std::vector<std::size_t> starts = segment_starts(mine);
  w.publish(reinterpret_cast<std::uintptr_t>(mine.data()), 0);
  c.sync(1, 3);

  // Every rank's table of where its segments lie.
  std::vector<std::vector<Span>> tables(static_cast<std::size_t>(c.p));
  for (int r = 0; r < c.p; ++r) {
    auto& t = tables[static_cast<std::size_t>(r)];
    if (r == c.me) {
      t = mine;
    } else if (!mine.empty()) {
      t.resize(mine.size());
      w.read(r, w.peer_input(r), t.data(), mine.size() * sizeof(Span));
    }
  }

  // Reduce-scatter: this rank's block, a piece at a time, from every rank's segments.
  const std::size_t piece = std::max<std::size_t>(1, kPieceBytes / c.es);
  char* tmp[3];
  piece_buffers(c, piece, tmp);
  char* acc = tmp[2];  // the reduced piece, or this rank's part set aside
  const bool streaming = o.count * c.es >= kStreamingBytes;
  std::vector<Span> spans, own;
  const Range block = block_range(o.count, c.p, c.me);
  for (std::size_t done = 0; done < block.count && c.p > 1; done += piece) {
    const std::size_t k = std::min(piece, block.count - done);
    const std::size_t first = (block.offset + done) * c.es, bytes = k * c.es;
    slice(mine, starts, first, bytes, own);
    // A piece inside one of this rank's segments is reduced straight into it
    // (streaming past the cache when the bucket is large). Only rank 0's own part
    // is then read in place: a later rank's would be overwritten before it is
    // read, or alias the kernel's second source, so it is copied aside first.
    const bool in_place = own.size() == 1;
    char* to = in_place ? reinterpret_cast<char*>(own[0].address) : acc;
    if (in_place && c.me != 0) std::memcpy(acc, to, bytes);
    combine_ranks(c, to, k, tmp, streaming && in_place, [&](int r, char* into) -> const char* {
      if (r == c.me && in_place) return c.me == 0 ? to : acc;
      if (r == c.me) {
        gather(own, into);
        return into;
      }
      slice(tables[static_cast<std::size_t>(r)], starts, first, bytes, spans);
      const Span local{reinterpret_cast<std::uintptr_t>(into), bytes};
      w.read_spans(r, spans.data(), spans.size(), &local, 1);
      return into;
    });
    if (!in_place) scatter(acc, own);
  }
  c.sync(2, 3);  // every block reduced where it lies

  // All-gather: every peer's reduced block, straight from its segments into ours.
  std::vector<Span> local;
  for (int r = 0; r < c.p; ++r) {
    const Range b = block_range(o.count, c.p, r);
    if (r == c.me || b.count == 0) continue;
    slice(tables[static_cast<std::size_t>(r)], starts, b.offset * c.es, b.count * c.es, spans);
    slice(mine, starts, b.offset * c.es, b.count * c.es, local);
    w.read_spans(r, spans.data(), spans.size(), local.data(), local.size());
  }
  c.sync(3, 3);  // nobody reads our segments any more
}

void barrier(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), 1};
  c.sync(3, 1);
}

}  // namespace collex::direct
