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

namespace collex {

// Per rank: one cache line polled by every peer (the marker, the poison word,
// and the calls of the last two operations, so that checking a peer's call costs
// no second line), then what the rank publishes per operation, then the text of
// the failure it reported. Only the owning rank writes any of them.
struct ShmWindow::Control {
  alignas(64) std::atomic<std::uint64_t> marker;
  std::atomic<std::uint64_t> poison;  // 0, or the Failure this rank reported (or kLeft: it shut down)
  // print[e & 1]: operation e's call, three words: (epoch low 32 bits | kind |
  // dtype | op), root, count. Rewritten two operations later, so a reader
  // checks the epoch before and after reading.
  std::atomic<std::uint64_t> print[2][3];
  alignas(64) std::uint64_t input;
  std::uint64_t result;
  std::int32_t pid;
  char reason[512];  // the reported failure, written before `poison`
};
static_assert(sizeof(std::atomic<std::uint64_t>) == 8, "the polled line holds marker, poison and two calls");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "markers must be lock-free in shared memory");

// Each symmetric segment as this rank maps it, and where every rank maps it.
struct ShmWindow::Registry {
  struct Segment {
    char* base;                         // this rank's mapping
    std::size_t total;                  // bytes mapped
    std::vector<std::uintptr_t> peers;  // every rank's mapping of the same segment
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
  return w;
}

ShmWindow::~ShmWindow() {
  if (base_ != nullptr) munmap(base_, mapped_bytes_);
}

ShmWindow::Control& ShmWindow::control(int r) const { return static_cast<Control*>(base_)[r]; }

char* ShmWindow::slot(int r, int parity) {
  const std::size_t controls = round_up(sizeof(Control) * static_cast<std::size_t>(size_), 4096);
  return static_cast<char*>(base_) + controls +
         (static_cast<std::size_t>(r) * 2 + static_cast<std::size_t>(parity)) * slot_bytes_;
}

void ShmWindow::publish(std::uintptr_t input, std::uintptr_t result) {
  Control& mine = control(rank_);
  mine.input = input;
  mine.result = result;
}

std::uintptr_t ShmWindow::peer_input(int r) const { return control(r).input; }
std::uintptr_t ShmWindow::peer_result(int r) const { return control(r).result; }

const char* ShmWindow::mapped(int r, std::uintptr_t remote, std::size_t bytes) const {
  std::lock_guard<std::mutex> lock(registry_->mutex);
  for (const auto& s : registry_->segments) {
    const std::uintptr_t start = s.peers[static_cast<std::size_t>(r)];
    if (remote >= start && remote + bytes <= start + s.total) return s.base + (remote - start);
  }
  return nullptr;
}

namespace {

// This rank's part of a symmetric segment; unmaps (and forgets) it when released.
class ShmSymmetric final : public SymmetricMemory {
 public:
  ShmSymmetric(char* base, std::size_t total, char* mine, std::size_t bytes, std::shared_ptr<void> registry_entry)
      : base_(base), total_(total), mine_(mine), bytes_(bytes), entry_(std::move(registry_entry)) {}
  ~ShmSymmetric() override {
    entry_.reset();  // unregister before the memory goes
    munmap(base_, total_);
  }
  void* data() const override { return mine_; }
  std::size_t bytes() const override { return bytes_; }

 private:
  char* base_;
  std::size_t total_;
  char* mine_;
  std::size_t bytes_;
  std::shared_ptr<void> entry_;
};

}  // namespace

std::shared_ptr<SymmetricMemory> ShmWindow::allocate(std::size_t bytes) {
  const std::size_t stride = round_up(std::max<std::size_t>(bytes, 1), 4096);
  const std::size_t total = stride * static_cast<std::size_t>(size_);
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
  std::uintptr_t mine = reinterpret_cast<std::uintptr_t>(base);
  Registry::Segment seg{base, total, std::vector<std::uintptr_t>(static_cast<std::size_t>(size_))};
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
  return std::make_shared<ShmSymmetric>(base, total, base + static_cast<std::size_t>(rank_) * stride, bytes,
                                        std::move(entry));
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

void ShmWindow::read(int r, std::uintptr_t remote, void* local, std::size_t bytes) {
  cross_copy(false, r, remote, static_cast<char*>(local), bytes);
}

void ShmWindow::write(int r, std::uintptr_t remote, const void* local, std::size_t bytes) {
  cross_copy(true, r, remote, static_cast<char*>(const_cast<void*>(local)), bytes);
}

// One copy between this process's `local` and rank r's `remote`, in the direction
// `to_peer` says: in place when the range is shared memory, else by cross-memory
// attach (which may copy less than asked; the loop goes on from there).
void ShmWindow::cross_copy(bool to_peer, int r, std::uintptr_t remote, char* local, std::size_t bytes) {
  if (const char* in_place = mapped(r, remote, bytes)) {
    if (to_peer) {
      kernels::copy_result(const_cast<char*>(in_place), local, bytes);
    } else {
      kernels::copy_result(local, in_place, bytes);
    }
    return;
  }
  const pid_t pid = pids_[static_cast<std::size_t>(r)];
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

// A position in a list of spans, and the iovecs from there on (at most `limit`).
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
};

}  // namespace

void ShmWindow::read_spans(int r, const Span* remote, std::size_t n_remote, const Span* local, std::size_t n_local) {
  // process_vm_readv takes at most IOV_MAX iovecs a side and may stop early (at
  // a page it cannot touch, or a signal): go on from wherever it stopped.
  constexpr std::size_t kMaxIov = 1024;
  SpanCursor from{remote, n_remote}, to{local, n_local};
  std::vector<iovec> rv, lv;
  std::size_t remaining = 0;
  for (std::size_t i = 0; i < n_remote; ++i) remaining += remote[i].bytes;
  while (remaining > 0) {
    from.fill(rv, kMaxIov);
    to.fill(lv, kMaxIov);
    const ssize_t n =
        process_vm_readv(pids_[static_cast<std::size_t>(r)], lv.data(), lv.size(), rv.data(), rv.size(), 0);
    if (n <= 0) fail_copy("reading", r);
    from.advance(static_cast<std::size_t>(n));
    to.advance(static_cast<std::size_t>(n));
    remaining -= std::min(remaining, static_cast<std::size_t>(n));
  }
}

namespace {

std::uint64_t head_word(std::uint64_t epoch, const CallPrint& c) {
  return (epoch << 32) | (std::uint64_t{c.kind & 0xff} << 24) | (std::uint64_t{c.dtype & 0xff} << 16) |
         (std::uint64_t{c.op & 0xff} << 8);
}

}  // namespace

void ShmWindow::announce(std::uint64_t epoch, const CallPrint& call) {
  announced_epoch_ = epoch;
  announced_ = call;
  published_ = false;
}

void ShmWindow::publish() {
  auto& words = control(rank_).print[announced_epoch_ & 1];
  words[0].store(0, std::memory_order_relaxed);  // readers see a torn entry as changing
  std::atomic_thread_fence(std::memory_order_release);
  words[1].store(static_cast<std::uint64_t>(static_cast<std::uint32_t>(announced_.root)), std::memory_order_relaxed);
  words[2].store(announced_.count, std::memory_order_relaxed);
  words[0].store(head_word(announced_epoch_, announced_), std::memory_order_release);
  published_ = true;
}

void ShmWindow::arrive(std::uint64_t marker) {
  // Published at the operation's first marker, not at its announcement: a rank
  // that starts an operation while a peer still checks the one two back (same
  // entry) usually waits for that peer before its first marker.
  if (!published_ && marker / kMarkersPerEpoch == announced_epoch_) publish();
  control(rank_).marker.store(marker, std::memory_order_release);
}

void ShmWindow::verify(int r, const WaitContext& what) {
  const std::uint64_t e = announced_epoch_;
  if (e == 0 || r == rank_) return;
  auto& words = control(r).print[e & 1];
  const std::uint64_t head = words[0].load(std::memory_order_acquire);
  if ((head >> 32) != (e & 0xffffffffu)) return;  // not (or no longer) this operation's: nothing to compare
  const std::uint64_t root = words[1].load(std::memory_order_relaxed);
  const std::uint64_t count = words[2].load(std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (words[0].load(std::memory_order_relaxed) != head) return;  // rewritten meanwhile
  if (head == head_word(e, announced_) && root == static_cast<std::uint32_t>(announced_.root) &&
      count == announced_.count)
    return;
  CallPrint theirs;
  theirs.kind = static_cast<std::uint32_t>((head >> 24) & 0xff);
  theirs.dtype = static_cast<std::uint32_t>((head >> 16) & 0xff);
  theirs.op = static_cast<std::uint32_t>((head >> 8) & 0xff);
  theirs.root = static_cast<std::int32_t>(static_cast<std::uint32_t>(root));
  theirs.count = count;
  fail_mismatch(r, theirs, what);
}

void ShmWindow::fail_mismatch(int r, const CallPrint& theirs, const WaitContext& what) {
  const auto name = [&](const CallPrint& c) { return describe_ ? describe_(c) : std::string("another operation"); };
  const std::string text = "rank " + std::to_string(rank_) + " called " + name(announced_) + ", rank " +
                           std::to_string(r) + " called " + name(theirs) + " (window operation " +
                           std::to_string(announced_epoch_) + ")";
  throw CollectiveMismatch(what.describe() + ": the ranks called different operations: " + text +
                           "; nothing was combined from the mismatched data, and the communicator is broken "
                           "(its ranks stopped at different points): make a new one");
}

void ShmWindow::report(Failure kind, const std::string& text) {
  Control& me = control(rank_);
  if (me.poison.load(std::memory_order_relaxed) != 0) return;  // the first report stands
  std::snprintf(me.reason, sizeof me.reason, "%s", text.c_str());
  me.poison.store(static_cast<std::uint64_t>(kind), std::memory_order_release);
}

void ShmWindow::check_poison(int first, int last, std::uint64_t marker, const WaitContext& what) {
  for (int q = 0; q < size_; ++q) {
    if (q == rank_) continue;
    const auto kind = static_cast<Failure>(control(q).poison.load(std::memory_order_acquire));
    if (kind == Failure::kNone) continue;
    // A rank that left took part in everything before: only a wait for it to arrive fails.
    if (kind == Failure::kLeft &&
        (q < first || q >= last || control(q).marker.load(std::memory_order_acquire) >= marker))
      continue;
    raise_failure(poison_of(q), what.describe());
  }
}

PeerFailure ShmWindow::poison_of(int q) const {
  const auto kind = static_cast<Failure>(control(q).poison.load(std::memory_order_acquire));
  if (kind == Failure::kNone) return {};
  char reason[sizeof(Control::reason)];
  std::memcpy(reason, control(q).reason, sizeof reason);
  reason[sizeof reason - 1] = '\0';
  const std::string who =
      "rank " + std::to_string(q) + " (pid " + std::to_string(pids_[static_cast<std::size_t>(q)]) + ")";
  if (kind == Failure::kLeft) return {Failure::kBroken, false, who + " " + reason + " before this operation"};
  return {kind, true, who + " reported: " + reason};
}

void ShmWindow::set_watch(PeerWatch* watch, std::vector<int> ranks, const std::uint64_t* seq, const CallPrint* call) {
  watch_ = watch;
  watch_ranks_ = std::move(ranks);
  watch_seq_ = seq;
  watch_call_ = call;
}

void ShmWindow::ask_watch(int r, Clock::time_point began, bool& noted, const WaitContext& what) {
  const int peer = watch_ranks_[static_cast<std::size_t>(r)];
  if (const PeerFailure f = watch_->check(peer, *watch_seq_, watch_call_)) raise_failure(f, what.describe());
  if (!noted && Clock::now() - began >= kNoteWaitingAfter) {
    watch_->note_waiting(peer, *watch_seq_, *watch_call_);
    noted = true;
  }
}

void ShmWindow::check_alive(int first, int last, std::uint64_t marker, const WaitContext& what) {
  for (int q = first; q < last; ++q) {
    if (q == rank_ || control(q).marker.load(std::memory_order_acquire) >= marker) continue;
    const pid_t pid = pids_[static_cast<std::size_t>(q)];
    if (!process_ended(pid)) continue;
    raise_failure(
        {Failure::kBroken, false, "rank " + std::to_string(q) + " (pid " + std::to_string(pid) + ") has exited"},
        what.describe());
  }
}

std::string ShmWindow::arrivals(int first, int last, std::uint64_t marker, const char* when) const {
  std::string late, there;
  int n_late = 0, n_there = 0;
  for (int q = first; q < last; ++q) {
    const bool arrived = q == rank_ || control(q).marker.load(std::memory_order_acquire) >= marker;
    std::string& list = arrived ? there : late;
    list += (list.empty() ? "" : ", ") + std::to_string(q);
    ++(arrived ? n_there : n_late);
  }
  std::string text =
      (n_late > 1 ? "ranks " : "rank ") + late + (n_late > 1 ? " have" : " has") + " not arrived " + when;
  if (n_there > 0) text += " (arrived: " + std::string(n_there > 1 ? "ranks " : "rank ") + there + ")";
  if (announced_epoch_ != 0 && describe_ != nullptr) text += "; this rank called " + describe_(announced_);
  return text;
}

void ShmWindow::wait_all(std::uint64_t marker, double timeout_s, const WaitContext& what) {
  wait_ranks(0, size_, marker, timeout_s, what);
}

void ShmWindow::wait_for(int r, std::uint64_t marker, double timeout_s, const WaitContext& what) {
  wait_ranks(r, r + 1, marker, timeout_s, what);
}

void ShmWindow::wait_ranks(int first, int last, std::uint64_t marker, double timeout_s, const WaitContext& what) {
  int r = first;
  // Fast path: the ranks are usually there already, or within a few hundred ns.
  // A peer's call is compared once its marker of this operation is seen: before
  // anything it wrote for the operation is read.
  const std::uint64_t epoch = marker / kMarkersPerEpoch;
  const bool check = announced_epoch_ != 0 && epoch == announced_epoch_;
  for (int spins = 0; spins < 64 && r < last; ++spins) {
    for (; r < last && control(r).marker.load(std::memory_order_acquire) >= marker; ++r) {
      if (check) verify(r, what);
    }
  }
  if (r == last) return;
  Deadline deadline(timeout_s);
  StallWarning stall(warn_after_s_);
  Backoff backoff;
  const Clock::time_point began = Clock::now();
  Clock::time_point next_alive_check = began + std::chrono::milliseconds(50);
  bool noted = false;
  for (unsigned polls = 1;; ++polls) {
    backoff.pause();
    for (; r < last && control(r).marker.load(std::memory_order_acquire) >= marker; ++r) {
      if (check) verify(r, what);
    }
    if (r == last) return;
    // Slow path: a peer that found a mismatch will never arrive; and ranks that
    // wait for each other without either arriving (e.g. two that each take
    // themselves for a reduce's root) compare their calls here.
    check_poison(first, last, marker, what);
    // A peer's exit is looked for every ~50 ms of waiting: cheap beside the wait,
    // and well within the second a user waits for it.
    if ((polls & 127u) == 0 && Clock::now() >= next_alive_check) {
      check_alive(first, last, marker, what);
      next_alive_check = Clock::now() + std::chrono::milliseconds(50);
    }
    if (announced_epoch_ != 0) {
      if (!published_) publish();
      for (int q = 0; q < size_; ++q) verify(q, what);
    }
    if ((polls & 255u) == 0) {
      if (watch_ != nullptr) ask_watch(r, began, noted, what);
      if (stall.due())
        warn(what.describe() + " has waited " + seconds_text(warn_after_s_) +
             " (COLLEX_WARN_AFTER): " + arrivals(first, last, marker, "yet"));
      if (deadline.expired()) {
        char secs[32];
        std::snprintf(secs, sizeof secs, "after %.1f s", timeout_s);
        throw CollectiveTimeout(what.describe() + ": " + arrivals(first, last, marker, secs));
      }
      if (polls >= 1024 && interrupt_requested()) throw Interrupted();
    }
  }
}

}  // namespace collex
