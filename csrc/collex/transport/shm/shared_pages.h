// Ordinary memory of this process moved onto pages the node's peers can map,
// so that they read (and write) a rank's plain NumPy arrays in place, as they do
// symmetric buffers, instead of copying them through the kernel.
//
// A peer can reach a private anonymous page only through cross-memory attach,
// which copies on the calling core with ordinary stores (about 12 GB/s here,
// against the 25-30 GB/s of a reduction over memory both sides map); that copy
// is what held ordinary arrays at 50-65 % of the memory limit where symmetric
// buffers reach 85-95 % (bench/README.md). share() moves the whole pages inside
// an array onto a memfd mapped at the same addresses: the contents and the
// addresses stay, the array's owner notices nothing, and a peer opens the memfd
// through /proc/<pid>/fd and maps it once.
//
// Only the whole pages inside an array move (they hold nothing else), and only
// private anonymous memory. The caller (the bindings, which know the array's
// owner) releases a region before its memory is freed or given to another
// object; a region that outlived its array would name addresses that hold
// something else by then. Released pages are private again: zero pages when
// the array is gone, the same contents otherwise. A forked child gets
// private copies-on-write of every region (a private mapping of the memfd,
// made in the child): its writes never reach the parent. Unlike a plain fork,
// pages the child has not written yet show the parent's later writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace collex::shm {

// A moved range of this process's memory, as a peer needs it to map the pages.
struct SharedRegion {
  std::uintptr_t start = 0;  // page-aligned; 0: none
  std::size_t bytes = 0;     // whole pages
  std::uint64_t id = 0;      // unique in this process, never reused
  std::uint64_t inode = 0;   // the memfd's, which a peer checks after opening it
  std::int32_t fd = -1;      // the memfd in this process
};

// Regions smaller than this are not worth a descriptor and a mapping.
constexpr std::size_t kMinSharedBytes = 256 << 10;

// Moves the whole pages of [address, address + bytes), an array that is this
// process's private anonymous memory, onto a memfd mapped at the same
// addresses, and returns the region's id; or returns 0, leaving the memory as
// it was, with the reason in *why_not (too small, not private anonymous
// memory, already shared, too many regions (each holds a descriptor: at most
// 256, and a quarter of RLIMIT_NOFILE), a system call refused). The caller guarantees that
// nobody writes the array meanwhile.
std::uint64_t share(std::uintptr_t address, std::size_t bytes, std::string* why_not);

// Forgets region `id` (no-op for an unknown id) and makes its pages private
// again: with their contents when `keep_contents` (the array's memory was
// replaced, and may hold other objects now), as zero pages otherwise (the
// array is about to free it). No operation publishes the region again.
void release(std::uint64_t id, bool keep_contents);

// The region of the array that contains `address`, if any.
bool find(std::uintptr_t address, SharedRegion* region);

// The regions released last, which peers that mapped them drop (a peer that
// missed more than kReleaseLog of them drops all it holds of this process but
// those now published).
constexpr std::size_t kReleaseLog = 32;
struct ReleaseLog {
  std::uint64_t count = 0;              // releases so far
  std::uint64_t ids[kReleaseLog] = {};  // release i (from 1) at ids[(i - 1) % kReleaseLog]
};
ReleaseLog release_log();
// release_log().count, without the lock.
std::uint64_t release_count();

// The regions now shared, for tests and COLLEX_DEBUG: (start, bytes) each.
std::size_t shared_bytes();
std::size_t shared_count();

}  // namespace collex::shm
