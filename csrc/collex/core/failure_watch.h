// One rank's side of "a failure reaches every rank" over MPI: it tells the
// other ranks of a communicator when this rank failed or left (a small message
// on a tag of its own, sent and forgotten), and it answers waits that make no
// progress: a failure another rank reported, a peer that left before the
// operation, a peer on this node whose process has ended.
#pragma once

#include <mpi.h>
#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "collex/common/failure.h"
#include "collex/common/waiting.h"

namespace collex {

class FailureWatch final : public PeerWatch {
 public:
  // Collective over `local` (the ranks of this node, a subset of `comm`): they
  // exchange their process ids. Borrows both communicators.
  FailureWatch(MPI_Comm comm, MPI_Comm local, int tag);
  ~FailureWatch();

  // Tells every other rank: `kind` and the text its error will carry. `seq`:
  // for kLeft, how many operations this rank issued (the first it will not join).
  void report(Failure kind, std::uint64_t seq, const std::string& text);
  PeerFailure check(int peer, std::uint64_t seq) override;
  // The process id of `rank` when it runs on this node, else 0.
  pid_t pid_of(int rank) const { return pids_[static_cast<std::size_t>(rank)]; }

 private:
  void receive_reports();

  MPI_Comm comm_;
  int tag_;
  int rank_ = 0, size_ = 1;
  std::vector<pid_t> pids_;
  std::vector<std::uint64_t> left_at_;  // per rank that left: the first operation it did not join
  std::vector<std::string> left_why_;   // per rank: why it left ("": it has not)
  PeerFailure heard_;                   // the first failure another rank reported
  Clock::time_point next_pid_check_{};
  std::vector<MPI_Request> sent_;
  std::vector<std::string> outbox_;  // what sent_ sends, alive until they complete
  std::mutex mutex_;                 // waits on the engine's thread and point-to-point waits on the caller's
};

}  // namespace collex
