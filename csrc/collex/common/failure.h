// How one rank's failure reaches the others: the kinds of failure a rank
// reports (on the shared window's poison word, and in a message over MPI), the
// watch that waits ask about their peers, and the exceptions a report becomes.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>

#include "collex/common/call_print.h"
#include "collex/common/errors.h"

namespace collex {

// The numbers travel between ranks (poison words, report messages): keep them.
enum class Failure : std::uint8_t {
  kNone = 0,
  kMismatch = 1,  // the ranks called different operations
  kBroken = 2,    // a rank found the communicator broken (a peer exited, a transfer failed)
  kTimeout = 3,   // a rank's wait passed its deadline
  kLeft = 4,      // the rank shut the communicator down (finalize, or its program ended)
};

// A failure heard from another rank (not this rank's own finding): it is not
// reported again, so that one failure makes one report.
class Relayed {
 public:
  virtual ~Relayed() = default;
};
template <class E>
class RelayedError final : public E, public Relayed {
 public:
  using E::E;
};

// Which kind of failure an exception from a collective is, for its report
// (kNone: nothing to tell the others, e.g. a bad argument or Ctrl-C).
Failure failure_of(const std::exception& e);
// Whether the exception came from another rank's report.
bool is_relayed(const std::exception& e);

// What a watch found: the kind, and the cause as the message's tail
// ("rank 2 (pid 4242) has exited").
struct PeerFailure {
  Failure kind = Failure::kNone;
  bool relayed = false;  // heard from another rank
  std::string text;
  explicit operator bool() const { return kind != Failure::kNone; }
};

// Asks `look` every millisecond, for up to `seconds`, until it finds a failure
// (returned; none when the time runs out): for an error of this rank's own (a
// transfer or a copy that failed because the peer gave up) whose cause another
// rank reports a moment later, and which should be raised instead.
PeerFailure await_cause(double seconds, const std::function<PeerFailure()>& look);

// Throws the exception of `f`'s kind: "<where>: <f.text>", with the advice the kind calls for.
[[noreturn]] void raise_failure(const PeerFailure& f, const std::string& where);

// The sequence number checks pass for a wait outside the numbered operations
// (point-to-point): a peer that left fails it, whenever it left.
constexpr std::uint64_t kNoSequence = ~std::uint64_t{0};

// How long a wait lasts before it tells its peer what this rank called
// (PeerWatch::note_waiting): longer than a transfer in progress takes.
constexpr auto kNoteWaitingAfter = std::chrono::milliseconds(10);

// What a wait that makes no quick progress asks now and then (off the fast
// path) about the rank it waits for: whether a failure elsewhere means the wait
// will never end. seq: the operation's sequence number on this communicator.
class PeerWatch {
 public:
  // `call`: what this rank called for operation `seq` (null outside the numbered
  // operations), compared with what waiting peers said they called.
  virtual PeerFailure check(int peer, std::uint64_t seq, const CallPrint* call) = 0;
  // Tells `peer` that this rank has long waited for it in operation `seq`,
  // having called `call`, once per operation: a peer that called something
  // else finds the mismatch even where both only wait to receive (no message
  // of either carries its call).
  virtual void note_waiting(int peer, std::uint64_t seq, const CallPrint& call) = 0;
  // Takes in now and then what peers sent (cheap; on the fast path), so that
  // the notes of peers that waited do not pile up in MPI.
  virtual void drain() = 0;

 protected:
  ~PeerWatch() = default;
};

}  // namespace collex
