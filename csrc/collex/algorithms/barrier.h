// Dissemination barrier: in round k every rank signals rank + 2^k and waits for
// rank - 2^k; after ceil(log2 p) rounds every rank has heard from every other.
#pragma once

#include "collex/algorithms/schedule.h"

namespace collex::barrier {

void dissemination(Schedule& s, int rank, int size);

}  // namespace collex::barrier
