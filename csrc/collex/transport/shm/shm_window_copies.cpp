// The copying half of the node's window: copies from and to peers' memory,
// in place where it lies in memory this rank maps (symmetric buffers, peers'
// shared regions) and by cross-memory attach elsewhere, and the lookup of the
// shared regions each rank publishes per operation. The segment is in
// shm_window.cpp, the waits in shm_window_waits.cpp.
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "collex/common/errors.h"
#include "collex/common/failure.h"
#include "collex/common/process.h"
#include "collex/common/time_parts.h"
#include "collex/common/waiting.h"
#include "collex/kernels/copy.h"
#include "collex/transport/shm/shared_pages.h"
#include "collex/transport/shm/shm_control.h"
#include "collex/transport/shm/shm_window.h"

namespace collex {

void ShmWindow::publish_spans(const Span* spans, std::size_t n) {
  Control& mine = control(rank_);
  std::uint32_t count = 0;
  shm::SharedRegion s;
  for (std::size_t i = 0; i < n && count < kDirectory; ++i) {
    if (spans[i].bytes == 0 || !shm::find(spans[i].address, &s)) continue;
    bool listed = false;
    for (std::uint32_t k = 0; k < count && !listed; ++k) listed = mine.directory[k].id == s.id;
    if (!listed) mine.directory[count++] = shm::PublishedRegion::of(s);
  }
  mine.directory_count = count;
}

const shm::PublishedRegion* ShmWindow::region_at(int r, std::uintptr_t address, std::uintptr_t* next_start) const {
  const Control& c = control(r);
  const shm::PublishedRegion* found = nullptr;
  auto consider = [&](const shm::PublishedRegion& region) {
    if (region.id == 0) return;
    if (region.start <= address && address < region.start + region.bytes) found = &region;
    if (next_start != nullptr && region.start > address)
      *next_start = std::min<std::uintptr_t>(*next_start, region.start);
  };
  for (const shm::PublishedRegion& region : c.shared) consider(region);
  const std::uint32_t listed = std::min<std::uint32_t>(c.directory_count, kDirectory);
  for (std::uint32_t k = 0; k < listed; ++k) consider(c.directory[k]);
  return found;
}

char* ShmWindow::view_of(int r, const shm::PublishedRegion& region) const {
  if (r == rank_) return reinterpret_cast<char*>(region.start);
  const Control& c = control(r);
  peer_regions_->forget_released(r, c.released, c.shared);
  return peer_regions_->view(r, pids_[static_cast<std::size_t>(r)], region);
}

const char* ShmWindow::in_shared_region(int r, std::uintptr_t remote, std::size_t bytes, Span* part) const {
  std::uintptr_t next = remote + bytes;
  const shm::PublishedRegion* region = region_at(r, remote, &next);
  if (region == nullptr) {
    // The range may begin before a region (an array's first page stays private).
    if (next >= remote + bytes || (region = region_at(r, next, nullptr)) == nullptr) return nullptr;
  }
  char* base = view_of(r, *region);
  if (base == nullptr) return nullptr;
  const Span overlap = region->overlap(remote, bytes);
  if (part != nullptr) *part = overlap;
  return overlap.bytes == bytes ? base + (remote - region->start) : nullptr;
}

Span ShmWindow::shared_part(int r, std::uintptr_t remote, std::size_t bytes) const {
  if (bytes == 0) return {};
  if (in_segment(r, remote, bytes) != nullptr) return Span{remote, bytes};
  Span part;
  in_shared_region(r, remote, bytes, &part);
  return part;
}

Span ShmWindow::own_shared_part(std::uintptr_t address, std::size_t bytes) const {
  if (bytes == 0) return {};
  if (in_segment(rank_, address, bytes) != nullptr) return Span{address, bytes};
  shm::SharedRegion s;
  if (!shm::find(address, &s)) return {};
  return shm::PublishedRegion::of(s).overlap(address, bytes);
}

void ShmWindow::fail_copy(const char* what, int r) {
  const std::string where =
      std::string(what) + " rank " + std::to_string(r) + "'s memory failed (" + std::strerror(errno) + ")";
  // Most often the peer gave up on the operation, taking its buffer with it,
  // because of a failure found elsewhere (a mismatch) that it reports within a
  // moment: that cause is what this rank raises.
  const pid_t pid = pids_[static_cast<std::size_t>(r)];
  const std::string who = "rank " + std::to_string(r) + " (pid " + std::to_string(pid) + ")";
  const PeerFailure cause = await_cause(0.5, [&]() -> PeerFailure {
    for (int q = 0; q < size_; ++q) {
      const auto kind = static_cast<Failure>(control(q).poison.load(std::memory_order_acquire));
      if (q != rank_ && kind != Failure::kNone && (kind != Failure::kLeft || q == r)) return poison_of(q);
    }
    if (watch_ != nullptr) {
      if (PeerFailure f = watch_->check(watch_ranks_[static_cast<std::size_t>(r)], kNoSequence, nullptr)) return f;
    }
    if (process_ended(pid)) return {Failure::kBroken, false, who + " has exited"};
    return {};
  });
  raise_failure(cause ? cause : PeerFailure{Failure::kBroken, false, "no rank said why"}, where);
}

void ShmWindow::read(int r, std::uintptr_t remote, void* local, std::size_t bytes, kernels::Stores stores) {
  cross_copy(false, r, remote, static_cast<char*>(local), bytes, stores);
}

void ShmWindow::write(int r, std::uintptr_t remote, const void* local, std::size_t bytes, kernels::Stores stores) {
  cross_copy(true, r, remote, static_cast<char*>(const_cast<void*>(local)), bytes, stores);
}

// One copy between this process's `local` and rank r's `remote`, in the direction
// `to_peer` says: in place when the range is shared memory, else by cross-memory
// attach (which may copy less than asked; the loop goes on from there).
void ShmWindow::cross_copy(bool to_peer, int r, std::uintptr_t remote, char* local, std::size_t bytes,
                           kernels::Stores stores) {
  if (const char* in_place = mapped(r, remote, bytes)) {
    if (to_peer) {
      kernels::copy_result(const_cast<char*>(in_place), local, bytes, 0, stores);
    } else {
      kernels::copy_result(local, in_place, bytes, 0, stores);
    }
    return;
  }
  // A range that reaches beyond a shared region (an array's first and last
  // pages stay private): the region's part in place, the rest through the kernel.
  if (const Span part = shared_part(r, remote, bytes); part.bytes > 0) {
    const std::size_t head = part.address - remote, tail = bytes - head - part.bytes;
    cross_copy(to_peer, r, remote, local, head, stores);
    cross_copy(to_peer, r, part.address, local + head, part.bytes, stores);
    cross_copy(to_peer, r, part.address + part.bytes, local + head + part.bytes, tail, stores);
    return;
  }
  const pid_t pid = pids_[static_cast<std::size_t>(r)];
  const time_parts::Timed timed(time_parts::Part::kKernelCopy, 2 * bytes);
  while (bytes > 0) {
    iovec l{local, bytes};
    iovec rv{reinterpret_cast<void*>(remote), bytes};
    const ssize_t n = to_peer ? process_vm_writev(pid, &l, 1, &rv, 1, 0) : process_vm_readv(pid, &l, 1, &rv, 1, 0);
    if (n <= 0) fail_copy(to_peer ? "writing" : "reading", r);
    local += n;
    remote += static_cast<std::uintptr_t>(n);
    bytes -= static_cast<std::size_t>(n);
  }
}

namespace {

// A position in a list of spans: the iovecs from there on (at most `limit`),
// and copies into them.
struct SpanCursor {
  const Span* spans;
  std::size_t count, index = 0, offset = 0;

  void fill(std::vector<iovec>& v, std::size_t limit) const {
    v.clear();
    for (std::size_t i = index, off = offset; i < count && v.size() < limit; ++i, off = 0) {
      if (spans[i].bytes > off)
        v.push_back(iovec{reinterpret_cast<void*>(spans[i].address + off), spans[i].bytes - off});
    }
  }
  void advance(std::size_t bytes) {
    while (bytes > 0 && index < count) {
      const std::size_t left = spans[index].bytes - offset;
      if (bytes < left) {
        offset += bytes;
        return;
      }
      bytes -= left;
      ++index;
      offset = 0;
    }
  }
  // Copies `bytes` from `from` to the spans from here on, and moves past them;
  // `result_bytes`: the whole read's, which decides on streaming stores by size.
  void copy_in(const char* from, std::size_t bytes, std::size_t result_bytes, kernels::Stores stores) {
    while (bytes > 0 && index < count) {
      const std::size_t k = std::min(bytes, spans[index].bytes - offset);
      kernels::copy_result(reinterpret_cast<char*>(spans[index].address + offset), from, k, result_bytes, stores);
      from += k;
      bytes -= k;
      advance(k);
    }
  }
};

}  // namespace

void ShmWindow::read_spans_through_kernel(int r, const Span* remote, std::size_t n_remote, void* local_cursor) {
  // process_vm_readv takes at most IOV_MAX iovecs a side and may stop early (at
  // a page it cannot touch, or a signal): go on from wherever it stopped.
  constexpr std::size_t kMaxIov = 1024;
  SpanCursor& to = *static_cast<SpanCursor*>(local_cursor);
  SpanCursor from{remote, n_remote};
  std::vector<iovec> rv, lv;
  std::size_t remaining = 0;
  for (std::size_t i = 0; i < n_remote; ++i) remaining += remote[i].bytes;
  const time_parts::Timed timed(time_parts::Part::kKernelCopy, 2 * remaining);
  while (remaining > 0) {
    from.fill(rv, kMaxIov);
    to.fill(lv, kMaxIov);
    // Never past what `remote` holds: `to` goes on beyond it.
    std::size_t take = 0, k = 0;
    for (; k < lv.size() && take < remaining; ++k) take += lv[k].iov_len;
    lv.resize(k);
    if (take > remaining) lv.back().iov_len -= take - remaining;
    const ssize_t n =
        process_vm_readv(pids_[static_cast<std::size_t>(r)], lv.data(), lv.size(), rv.data(), rv.size(), 0);
    if (n <= 0) fail_copy("reading", r);
    from.advance(static_cast<std::size_t>(n));
    to.advance(static_cast<std::size_t>(n));
    remaining -= std::min(remaining, static_cast<std::size_t>(n));
  }
}

void ShmWindow::read_spans(int r, const Span* remote, std::size_t n_remote, const Span* local, std::size_t n_local,
                           kernels::Stores stores) {
  // Runs of the remote spans, in order: those in a region rank r shares (and
  // this rank maps) are copied in place; the others gather until the next such
  // run and go through the kernel together, in as few calls as possible.
  SpanCursor to{local, n_local};
  std::size_t total = 0;  // a large read (an all-gather's) streams past the cache, whatever its spans' sizes
  for (std::size_t i = 0; i < n_remote; ++i) total += remote[i].bytes;
  std::vector<Span> through_kernel;
  auto flush = [&] {
    if (!through_kernel.empty()) read_spans_through_kernel(r, through_kernel.data(), through_kernel.size(), &to);
    through_kernel.clear();
  };
  for (std::size_t i = 0; i < n_remote; ++i) {
    std::uintptr_t at = remote[i].address;
    std::size_t left = remote[i].bytes;
    while (left > 0) {
      const std::uintptr_t end = at + left;
      if (const char* in_place = mapped(r, at, left)) {  // a symmetric buffer, or wholly in a region
        flush();
        to.copy_in(in_place, left, total, stores);
        break;
      }
      std::uintptr_t next = end;
      const shm::PublishedRegion* region = region_at(r, at, &next);
      char* base = region != nullptr ? view_of(r, *region) : nullptr;
      if (base != nullptr) {
        const std::size_t k = std::min<std::uintptr_t>(end, region->start + region->bytes) - at;
        flush();
        to.copy_in(base + (at - region->start), k, total, stores);
        at += k;
        left -= k;
      } else {
        // Up to where a region begins (or the span ends; a region this rank
        // cannot map is read through the kernel whole).
        const std::size_t k = (region != nullptr ? end : std::min(next, end)) - at;
        through_kernel.push_back(Span{at, k});
        at += k;
        left -= k;
      }
    }
  }
  flush();
}

}  // namespace collex
