#include "collex/core/failure_watch.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <limits>

#include "collex/common/process.h"

namespace collex {
namespace {

// A report: kind (1 byte), sequence number (8 bytes), then the text.
constexpr std::size_t kHead = 9;
constexpr std::size_t kMaxText = 900;
constexpr auto kPidCheckEvery = std::chrono::milliseconds(50);
// The kind byte of a waiting note (not a failure): sequence number, then the CallPrint.
constexpr char kWaitingNote = 100;
// drain() receives on every this-many-th call.
constexpr unsigned kDrainEvery = 64;

}  // namespace

FailureWatch::FailureWatch(MPI_Comm comm, MPI_Comm local, int tag, CallDescriber describe)
    : comm_(comm), tag_(tag), describe_(describe) {
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &size_);
  pids_.assign(static_cast<std::size_t>(size_), 0);
  left_at_.assign(static_cast<std::size_t>(size_), std::numeric_limits<std::uint64_t>::max());
  left_why_.resize(static_cast<std::size_t>(size_));
  notes_.resize(static_cast<std::size_t>(size_));
  int local_size = 1;
  MPI_Comm_size(local, &local_size);
  long long mine[2] = {rank_, static_cast<long long>(getpid())};
  std::vector<long long> all(2 * static_cast<std::size_t>(local_size));
  MPI_Allgather(mine, 2, MPI_LONG_LONG, all.data(), 2, MPI_LONG_LONG, local);
  for (int i = 0; i < local_size; ++i) {
    const auto r = static_cast<std::size_t>(all[2 * static_cast<std::size_t>(i)]);
    if (r != static_cast<std::size_t>(rank_)) pids_[r] = static_cast<pid_t>(all[2 * static_cast<std::size_t>(i) + 1]);
  }
}

FailureWatch::~FailureWatch() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (Sent& m : sent_) {
    int done = 0;
    MPI_Test(&m.request, &done, MPI_STATUS_IGNORE);
    if (done) continue;
    // Still on its way: MPI reads the text later, so it stays.
    MPI_Request_free(&m.request);
    m.text.release();  // NOLINT: deliberate leak
  }
}

void FailureWatch::send(int to, const std::string& message) {
  auto text = std::make_unique<std::string>(message);  // where it lies must not move while MPI reads it
  MPI_Request req;
  if (MPI_Isend(text->data(), static_cast<int>(text->size()), MPI_CHAR, to, tag_, comm_, &req) != MPI_SUCCESS) return;
  sent_.push_back({req, std::move(text)});
  // Forget what has gone out (notes are sent now and then for as long as the communicator lives).
  if (sent_.size() >= 64) {
    sent_.erase(std::remove_if(sent_.begin(), sent_.end(),
                               [](Sent& m) {
                                 int done = 0;
                                 MPI_Test(&m.request, &done, MPI_STATUS_IGNORE);
                                 return done != 0;
                               }),
                sent_.end());
  }
}

void FailureWatch::report(Failure kind, std::uint64_t seq, const std::string& text) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized || size_ == 1) return;
  std::lock_guard<std::mutex> lock(mutex_);
  std::string message(kHead, '\0');
  message[0] = static_cast<char>(kind);
  std::memcpy(&message[1], &seq, sizeof seq);
  message += text.substr(0, kMaxText);
  for (int r = 0; r < size_; ++r) {
    // Not to a node-mate whose process has ended: MPICH (5.0.2, UCX between
    // nodes) may crash in MPI_Isend to a dead peer, and take the next sends of
    // the ranks this one talks to with it.
    const pid_t pid = pids_[static_cast<std::size_t>(r)];
    if (r != rank_ && !(pid != 0 && process_ended(pid))) send(r, message);
  }
}

void FailureWatch::note_waiting(int peer, std::uint64_t seq, const CallPrint& call) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (seq == noted_seq_ || peer == rank_) return;
  noted_seq_ = seq;
  std::string message(kHead + sizeof call, '\0');
  message[0] = kWaitingNote;
  std::memcpy(&message[1], &seq, sizeof seq);
  std::memcpy(&message[kHead], &call, sizeof call);
  send(peer, message);
}

void FailureWatch::drain() {
  if (++drains_ % kDrainEvery != 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  receive_reports();
}

void FailureWatch::settle(double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  const Deadline deadline(seconds);
  for (;;) {
    receive_reports();
    bool all_left = true;
    for (int r = 0; r < size_ && all_left; ++r)
      all_left = r == rank_ || !left_why_[static_cast<std::size_t>(r)].empty();
    if (all_left || deadline.expired()) return;
    struct timespec pause{0, 200000};
    nanosleep(&pause, nullptr);
  }
}

void FailureWatch::receive_reports() {
  for (;;) {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, tag_, comm_, &flag, &st);
    if (!flag) return;
    int n = 0;
    MPI_Get_count(&st, MPI_CHAR, &n);
    std::string m(static_cast<std::size_t>(n > 0 ? n : 0), '\0');
    MPI_Recv(m.data(), n, MPI_CHAR, st.MPI_SOURCE, tag_, comm_, MPI_STATUS_IGNORE);
    if (m.size() < kHead) continue;
    const auto kind = static_cast<Failure>(m[0]);
    std::uint64_t seq = 0;
    std::memcpy(&seq, &m[1], sizeof seq);
    const std::string text = m.substr(kHead);
    const auto from = static_cast<std::size_t>(st.MPI_SOURCE);
    if (m[0] == kWaitingNote) {
      if (text.size() == sizeof(CallPrint)) {
        notes_[from].seq = seq;
        std::memcpy(&notes_[from].call, text.data(), sizeof(CallPrint));
      }
    } else if (kind == Failure::kLeft) {
      left_at_[from] = seq;
      left_why_[from] = text.empty() ? "left the communicator" : text;
    } else if (!heard_) {
      heard_ = {kind, true, "rank " + std::to_string(st.MPI_SOURCE) + " reported: " + text};
    }
  }
}

PeerFailure FailureWatch::check(int peer, std::uint64_t seq, const CallPrint* call) {
  std::lock_guard<std::mutex> lock(mutex_);
  receive_reports();
  if (heard_) return heard_;
  if (call != nullptr) {
    // A peer waiting in this same operation, having called something else.
    for (int q = 0; q < size_; ++q) {
      const Note& n = notes_[static_cast<std::size_t>(q)];
      if (q == rank_ || n.seq != seq || n.call == *call) continue;
      const auto name = [&](const CallPrint& c) { return describe_ ? describe_(c) : std::string("another call"); };
      return {Failure::kMismatch, false,
              "the ranks called different operations: rank " + std::to_string(rank_) + " called " + name(*call) +
                  ", rank " + std::to_string(q) + " called " + name(n.call) +
                  " (found while both waited); nothing was combined from mismatched data"};
    }
  }
  const auto p = static_cast<std::size_t>(peer);
  const auto who = [&] {
    return "rank " + std::to_string(peer) + (pids_[p] ? " (pid " + std::to_string(pids_[p]) + ")" : "");
  };
  if (!left_why_[p].empty() && seq >= left_at_[p])
    return {Failure::kBroken, false, who() + " " + left_why_[p] + " before this operation"};
  const auto now = Clock::now();
  if (pids_[p] != 0 && now >= next_pid_check_) {
    next_pid_check_ = now + kPidCheckEvery;
    if (process_ended(pids_[p])) return {Failure::kBroken, false, who() + " has exited"};
  }
  return {};
}

}  // namespace collex
