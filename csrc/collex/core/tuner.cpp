#include "collex/core/tuner.h"

namespace collex {

const char* algo_name(Algo a) {
  switch (a) {
    case Algo::kAuto: return "auto";
    case Algo::kRing: return "ring";
    case Algo::kTree: return "tree";
  }
  return "?";
}

const char* collective_name(Collective c) {
  switch (c) {
    case Collective::kAllreduce: return "allreduce";
    case Collective::kBroadcast: return "broadcast";
    case Collective::kReduce: return "reduce";
    case Collective::kAllgather: return "allgather";
    case Collective::kReduceScatter: return "reduce_scatter";
    case Collective::kBarrier: return "barrier";
    case Collective::kSend: return "send";
    case Collective::kRecv: return "recv";
  }
  return "?";
}

bool algo_from_string(const std::string& s, Algo* out) {
  if (s == "auto")
    *out = Algo::kAuto;
  else if (s == "ring")
    *out = Algo::kRing;
  else if (s == "tree")
    *out = Algo::kTree;
  else
    return false;
  return true;
}

Algo Tuner::choose(Collective c, std::size_t bytes, int ranks, Algo requested, Algo forced) const {
  // reduce only has a tree; allgather and reduce_scatter only a ring.
  if (c == Collective::kReduce) return Algo::kTree;
  if (c == Collective::kAllgather || c == Collective::kReduceScatter) return Algo::kRing;
  if (requested != Algo::kAuto) return requested;
  if (forced != Algo::kAuto) return forced;
  switch (c) {
    case Collective::kAllreduce:
      // With two ranks both algorithms exchange the same halves; the ring pipelines better.
      return (ranks > 2 && bytes < allreduce_tree_below) ? Algo::kTree : Algo::kRing;
    case Collective::kBroadcast: return bytes < broadcast_tree_below ? Algo::kTree : Algo::kRing;
    default: return Algo::kRing;
  }
}

}  // namespace collex
