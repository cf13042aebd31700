#include "collex/core/failure_watch.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <limits>

#include "collex/common/process.h"

namespace collex {
namespace {

// A report: kind (1 byte), sequence number (8 bytes), then the text.
constexpr std::size_t kHead = 9;
constexpr std::size_t kMaxText = 900;
constexpr auto kPidCheckEvery = std::chrono::milliseconds(50);

}  // namespace

FailureWatch::FailureWatch(MPI_Comm comm, MPI_Comm local, int tag) : comm_(comm), tag_(tag) {
  MPI_Comm_rank(comm, &rank_);
  MPI_Comm_size(comm, &size_);
  pids_.assign(static_cast<std::size_t>(size_), 0);
  left_at_.assign(static_cast<std::size_t>(size_), std::numeric_limits<std::uint64_t>::max());
  left_why_.resize(static_cast<std::size_t>(size_));
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
  if (finalized || sent_.empty()) return;
  int done = 0;
  MPI_Testall(static_cast<int>(sent_.size()), sent_.data(), &done, MPI_STATUSES_IGNORE);
  if (done) return;
  // A report still on its way: MPI reads its text later, so it stays.
  for (MPI_Request& r : sent_) {
    if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
  }
  new std::vector<std::string>(std::move(outbox_));  // NOLINT: deliberate leak
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
  outbox_.push_back(std::move(message));
  const std::string& m = outbox_.back();
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    MPI_Request req;
    if (MPI_Isend(m.data(), static_cast<int>(m.size()), MPI_CHAR, r, tag_, comm_, &req) == MPI_SUCCESS)
      sent_.push_back(req);
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
    if (kind == Failure::kLeft) {
      left_at_[from] = seq;
      left_why_[from] = text.empty() ? "left the communicator" : text;
    } else if (!heard_) {
      heard_ = {kind, true, "rank " + std::to_string(st.MPI_SOURCE) + " reported: " + text};
    }
  }
}

PeerFailure FailureWatch::check(int peer, std::uint64_t seq) {
  std::lock_guard<std::mutex> lock(mutex_);
  receive_reports();
  if (heard_) return heard_;
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
