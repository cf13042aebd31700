#include "collex/transport/shm/peer_regions.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iterator>

namespace collex::shm {

Span PublishedRegion::overlap(std::uintptr_t address, std::size_t n) const {
  if (id == 0) return {};
  const std::uintptr_t lo = std::max<std::uintptr_t>(address, start);
  const std::uintptr_t hi = std::min<std::uintptr_t>(address + n, start + bytes);
  return hi > lo ? Span{lo, hi - lo} : Span{};
}

PublishedRegion PublishedRegion::of(const SharedRegion& s) {
  return PublishedRegion{s.start, s.bytes, s.id, s.inode, s.fd};
}

PeerRegions::~PeerRegions() {
  for (auto& [key, m] : mappings_) {
    if (m.base != nullptr) munmap(m.base, m.bytes);
  }
}

void PeerRegions::unmap(std::map<std::pair<int, std::uint64_t>, Mapping>::iterator it) {
  if (it->second.base != nullptr) munmap(it->second.base, it->second.bytes);
  mappings_.erase(it);
}

void PeerRegions::forget_released(int r, const ReleaseLog& log, const PublishedRegion* current) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::uint64_t& seen = releases_seen_[static_cast<std::size_t>(r)];
  if (log.count == seen) return;
  if (log.count - seen <= kReleaseLog) {
    for (std::uint64_t i = seen; i < log.count; ++i) {
      auto it = mappings_.find(std::make_pair(r, log.ids[i % kReleaseLog]));
      if (it != mappings_.end()) unmap(it);
    }
  } else {  // missed some: keep only what r publishes now
    for (auto it = mappings_.begin(); it != mappings_.end();) {
      const std::uint64_t id = it->first.second;
      auto next = std::next(it);
      if (it->first.first == r && id != current[0].id && id != current[1].id) unmap(it);
      it = next;
    }
  }
  seen = log.count;
}

char* PeerRegions::view(int r, pid_t pid, const PublishedRegion& region) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto key = std::make_pair(r, region.id);
  if (auto it = mappings_.find(key); it != mappings_.end()) return it->second.base;
  // The peer keeps the memfd open while the region is published; the inode
  // check catches a descriptor number that meanwhile names another file.
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/fd/%lld", static_cast<int>(pid), static_cast<long long>(region.fd));
  Mapping m{nullptr, region.bytes};
  const int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd >= 0) {
    struct stat st{};
    if (fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_ino) == region.inode &&
        static_cast<std::uint64_t>(st.st_size) >= region.bytes) {
      // Populated now, in one call, rather than a fault per page in the first reads.
      void* p = mmap(nullptr, region.bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
      if (p != MAP_FAILED) m.base = static_cast<char*>(p);
    }
    close(fd);
  }
  mappings_.emplace(key, m);
  return m.base;
}

}  // namespace collex::shm
