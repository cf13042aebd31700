// The synchronising half of the node's window: progress markers, the call
// prints peers compare, failure reports (poison words), the watch's word on
// ranks of other nodes, and the waits that check all of them.
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
#include "collex/common/time_parts.h"
#include "collex/common/waiting.h"
#include "collex/kernels/copy.h"
#include "collex/transport/shm/shm_control.h"
#include "collex/transport/shm/shm_window.h"
namespace collex {

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
  const time_parts::Timed timed(time_parts::Part::kWait);
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
