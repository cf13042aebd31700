// A rank's view of its peers' shared regions (shm/shared_pages.h): each peer
// publishes, per operation, the regions that hold its input and its result;
// this rank opens a region's memfd through /proc/<pid>/fd once, maps it, and
// keeps the mapping until the peer says it released the region.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "collex/common/memory.h"
#include "collex/transport/shm/shared_pages.h"

namespace collex::shm {

// A region as a rank publishes it in the node's segment: plain words, written
// before the marker that makes them visible.
struct PublishedRegion {
  std::uint64_t start, bytes, id, inode;
  std::int64_t fd;

  bool contains(std::uintptr_t address, std::size_t n) const {
    return id != 0 && address >= start && address + n <= start + bytes;
  }
  // The part of [address, address + n) inside the region (empty when none).
  Span overlap(std::uintptr_t address, std::size_t n) const;
  static PublishedRegion of(const SharedRegion& s);
};

class PeerRegions {
 public:
  explicit PeerRegions(int ranks) : releases_seen_(static_cast<std::size_t>(ranks), 0) {}
  ~PeerRegions();
  PeerRegions(const PeerRegions&) = delete;
  PeerRegions& operator=(const PeerRegions&) = delete;

  // Where this rank sees the start of rank r's region `region` (r's process is
  // `pid`), mapping it on first use; null when it cannot be mapped (the memfd
  // cannot be opened from here, or is another file by now).
  char* view(int r, pid_t pid, const PublishedRegion& region);

  // Unmaps rank r's regions that r released since this rank last looked
  // (`log`, as r published it with `current`, its two regions now published):
  // the memory goes back to the system only when every rank has unmapped it.
  void forget_released(int r, const ReleaseLog& log, const PublishedRegion* current);

 private:
  struct Mapping {
    char* base;  // null: could not be mapped (not tried again)
    std::size_t bytes;
  };
  void unmap(std::map<std::pair<int, std::uint64_t>, Mapping>::iterator it);

  std::mutex mutex_;
  std::map<std::pair<int, std::uint64_t>, Mapping> mappings_;  // by (rank, region id)
  std::vector<std::uint64_t> releases_seen_;
};

}  // namespace collex::shm
