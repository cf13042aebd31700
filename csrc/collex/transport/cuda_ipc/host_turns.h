// The CPU stand-in of the turns (turns.h): a turn's kernel on host memory with
// the kernels' element arithmetic (turn_pieces.h). CI has no GPU; with it the
// Python path's processes run one rank's kernels each (run_host_turn), and a
// test runs every rank of a call in one process, turn by turn, as the events
// order them (run_host_turns).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"
#include "collex/transport/cuda_ipc/turns.h"

namespace collex::ipc {

// Part `which` of round `round` of `call`, rank peers.rank's, as its kernel
// would run it. Throws InvalidArgument for arguments outside the protocol's limits.
void run_host_turn(const Peers& peers, const Call& call, TurnPart which, std::uint64_t round, DType dtype, ReduceOp op);

// One collective over inputs.size() ranks (rank r's arrays inputs[r] and
// outputs[r], `bytes` as in Call), through staging buffers of `staging_bytes`
// it allocates, or in place (`direct`): every rank stages, then every rank
// reads, round by round. Within a part the ranks go in rank order, or the
// reverse (`reverse`): a schedule whose ranks' kernels of one part touched the
// same bytes would give different results.
void run_host_turns(Collective kind, const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
                    std::size_t bytes, DType dtype, ReduceOp op, int root, std::size_t staging_bytes, bool direct,
                    bool reverse);

}  // namespace collex::ipc
