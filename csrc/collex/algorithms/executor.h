// Runs one rank's schedule on a transport: posts receives ahead into a small
// window (staging slots for receives that reduce, the destination itself for
// receives that copy), reduces with the kernels, and waits with a deadline.
// It knows neither the collective nor the transport's kind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "collex/algorithms/op_label.h"
#include "collex/algorithms/schedule.h"
#include "collex/common/dtype.h"
#include "collex/common/failure.h"
#include "collex/common/reduce_op.h"
#include "collex/transport/transport.h"

namespace collex {

// Staging memory reused across operations (allocation is costly for big slots).
// After a failure the executor leaves it to any receive still in flight.
struct Staging {
  std::vector<char> bytes;
};

struct ExecArgs {
  void* data = nullptr;         // the working buffer the schedule's offsets index
  const void* input = nullptr;  // read by from_input steps, at the same offsets (null: data)
  DType dtype = DType::kUInt8;
  ReduceOp op = ReduceOp::kSum;
  double divisor = 1.0;        // for kDivide steps
  std::uint32_t tag_base = 0;  // a step's tag is tag_base + its channel
  double timeout_s = 300.0;    // per wait: how long with no progress before giving up
  double warn_after_s = 60.0;  // per wait: how long before it tells stderr what it waits for
  // Tag bits that name the operation, and those that carry a hash of the call
  // (0: no check). A wait that makes no quick progress looks for a peer's
  // message of the same operation with another hash (the peer called it
  // differently), which raises CollectiveMismatch.
  std::uint32_t op_mask = 0;
  std::uint32_t hash_mask = 0;
  // Asked by the same waits about the peer they wait for (null: nobody asked);
  // a wait that lasts tells that peer `call`, what this rank called (null: nothing to tell).
  PeerWatch* watch = nullptr;
  const CallPrint* call = nullptr;
  // The watch's number for each of the transport's ranks (null: the same).
  const std::vector<int>* watch_ranks = nullptr;
};

// Throws CollectiveTimeout (a peer never came), CollectiveMismatch (a peer sent
// more than expected), CollexError (transport failure), Interrupted (Ctrl-C).
// On any throw the pending transfers have been abandoned.
void execute(const Schedule& schedule, Transport& transport, const ExecArgs& args, const OpLabel& label,
             Staging& staging);

}  // namespace collex
