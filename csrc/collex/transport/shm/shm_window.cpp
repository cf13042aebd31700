// The memory half of the node's window: the shared segment (slots and
// control blocks), symmetric buffers, and what each operation publishes. The
// copies are in shm_window_copies.cpp, the waits in shm_window_waits.cpp.
#include "collex/transport/shm/shm_window.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <vector>

#include "collex/common/errors.h"
#include "collex/common/failure.h"
#include "collex/common/process.h"
#include "collex/common/waiting.h"
#include "collex/kernels/copy.h"
#include "collex/transport/shm/shared_pages.h"
#include "collex/transport/shm/shm_control.h"

namespace collex {

// Each symmetric segment as this rank maps it, and where every rank maps it.
// A rank may release its view while others keep theirs, and its allocator may
// then put ordinary memory at the same addresses: so a segment opens with one
// word per rank, set while that rank maps the segment (cleared before it
// unmaps), and a peer's address counts as lying in the segment only while the
// peer's word is set. The peer clears it before it can reuse the addresses and
// publish them for an operation, so whoever sees those addresses sees it cleared.
struct ShmWindow::Registry {
  struct Segment {
    char* base;                                // this rank's mapping
    std::size_t total;                         // bytes mapped
    std::vector<std::uintptr_t> peers;         // every rank's mapping of the same segment
    const std::atomic<std::uint64_t>* mapped;  // per rank: 1 while it maps the segment (in the segment)
  };
  mutable std::mutex mutex;  // buffers may be released from any thread
  std::vector<Segment> segments;
};

namespace {

constexpr std::uint64_t kProbe = 0x636f6c6c65780001ull;

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

std::string segment_name() {
  static std::atomic<unsigned> counter{0};
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  char name[64];
  std::snprintf(name, sizeof name, "/collex-%d-%u-%llx", static_cast<int>(getpid()), counter++,
                static_cast<unsigned long long>(now) & 0xffffffull);
  return name;
}

}  // namespace

std::unique_ptr<ShmWindow> ShmWindow::create(MPI_Comm node, std::size_t slot_bytes) {
  std::unique_ptr<ShmWindow> w(new ShmWindow());
  w->node_ = node;
  w->registry_ = std::make_shared<Registry>();
  MPI_Comm_rank(node, &w->rank_);
  MPI_Comm_size(node, &w->size_);
  w->slot_bytes_ = round_up(slot_bytes, 64);
  const std::size_t controls = round_up(sizeof(Control) * static_cast<std::size_t>(w->size_), 4096);
  w->mapped_bytes_ = controls + static_cast<std::size_t>(w->size_) * 2 * w->slot_bytes_;

  char name[64] = {0};
  int fd = -1;
  if (w->rank_ == 0) {
    std::snprintf(name, sizeof name, "%s", segment_name().c_str());
    fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd >= 0 && ftruncate(fd, static_cast<off_t>(w->mapped_bytes_)) != 0) {
      close(fd);
      fd = -1;
    }
    if (fd < 0) name[0] = '\0';  // tells the others there is nothing to open
  }
  MPI_Bcast(name, sizeof name, MPI_CHAR, 0, node);
  if (w->rank_ != 0 && name[0] != '\0') fd = shm_open(name, O_RDWR, 0);
  int ok = fd >= 0;
  if (ok) {
    w->base_ = mmap(nullptr, w->mapped_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (w->base_ == MAP_FAILED) {
      w->base_ = nullptr;
      ok = 0;
    }
    close(fd);
  }
  int all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, node);
  // Everyone has mapped the segment (or given up): its name is no longer needed.
  if (w->rank_ == 0 && name[0] != '\0') shm_unlink(name);
  if (!all_ok) return nullptr;  // the destructor unmaps what was mapped

  // Publish this process and a probe word, then check that reading a peer works.
  Control& mine = w->control(w->rank_);
  mine.pid = static_cast<std::int32_t>(getpid());
  // The probe must live in this process's private memory, not in the segment.
  static std::uint64_t probe_word = kProbe;
  mine.input = reinterpret_cast<std::uintptr_t>(&probe_word);
  MPI_Barrier(node);
  w->pids_.reset(new pid_t[static_cast<std::size_t>(w->size_)]);
  for (int r = 0; r < w->size_; ++r) w->pids_[static_cast<std::size_t>(r)] = w->control(r).pid;
  int can = 1;
  if (w->size_ > 1) {
    const int peer = (w->rank_ + 1) % w->size_;
    std::uint64_t got = 0;
    iovec local{&got, sizeof got};
    iovec remote{reinterpret_cast<void*>(w->control(peer).input), sizeof got};
    can = process_vm_readv(w->pids_[static_cast<std::size_t>(peer)], &local, 1, &remote, 1, 0) ==
              static_cast<ssize_t>(sizeof got) &&
          got == kProbe;
  }
  int all_can = 0;
  MPI_Allreduce(&can, &all_can, 1, MPI_INT, MPI_MIN, node);
  w->can_read_ = all_can != 0;
  w->peer_regions_ = std::make_unique<shm::PeerRegions>(w->size_);
  return w;
}

ShmWindow::~ShmWindow() {
  if (base_ != nullptr) munmap(base_, mapped_bytes_);
}

char* ShmWindow::slot(int r, int parity) {
  const std::size_t controls = round_up(sizeof(Control) * static_cast<std::size_t>(size_), 4096);
  return static_cast<char*>(base_) + controls +
         (static_cast<std::size_t>(r) * 2 + static_cast<std::size_t>(parity)) * slot_bytes_;
}

void ShmWindow::publish(std::uintptr_t input, std::uintptr_t result) {
  Control& mine = control(rank_);
  mine.input = input;
  mine.result = result;
  mine.note = 0;
  // The regions are looked up now, for this operation: the caller released
  // every region whose array is gone before the call, so both are live until it ends.
  shm::SharedRegion s;
  mine.shared[0] = shm::find(input, &s) ? shm::PublishedRegion::of(s) : shm::PublishedRegion{};
  mine.shared[1] = shm::find(result, &s) ? shm::PublishedRegion::of(s) : shm::PublishedRegion{};
  // The log is copied only when it changed: publish runs for every large call.
  if (shm::release_count() != mine.released.count) mine.released = shm::release_log();
  mine.directory_count = 0;  // publish_spans lists more
}

std::uintptr_t ShmWindow::peer_input(int r) const { return control(r).input; }
std::uintptr_t ShmWindow::peer_result(int r) const { return control(r).result; }
void ShmWindow::publish_note(std::uint64_t note) { control(rank_).note = note; }
std::uint64_t ShmWindow::peer_note(int r) const { return control(r).note; }

const char* ShmWindow::mapped(int r, std::uintptr_t remote, std::size_t bytes) const {
  if (const char* in_place = in_segment(r, remote, bytes)) return in_place;
  return in_shared_region(r, remote, bytes);
}

const char* ShmWindow::in_segment(int r, std::uintptr_t remote, std::size_t bytes) const {
  std::lock_guard<std::mutex> lock(registry_->mutex);
  for (const auto& s : registry_->segments) {
    const std::uintptr_t start = s.peers[static_cast<std::size_t>(r)];
    if (remote < start || remote + bytes > start + s.total) continue;
    if (s.mapped[r].load(std::memory_order_acquire) == 0) continue;  // released: its addresses are something else now
    return s.base + (remote - start);
  }
  return nullptr;
}

namespace {

// This rank's part of a symmetric segment; unmaps (and forgets) it when released,
// having told the peers first (its word in the segment's header).
class ShmSymmetric final : public SymmetricMemory {
 public:
  ShmSymmetric(char* base, std::size_t total, char* mine, std::size_t bytes, std::atomic<std::uint64_t>* mapped,
               std::shared_ptr<void> registry_entry)
      : base_(base), total_(total), mine_(mine), bytes_(bytes), mapped_(mapped), entry_(std::move(registry_entry)) {}
  ~ShmSymmetric() override {
    entry_.reset();  // unregister before the memory goes
    mapped_->store(0, std::memory_order_release);
    munmap(base_, total_);
  }
  void* data() const override { return mine_; }
  std::size_t bytes() const override { return bytes_; }

 private:
  char* base_;
  std::size_t total_;
  char* mine_;
  std::size_t bytes_;
  std::atomic<std::uint64_t>* mapped_;
  std::shared_ptr<void> entry_;
};

}  // namespace

std::shared_ptr<SymmetricMemory> ShmWindow::allocate(std::size_t bytes) {
  const std::size_t stride = round_up(std::max<std::size_t>(bytes, 1), 4096);
  const std::size_t header = round_up(sizeof(std::atomic<std::uint64_t>) * static_cast<std::size_t>(size_), 4096);
  const std::size_t total = header + stride * static_cast<std::size_t>(size_);
  char name[64] = {0};
  int fd = -1;
  if (rank_ == 0) {
    std::snprintf(name, sizeof name, "%s", segment_name().c_str());
    fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd >= 0 && ftruncate(fd, static_cast<off_t>(total)) != 0) {
      close(fd);
      shm_unlink(name);
      fd = -1;
    }
    if (fd < 0) name[0] = '\0';
  }
  MPI_Bcast(name, sizeof name, MPI_CHAR, 0, node_);
  if (rank_ != 0 && name[0] != '\0') fd = shm_open(name, O_RDWR, 0);
  char* base = nullptr;
  if (fd >= 0) {
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    base = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
    close(fd);
  }
  int ok = base != nullptr, all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, node_);
  if (rank_ == 0 && name[0] != '\0') shm_unlink(name);  // mapped everywhere (or given up)
  if (!all_ok) {
    if (base != nullptr) munmap(base, total);
    throw CollexError("collex.empty: could not make a shared segment of " + std::to_string(total) +
                      " bytes (is /dev/shm large enough?)");
  }
  // The segment is new (zeros): each rank sets its own word before any peer
  // learns where it maps the segment (the all-gather below).
  auto* mapped = reinterpret_cast<std::atomic<std::uint64_t>*>(base);
  mapped[rank_].store(1, std::memory_order_release);
  std::uintptr_t mine = reinterpret_cast<std::uintptr_t>(base);
  Registry::Segment seg{base, total, std::vector<std::uintptr_t>(static_cast<std::size_t>(size_)), mapped};
  MPI_Allgather(&mine, sizeof mine, MPI_BYTE, seg.peers.data(), sizeof mine, MPI_BYTE, node_);
  {
    std::lock_guard<std::mutex> lock(registry_->mutex);
    registry_->segments.push_back(seg);
  }
  // Unregistering holds the registry alive even if the window is gone first.
  std::shared_ptr<Registry> registry = registry_;
  std::shared_ptr<void> entry(base, [registry](void* b) {
    std::lock_guard<std::mutex> lock(registry->mutex);
    auto& v = registry->segments;
    v.erase(std::remove_if(v.begin(), v.end(), [b](const Registry::Segment& s) { return s.base == b; }), v.end());
  });
  return std::make_shared<ShmSymmetric>(base, total, base + header + static_cast<std::size_t>(rank_) * stride, bytes,
                                        &mapped[rank_], std::move(entry));
}

}  // namespace collex
