// Runs an algorithm on ranks that are threads of this process, over
// ThreadTransport (transport/local): the algorithm's own offer and run code,
// its schedules and the executor, exactly as a communicator runs them, but
// without mpirun. For tests (bindings: collex._core._run_in_threads).
#pragma once

#include <cstddef>
#include <vector>

#include "collex/algorithms/algorithm.h"

namespace collex {

struct InProcessOptions {
  std::size_t chunk_bytes = 512 * 1024;  // the pipelining chunk (COLLEX_CHUNK_BYTES)
  double timeout_s = 30;
};

// calls[r] is rank r's call (its buffers; every rank's alike otherwise).
// Throws InvalidArgument when the algorithm declines the call, else the first
// error any rank raised (the others then fail too, waiting for it, until their
// timeout: keep it short in tests that expect errors).
void run_in_threads(Algo algo, const std::vector<CollectiveCall>& calls, const InProcessOptions& options);

}  // namespace collex
