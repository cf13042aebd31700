// Which algorithm runs a collective, from its size and the rank count. Defaults
// are a size threshold per collective; a per-call choice wins over COLLEX_ALGO,
// which wins over the table.
#pragma once

#include <cstddef>
#include <string>

namespace collex {

// kDirect: the node's ranks read each other's memory (needs a Window).
// kHier: direct inside each node, a ring across nodes (all-reduce on several nodes).
enum class Algo { kAuto = 0, kRing = 1, kTree = 2, kDirect = 3, kHier = 4 };

enum class Collective { kAllreduce, kBroadcast, kReduce, kAllgather, kReduceScatter, kBarrier, kSend, kRecv };

const char* algo_name(Algo a);
const char* collective_name(Collective c);
bool algo_from_string(const std::string& s, Algo* out);

struct Tuner {
  // Below these sizes (bytes) the tree's log(p) latency beats the ring's p steps.
  std::size_t allreduce_tree_below = 256 * 1024;
  std::size_t broadcast_tree_below = 1024 * 1024;

  // `requested` is the per-call choice, `forced` the COLLEX_ALGO setting;
  // `direct_ok` whether the direct algorithm can run this call (all ranks on one
  // node with a shared window), `hier_ok` whether the hierarchical one can (several
  // nodes, each with a window). A choice that cannot run declines to the table.
  Algo choose(Collective c, std::size_t bytes, int ranks, Algo requested, Algo forced, bool direct_ok,
              bool hier_ok = false) const;
};

}  // namespace collex
