// One rank's side of "a failure reaches every rank" over MPI: it tells the
// other ranks of a communicator when this rank failed or left (a small message
// on a tag of its own, sent and forgotten), and it answers waits that make no
// progress: a failure another rank reported, a peer that left before the
// operation, a peer on this node whose process has ended.
#pragma once

#include <mpi.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
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
  // `describe` names calls in the messages of mismatches found from notes.
  FailureWatch(MPI_Comm comm, MPI_Comm local, int tag, CallDescriber describe);
  ~FailureWatch();

  // Tells every other rank: `kind` and the text its error will carry. `seq`:
  // for kLeft, how many operations this rank issued (the first it will not join).
  void report(Failure kind, std::uint64_t seq, const std::string& text);
  PeerFailure check(int peer, std::uint64_t seq, const CallPrint* call) override;
  void note_waiting(int peer, std::uint64_t seq, const CallPrint& call) override;
  void drain() override;
  // Takes in what the others still send, until each has said it left, for up to
  // `seconds`: a message left unreceived at the end makes some networks' MPI
  // warn (UCX between nodes: "unexpected tag-receive descriptor ... was not
  // matched"). Ranks that leave together, as at finalize, settle at once.
  void settle(double seconds);
  // The process id of `rank` when it runs on this node, else 0.
  pid_t pid_of(int rank) const { return pids_[static_cast<std::size_t>(rank)]; }

 private:
  void receive_reports();
  void send(int to, const std::string& message);

  MPI_Comm comm_;
  int tag_;
  int rank_ = 0, size_ = 1;
  std::vector<pid_t> pids_;
  std::vector<std::uint64_t> left_at_;  // per rank that left: the first operation it did not join
  std::vector<std::string> left_why_;   // per rank: why it left ("": it has not)
  PeerFailure heard_;                   // the first failure another rank reported
  struct Note {                         // a peer's last word that it waits (kNoSequence: none)
    std::uint64_t seq = kNoSequence;
    CallPrint call;
  };
  std::vector<Note> notes_;
  std::uint64_t noted_seq_ = kNoSequence;  // the operation this rank last sent a note for
  CallDescriber describe_;
  unsigned drains_ = 0;
  Clock::time_point next_pid_check_{};
  struct Sent {  // a message on its way, and its text, alive until it has gone
    MPI_Request request;
    std::unique_ptr<std::string> text;
  };
  std::vector<Sent> sent_;
  std::mutex mutex_;  // waits on the engine's thread and point-to-point waits on the caller's
};

}  // namespace collex
