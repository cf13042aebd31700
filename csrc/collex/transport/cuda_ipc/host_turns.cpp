#include "collex/transport/cuda_ipc/host_turns.h"

#include <memory>
#include <string>

#include "collex/common/errors.h"
#include "collex/kernels/combine.h"
#include "collex/transport/cuda_ipc/host_lanes.h"
#include "collex/transport/cuda_ipc/lane_elements.h"
#include "collex/transport/cuda_ipc/turn_pieces.h"

namespace collex::ipc {
namespace {

// A turn's pieces, one after another, by one worker.
struct Worker {
  const Turn& turn;
  template <typename Tr, ReduceOp Op>
  void run() {
    for (int i = 0; i < turn.count; ++i) work_piece<Tr, Op>(turn.piece[i], 0, 1);
  }
};

void check(const Peers& peers, const Call& call, DType dtype, ReduceOp op, const char* who) {
  if (const char* why = invalid(peers, call)) throw InvalidArgument(std::string(who) + ": " + why);
  if (call.bytes % dtype_size(dtype) != 0) throw InvalidArgument(std::string(who) + ": bytes: not whole elements");
  const LaneElements elements = lane_elements(call.kind, dtype, op);
  check_supported(elements.dtype, elements.op, who);
}

void run_part(const Peers& peers, const Call& call, TurnPart which, std::uint64_t round, DType dtype, ReduceOp op) {
  const Turn turn = turn_part(peers, call, which, round);
  const LaneElements elements = turn_elements(call.kind, which, dtype, op);
  Worker worker{turn};
  kernels::elements::with_elements(elements.dtype, elements.op, worker);
}

}  // namespace

void run_host_turn(const Peers& peers, const Call& call, TurnPart which, std::uint64_t round, DType dtype,
                   ReduceOp op) {
  check(peers, call, dtype, op, "run_host_turn");
  run_part(peers, call, which, round, dtype, op);
}

void run_host_turns(Collective kind, const std::vector<const void*>& inputs, const std::vector<void*>& outputs,
                    std::size_t bytes, DType dtype, ReduceOp op, int root, std::size_t staging_bytes, bool direct,
                    bool reverse) {
  const std::size_t ranks = inputs.size();
  if (ranks < 1 || ranks > static_cast<std::size_t>(kMaxRanks) || outputs.size() != ranks) {
    throw InvalidArgument("run_host_turns: one input and one output per rank, 1 to " + std::to_string(kMaxRanks));
  }
  Peers peers;
  peers.ranks = static_cast<int>(ranks);
  peers.staging_bytes = staging_bytes / kVector * kVector;
  std::vector<std::unique_ptr<std::uint64_t[]>> staging;  // 16-byte aligned, as cudaMalloc's
  for (std::size_t r = 0; r < ranks; ++r) {
    staging.emplace_back(new std::uint64_t[peers.staging_bytes / sizeof(std::uint64_t) + 2]());
    peers.staging[r] = reinterpret_cast<char*>(staging.back().get());
  }
  std::vector<Peers> views(ranks, peers);
  std::vector<Call> calls(ranks);
  for (std::size_t r = 0; r < ranks; ++r) {
    views[r].rank = static_cast<int>(r);
    Call& c = calls[r];
    c.kind = kind;
    c.root = root;
    c.bytes = bytes;
    c.input = static_cast<const char*>(inputs[r]);
    c.output = static_cast<char*>(outputs[r]);
    c.direct = direct;
    for (std::size_t q = 0; q < ranks && direct; ++q) {
      c.inputs[q] = static_cast<const char*>(inputs[q]);
      c.outputs[q] = static_cast<char*>(outputs[q]);
    }
    check(views[r], c, dtype, op, "run_host_turns");
  }
  const std::uint64_t count = turn_rounds(peers, calls[0]);
  for (std::uint64_t round = 0; round < count; ++round) {
    for (TurnPart which : {TurnPart::kStage, TurnPart::kRead}) {
      for (std::size_t i = 0; i < ranks; ++i) {
        const std::size_t r = reverse ? ranks - 1 - i : i;
        run_part(views[r], calls[r], which, round, dtype, op);
      }
    }
  }
}

}  // namespace collex::ipc
