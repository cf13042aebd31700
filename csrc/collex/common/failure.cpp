#include "collex/common/failure.h"

#include <ctime>

#include "collex/common/waiting.h"

namespace collex {

Failure failure_of(const std::exception& e) {
  if (dynamic_cast<const InvalidArgument*>(&e) != nullptr || dynamic_cast<const Interrupted*>(&e) != nullptr)
    return Failure::kNone;
  if (dynamic_cast<const CollectiveMismatch*>(&e) != nullptr) return Failure::kMismatch;
  if (dynamic_cast<const CollectiveTimeout*>(&e) != nullptr) return Failure::kTimeout;
  return Failure::kBroken;
}

bool is_relayed(const std::exception& e) { return dynamic_cast<const Relayed*>(&e) != nullptr; }

PeerFailure await_cause(double seconds, const std::function<PeerFailure()>& look) {
  const Deadline deadline(seconds);
  for (;;) {
    if (PeerFailure f = look()) return f;
    if (deadline.expired()) return {};
    struct timespec pause{0, 1000000};
    nanosleep(&pause, nullptr);
  }
}

void raise_failure(const PeerFailure& f, const std::string& where) {
  // A relayed text is the reporter's whole message, its advice included.
  if (f.relayed) {
    const std::string text = where + ": " + f.text;
    if (f.kind == Failure::kMismatch) throw RelayedError<CollectiveMismatch>(text);
    if (f.kind == Failure::kTimeout) throw RelayedError<CollectiveTimeout>(text);
    throw RelayedError<CommunicatorBroken>(text);
  }
  const std::string text = where + ": " + f.text + "; the communicator is broken";
  if (f.kind == Failure::kMismatch) throw CollectiveMismatch(text + ": make a new one");
  if (f.kind == Failure::kTimeout) throw CollectiveTimeout(text);
  throw CommunicatorBroken(text);
}

}  // namespace collex
