// The direct copies (direct.h): broadcast and all-gather (staged, streamed
// through the slots, or read from the source in one copy), and the barrier.
#include "collex/algorithms/direct_steps.h"

namespace collex::direct {
using namespace detail;  // NOLINT: the steps of direct_steps.h are these files' vocabulary

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
  // Staged whole: small ones, and mid-size ones up to kStagedBytes that take the slots.
  if (staged_broadcast(w, bytes) || (staged(w, bytes) && streams(w, Streamable::kBroadcast, o))) {
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
        w.write(r, w.peer_result(r) + pushed.offset * c.es, c.in(pushed.offset), pushed.count * c.es, o.result_stores);
    }
  } else {
    for (int b = 0; b < c.p; ++b) {
      const Range part = block_range(o.count, c.p, b);
      if (b != o.root && part.count > 0)
        w.read(o.root, w.peer_input(o.root) + part.offset * c.es, c.out(part.offset), part.count * c.es,
               o.result_stores);
    }
  }
  c.sync(3, 2);
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
    kernels::copy_result(own, in, bytes, bytes * static_cast<std::size_t>(c.p), c.o.result_stores);
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
    if (r != c.me) w.read(r, w.peer_input(r), c.out(static_cast<std::size_t>(r) * o.count), bytes, o.result_stores);
  }
  c.sync(3, 2);
}

void barrier(Window& w, const Op& o) {
  Ctx c{w, o, w.rank(), w.size(), 1};
  c.sync(3, 1);
}

}  // namespace collex::direct
