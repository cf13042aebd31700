#include "collex/transport/shm/shared_pages.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "collex/transport/shm/process_maps.h"

namespace collex::shm {
namespace {

// One shared region and the array it was made for (the range whose addresses
// find() answers for: its first and last pages stay private, shared with the
// allocator's bookkeeping).
struct Entry {
  std::uintptr_t array_begin, array_end;
  SharedRegion region;
};

struct Registry {
  std::mutex mutex;
  std::vector<Entry> entries;
  std::atomic<std::size_t> count{0};  // entries.size(), read without the lock
  ReleaseLog released;
  std::atomic<std::uint64_t> release_count{0};  // released.count, read without the lock
  std::uint64_t next_id = 1;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: used from atfork handlers and at exit
  return *r;
}

std::uintptr_t page_bytes() {
  static const std::uintptr_t bytes = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  return bytes;
}

// In a forked child, every region becomes a private mapping of its memfd: the
// child's writes stay in the child. The registry's lock is held across fork
// (prepare/parent) so the child finds it free and the list whole.
void lock_for_fork() { registry().mutex.lock(); }
void unlock_after_fork() { registry().mutex.unlock(); }
void privatise_in_child() {
  Registry& r = registry();
  for (const Entry& e : r.entries) {
    const SharedRegion& s = e.region;
    mmap(reinterpret_cast<void*>(s.start), s.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, s.fd, 0);
    close(s.fd);
  }
  r.entries.clear();
  r.count.store(0);
  r.mutex.unlock();
}

// Each region keeps its memfd open (peers open it through /proc): at most a
// quarter of the descriptors this process may open, and 256, so that the
// program's own files never run out because of them.
std::size_t most_regions() {
  rlimit limit{};
  const rlim_t open_files = getrlimit(RLIMIT_NOFILE, &limit) == 0 ? limit.rlim_cur : 1024;
  return static_cast<std::size_t>(std::min<rlim_t>(256, open_files / 4));
}

void decline(std::string* why_not, const std::string& why) {
  if (why_not != nullptr) *why_not = why;
}

std::string failed(const char* call) { return std::string(call) + " failed: " + std::strerror(errno); }

}  // namespace

std::uint64_t share(std::uintptr_t address, std::size_t bytes, std::string* why_not) {
  static std::once_flag atfork;
  std::call_once(atfork, [] { pthread_atfork(lock_for_fork, unlock_after_fork, privatise_in_child); });
  const std::uintptr_t page = page_bytes();
  const std::uintptr_t start = (address + page - 1) / page * page;
  const std::uintptr_t end = (address + bytes) / page * page;
  if (end < start + kMinSharedBytes) {
    decline(why_not, "fewer than " + std::to_string(kMinSharedBytes) + " bytes of whole pages");
    return 0;
  }
  if (!inside(anonymous_ranges(), start, end)) {
    decline(why_not, "not private anonymous memory");
    return 0;
  }
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (const Entry& e : r.entries) {
    if (e.region.start < end && start < e.region.start + e.region.bytes) {
      if (e.array_begin == address && e.array_end == address + bytes) return e.region.id;
      decline(why_not, "overlaps a region shared before");
      return 0;
    }
  }
  if (r.entries.size() >= most_regions()) {
    decline(why_not, "already " + std::to_string(r.entries.size()) + " shared regions, each holding a descriptor");
    return 0;
  }
  const std::size_t length = end - start;
  const int fd = memfd_create("collex-shared", MFD_CLOEXEC);
  if (fd < 0) {
    decline(why_not, failed("memfd_create"));
    return 0;
  }
  struct stat st{};
  void* view = MAP_FAILED;
  if (ftruncate(fd, static_cast<off_t>(length)) != 0 || fstat(fd, &st) != 0) {
    decline(why_not, failed("ftruncate"));
  } else if (fallocate(fd, 0, 0, static_cast<off_t>(length)) != 0) {
    decline(why_not, failed("fallocate"));  // no room for the pages (memory limit)
  } else if ((view = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0)) == MAP_FAILED) {
    decline(why_not, failed("mmap"));
  } else {
    // The pages were allocated and mapped in bulk above: a fault per page as
    // the copy first touched them cost about 1 ms per MiB.
    std::memcpy(view, reinterpret_cast<const void*>(start), length);
    // The copy's pages move to the array's addresses with their page tables, in
    // one step that replaces the private pages (freed by it).
    if (mremap(view, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(start)) == MAP_FAILED) {
      decline(why_not, failed("mremap"));
      munmap(view, length);
      view = MAP_FAILED;
    }
  }
  if (view == MAP_FAILED) {
    close(fd);
    return 0;
  }
  SharedRegion s{start, length, r.next_id++, static_cast<std::uint64_t>(st.st_ino), fd};
  r.entries.push_back(Entry{address, address + bytes, s});
  r.count.store(r.entries.size(), std::memory_order_release);
  return s.id;
}

void release(std::uint64_t id, bool keep_contents) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (auto it = r.entries.begin(); it != r.entries.end(); ++it) {
    const SharedRegion& s = it->region;
    if (s.id != id) continue;
    // Private again at once, before the allocator can hand the memory out:
    // fresh zero pages where the contents are done with (allocators count on
    // freed pages they zap reading back as zeros); where they may belong to
    // someone else by now, a private mapping of the same pages, which keeps
    // every byte and takes each write from then on to a private copy.
    // Kept contents: only where the memfd is still mapped (the allocator may
    // have unmapped the pages, and something else may lie there now).
    if (keep_contents) {
      for (const AddressRange& m : ranges_of_inode(s.inode)) {
        const std::uintptr_t b = std::max<std::uintptr_t>(m.begin, s.start);
        const std::uintptr_t e = std::min<std::uintptr_t>(m.end, s.start + s.bytes);
        if (b < e)
          mmap(reinterpret_cast<void*>(b), e - b, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, s.fd,
               static_cast<off_t>(b - s.start));
      }
    } else {
      mmap(reinterpret_cast<void*>(s.start), s.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
           -1, 0);
    }
    close(s.fd);
    r.entries.erase(it);
    r.count.store(r.entries.size(), std::memory_order_release);
    r.released.ids[r.released.count % kReleaseLog] = id;
    ++r.released.count;
    r.release_count.store(r.released.count, std::memory_order_release);
    return;
  }
}

bool find(std::uintptr_t address, SharedRegion* region) {
  Registry& r = registry();
  if (address == 0 || r.count.load(std::memory_order_acquire) == 0) return false;
  std::lock_guard<std::mutex> lock(r.mutex);
  for (const Entry& e : r.entries) {
    if (e.array_begin <= address && address < e.array_end) {
      *region = e.region;
      return true;
    }
  }
  return false;
}

std::uint64_t release_count() { return registry().release_count.load(std::memory_order_acquire); }

ReleaseLog release_log() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.released;
}

std::size_t shared_bytes() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::size_t bytes = 0;
  for (const Entry& e : r.entries) bytes += e.region.bytes;
  return bytes;
}

std::size_t shared_count() { return registry().count.load(std::memory_order_acquire); }

}  // namespace collex::shm
