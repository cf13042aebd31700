// The direct reductions (direct.h): all-reduce (staged, streamed, or read from
// peers' inputs in one copy), its two halves for the hierarchical algorithm,
// reduce and reduce-scatter.
#include "collex/algorithms/direct_steps.h"

namespace collex::direct {
using namespace detail;  // NOLINT: the steps of direct_steps.h are these files' vocabulary
namespace {

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
  if (kind == Streamable::kBroadcast ? staged_broadcast(w, bytes) : staged(w, bytes)) return 0;
  switch (kind) {
    case Streamable::kAllreduce: return bytes <= kPipelinedReduceBytes && pipelined_piece_bytes(w) > 0 ? bytes : 0;
    case Streamable::kBroadcast: return bytes <= kSlotsLimit ? bytes : 0;
    case Streamable::kAllgather: return bytes <= kPipelinedAllgatherBytes ? bytes : 0;
  }
  return 0;
}

std::size_t staged_write_bytes(const Window& w, Staged kind, const Op& o) {
  const std::size_t es = dtype_size(o.dtype);
  // Reduce-scatter stages its whole input (count is its result's); the others x.
  const std::size_t bytes =
      o.count * es * (kind == Staged::kReduceScatter ? static_cast<std::size_t>(w.size()) : std::size_t{1});
  return staged(w, bytes) && bytes >= kMinStreamedStage ? bytes : 0;
}

std::size_t large_bytes(const Window& w, Large kind, const Op& o) {
  const std::size_t x = o.count * dtype_size(o.dtype), p = static_cast<std::size_t>(w.size());
  // Reduce-scatter stages its whole input; all-gather's result is p blocks of x.
  const std::size_t staged_bytes = kind == Large::kReduceScatter ? x * p : x;
  const std::size_t bytes = kind == Large::kReduceScatter || kind == Large::kAllgather ? x * p : x;
  const bool through_slots = (kind == Large::kAllreduce && streams(w, Streamable::kAllreduce, o)) ||
                             (kind == Large::kBroadcast && streams(w, Streamable::kBroadcast, o)) ||
                             (kind == Large::kAllgather && streams(w, Streamable::kAllgather, o));
  const bool whole = kind == Large::kBroadcast ? staged_broadcast(w, staged_bytes) : staged(w, staged_bytes);
  const bool in_place = w.can_read_peers() && (kind == Large::kSegments || !whole) && !through_slots;
  return in_place ? bytes : 0;
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

// The elements rank r reduces in a large reduce. Where the others copy their
// blocks into an ordinary root result through the kernel (`root_heavy`), a
// non-root spends per element (p - 1) R + K + W against the root's
// (p - 1) R + K: R reading a peer's element, K reducing (about 0.6 R here), W
// writing into the root (about 1.4 R: the kernel's stores read each line
// first). The root's block is larger by that ratio, in eighths: 15 parts to 8
// on 2 ranks (65 %), 12 on 3, 11 on 4, 10 on 5 to 7, 9 from 8 on. Measured on 2
// ranks only (bench/README.md, "A larger block for the root").
Range reduce_block(std::size_t count, int p, int r, int root, bool root_heavy) {
  if (!root_heavy || p < 2) return block_range(count, p, r);
  constexpr unsigned kOther = 8;
  // kOther * W / ((p - 1) R + K) = 8 * 1.4 / (p - 0.4) = 56 / (5p - 2), rounded.
  const unsigned five_p_less_2 = 5 * static_cast<unsigned>(p) - 2;
  const unsigned root_parts = kOther + (56 + five_p_less_2 / 2) / five_p_less_2;
  const unsigned total = root_parts + kOther * static_cast<unsigned>(p - 1);
  auto start = [&](int k) {  // the elements before rank k's block
    unsigned parts = 0;
    for (int i = 0; i < k; ++i) parts += i == root ? root_parts : kOther;
    return static_cast<std::size_t>(static_cast<unsigned __int128>(count) * parts / total);
  };
  const std::size_t first = start(r);
  return {first, start(r + 1) - first};
}

}  // namespace

void reduce(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), dtype_size(o.dtype)};
  const std::size_t bytes = o.count * c.es;
  if (staged(w, bytes)) return c.me == o.root ? reduce_staged_at_root(c, bytes) : reduce_staged_not_root(c, bytes);
  // Every rank reduces its block of all inputs and writes it into the root's
  // result as it goes: the root then has every block when all ranks are done,
  // with no gathering after (which made reduces slower than all-reduces).
  w.publish(reinterpret_cast<std::uintptr_t>(o.in), c.me == o.root ? reinterpret_cast<std::uintptr_t>(o.out) : 0);
  // The root says whether its result is ordinary memory, which the others must
  // write into through the kernel (most of it outside memory they reach in
  // place); its own view decides, for all ranks alike.
  if (c.me == o.root) {
    const Span shared = w.shared_part(c.me, reinterpret_cast<std::uintptr_t>(o.out), bytes);
    w.publish_note(2 * shared.bytes >= bytes ? 0 : 1);
  }
  c.sync(1, 2);
  const Range mine = reduce_block(o.count, c.p, c.me, o.root, w.peer_note(o.root) == 1);
  if (c.me == o.root) {
    reduce_from_inputs(c, mine.offset, mine.count, c.out(mine.offset));
  } else {
    reduce_from_inputs(c, mine.offset, mine.count,
                       ResultAt{nullptr, o.root, w.peer_result(o.root) + mine.offset * c.es});
  }
  c.sync(3, 2);  // every block is in the root's result; nobody reads an input any more
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

}  // namespace collex::direct
