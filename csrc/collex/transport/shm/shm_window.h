// The Window of the CPU ranks of one node: one POSIX shared-memory segment made
// by local rank 0, its name sent to the others over MPI, mapped by all and
// unlinked at once (a crash leaves nothing in /dev/shm); peers' own buffers are
// read with process_vm_readv, in one copy, or in place where they lie in a
// symmetric buffer or in a region a peer moved onto shared pages.
#pragma once

#include <mpi.h>
#include <sys/types.h>

#include <memory>
#include <vector>

#include "collex/common/failure.h"
#include "collex/common/waiting.h"
#include "collex/transport/shm/peer_regions.h"
#include "collex/transport/window.h"

namespace collex {

class ShmWindow final : public Window {
 public:
  // Collective over `node` (ranks that share memory). Returns null on every rank
  // if any rank could not create or map the segment (the caller then uses MPI).
  static std::unique_ptr<ShmWindow> create(MPI_Comm node, std::size_t slot_bytes);
  ~ShmWindow() override;

  const char* name() const override { return "shm"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  char* slot(int r, int parity) override;
  std::size_t slot_bytes() const override { return slot_bytes_; }
  bool can_read_peers() const override { return can_read_; }
  void publish(std::uintptr_t input, std::uintptr_t result) override;
  std::uintptr_t peer_input(int r) const override;
  std::uintptr_t peer_result(int r) const override;
  void publish_note(std::uint64_t note) override;
  std::uint64_t peer_note(int r) const override;
  void read(int r, std::uintptr_t remote, void* local, std::size_t bytes, kernels::Stores stores) override;
  void write(int r, std::uintptr_t remote, const void* local, std::size_t bytes, kernels::Stores stores) override;
  void read_spans(int r, const Span* remote, std::size_t n_remote, const Span* local, std::size_t n_local,
                  kernels::Stores stores) override;
  const char* mapped(int r, std::uintptr_t remote, std::size_t bytes) const override;
  Span shared_part(int r, std::uintptr_t remote, std::size_t bytes) const override;
  // The part of this rank's memory [address, address + bytes) that peers can
  // map, outside any operation: in a symmetric buffer, or in a region
  // shm::share made (shared_part(rank(), ...) knows only what the operation
  // under way published).
  Span own_shared_part(std::uintptr_t address, std::size_t bytes) const;
  void publish_spans(const Span* spans, std::size_t n) override;

  // Collective over the node: every rank gets `bytes` of its own in one new
  // segment that all ranks map, so that peers read each other's parts in place.
  std::shared_ptr<SymmetricMemory> allocate(std::size_t bytes);
  void announce(std::uint64_t epoch, const CallPrint& call) override;
  void set_describer(CallDescriber describe) override { describe_ = describe; }
  // How long a wait lasts before it tells stderr who has not arrived (COLLEX_WARN_AFTER).
  void set_warn_after(double seconds) { warn_after_s_ = seconds; }
  void arrive(std::uint64_t marker) override;
  void wait_all(std::uint64_t marker, double timeout_s, const WaitContext& what) override;
  void wait_for(int r, std::uint64_t marker, double timeout_s, const WaitContext& what) override;
  // Sets this rank's poison word to `kind`, with the text the others' errors
  // will carry, once (the first report stands): every wait of the others looks
  // at it. kLeft (this rank shut down) fails only waits for this rank.
  void report(Failure kind, const std::string& text);
  // Where some of the communicator's ranks wait elsewhere (over MPI, on other
  // nodes): waits that make no quick progress also ask `watch` about the rank
  // they wait for, and tell it after a while what this rank called, so that a
  // rank waiting here and one waiting over MPI in the same operation, having
  // called differently, find it. `ranks`: each window rank's number for the
  // watch; `seq` and `call`: the communicator's operation now running and this
  // rank's call of it (read at each wait). All borrowed.
  void set_watch(PeerWatch* watch, std::vector<int> ranks, const std::uint64_t* seq, const CallPrint* call);

 private:
  // Shared regions a rank lists for one operation's spans (publish_spans).
  static constexpr std::uint32_t kDirectory = 128;
  struct Control;   // one cache line of flags and addresses per rank, in the segment
  struct Registry;  // the symmetric segments now mapped, shared with their buffers

  ShmWindow() = default;
  Control& control(int r) const;
  void cross_copy(bool to_peer, int r, std::uintptr_t remote, char* local, std::size_t bytes, kernels::Stores stores);
  // Where this rank sees [remote, remote + bytes) of rank r's memory when it
  // lies in a shared region r published for this operation (mapped on first
  // use), else null; with `part`, the part of the range that does.
  const char* in_shared_region(int r, std::uintptr_t remote, std::size_t bytes, Span* part = nullptr) const;
  // The same for the symmetric segments (allocate) alone.
  const char* in_segment(int r, std::uintptr_t remote, std::size_t bytes) const;
  // The region rank r published for this operation that holds `address`, or
  // null; `next_start`, if given, is lowered to the start of the first region
  // beyond it.
  const shm::PublishedRegion* region_at(int r, std::uintptr_t address, std::uintptr_t* next_start) const;
  // Where this rank maps rank r's `region` (mapping it on first use), or null.
  char* view_of(int r, const shm::PublishedRegion& region) const;
  // read_spans' kernel part: `remote` of rank r into the spans at the cursor
  // `local_cursor` (shm_window_copies.cpp's SpanCursor), which it advances.
  void read_spans_through_kernel(int r, const Span* remote, std::size_t n_remote, void* local_cursor);
  void wait_ranks(int first, int last, std::uint64_t marker, double timeout_s, const WaitContext& what);
  // Writes this rank's announced call where peers read it.
  void publish();
  // Compares rank r's published call for this rank's operation with this rank's
  // (nothing when r has not published one for it).
  void verify(int r, const WaitContext& what);
  // Rank q's poison word as what a wait raises (none: q has reported nothing).
  PeerFailure poison_of(int q) const;
  // Raises why a copy from or to rank r (`what`: "reading", "writing") failed:
  // a cause some rank reports within a moment, or r's exit, or the copy's error.
  [[noreturn]] void fail_copy(const char* what, int r);
  // Throws when a peer has reported a failure (its poison word is set), or has
  // left while this wait, for ranks [first, last) to reach `marker`, needs it.
  void check_poison(int first, int last, std::uint64_t marker, const WaitContext& what);
  // Throws CommunicatorBroken (and reports it) when a rank in [first, last) that
  // has not reached `marker` has exited.
  void check_alive(int first, int last, std::uint64_t marker, const WaitContext& what);
  // Who of ranks [first, last) has not reached `marker` `when` (e.g. "after
  // 300.0 s"), who has, and what this rank called: a stalled wait's facts.
  std::string arrivals(int first, int last, std::uint64_t marker, const char* when) const;
  [[noreturn]] void fail_mismatch(int r, const CallPrint& theirs, const WaitContext& what);
  // The slow path's question to the watch about window rank r (set_watch);
  // `noted`: whether this wait has told r what this rank called.
  void ask_watch(int r, Clock::time_point began, bool& noted, const WaitContext& what);

  int rank_ = 0;
  int size_ = 1;
  std::size_t slot_bytes_ = 0;
  void* base_ = nullptr;
  std::size_t mapped_bytes_ = 0;
  bool can_read_ = false;
  std::unique_ptr<pid_t[]> pids_;
  MPI_Comm node_ = MPI_COMM_NULL;  // borrowed from the communicator, for allocate()
  std::shared_ptr<Registry> registry_;
  std::unique_ptr<shm::PeerRegions> peer_regions_;  // peers' shared regions as mapped here
  std::uint64_t announced_epoch_ = 0;               // the operation this rank now runs (0: none announced)
  CallPrint announced_{};
  bool published_ = true;
  CallDescriber describe_ = nullptr;
  double warn_after_s_ = 60.0;
  PeerWatch* watch_ = nullptr;  // set_watch
  std::vector<int> watch_ranks_;
  const std::uint64_t* watch_seq_ = nullptr;
  const CallPrint* watch_call_ = nullptr;
};

}  // namespace collex
