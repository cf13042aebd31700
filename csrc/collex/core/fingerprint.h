// The strict check (COLLEX_CHECK=1): before each collective, the ranks
// all-gather what each called and its sequence number over the communicator's
// transport, and raise CollectiveMismatch alike on every rank when they differ.
// The always-on checks (the window's call prints, the tags' call hash) find most
// mismatches without it; this one also names every rank's call.
#pragma once

#include "collex/algorithms/algorithm.h"

namespace collex {

void check_fingerprints(const CollectiveCall& call, const Site& site);

}  // namespace collex
