#include "collex/core/tuner.h"

#include <initializer_list>

namespace collex {

const char* algo_name(Algo a) {
  switch (a) {
    case Algo::kAuto: return "auto";
    case Algo::kRing: return "ring";
    case Algo::kTree: return "tree";
    case Algo::kDirect: return "direct";
    case Algo::kHier: return "hier";
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
  for (Algo a : {Algo::kAuto, Algo::kRing, Algo::kTree, Algo::kDirect, Algo::kHier}) {
    if (s == algo_name(a)) {
      *out = a;
      return true;
    }
  }
  return false;
}

Algo Tuner::choose(Collective c, std::size_t bytes, int ranks, Algo requested, Algo forced, bool direct_ok,
                   bool hier_ok) const {
  auto runnable = [&](Algo a) {
    if (a == Algo::kDirect) return direct_ok;
    if (a == Algo::kHier) return hier_ok && c == Collective::kAllreduce;
    // Over messages, reduce only has a tree; all-gather and reduce-scatter only a ring.
    if (c == Collective::kReduce) return a == Algo::kTree;
    if (c == Collective::kAllgather || c == Collective::kReduceScatter) return a == Algo::kRing;
    return a != Algo::kAuto;
  };
  if (runnable(requested)) return requested;
  if (runnable(forced)) return forced;
  // Ranks sharing a node read each other directly: one copy instead of a message
  // pipeline, and a single synchronisation for small messages.
  if (direct_ok) return Algo::kDirect;
  if (hier_ok && c == Collective::kAllreduce) return Algo::kHier;
  switch (c) {
    case Collective::kAllreduce:
      // With two ranks both algorithms exchange the same halves; the ring pipelines better.
      return (ranks > 2 && bytes < allreduce_tree_below) ? Algo::kTree : Algo::kRing;
    case Collective::kBroadcast: return bytes < broadcast_tree_below ? Algo::kTree : Algo::kRing;
    case Collective::kReduce: return Algo::kTree;
    default: return Algo::kRing;
  }
}

}  // namespace collex
