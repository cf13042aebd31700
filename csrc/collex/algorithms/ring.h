// Ring schedules. Ranks pass blocks to their right neighbour (rank + 1) and take
// them from the left; each block is cut into chunks so that forwarding chunk k
// overlaps receiving chunk k + 1. Bandwidth-optimal for large messages.
#pragma once

#include <cstddef>

#include "collex/algorithms/schedule.h"

namespace collex::ring {

// After it, rank r holds the reduction of block r (blocks per block_range) of the
// whole buffer; the other blocks hold partial sums. p - 1 rounds.
// With `divide_own_block` the owner divides its block by p (avg).
void reduce_scatter(Schedule& s, int rank, int size, std::size_t count, std::size_t chunk, bool divide_own_block);

// Rank r starts with block r final; after it every rank holds every block. p - 1 rounds.
void allgather(Schedule& s, int rank, int size, std::size_t count, std::size_t chunk, int first_round = 0);

// reduce_scatter then allgather: 2(p - 1) rounds.
void allreduce(Schedule& s, int rank, int size, std::size_t count, std::size_t chunk, bool average);

// Pipelined chain from `root` through root + 1, root + 2, ...: each chunk is
// forwarded as soon as it arrives. For large broadcasts.
void broadcast(Schedule& s, int rank, int size, int root, std::size_t count, std::size_t chunk);

}  // namespace collex::ring
