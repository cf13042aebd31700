// Which algorithm runs a collective, from its size and the rank count. Defaults
// are a size threshold per collective; a per-call choice wins over COLLEX_ALGO,
// which wins over the table.
#pragma once

#include <cstddef>
#include <string>

namespace collex {

// kDirect: the node's ranks read each other's memory (needs a Window).
enum class Algo { kAuto = 0, kRing = 1, kTree = 2, kDirect = 3 };

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
  // node with a shared window). A choice that cannot run declines to the table.
  Algo choose(Collective c, std::size_t bytes, int ranks, Algo requested, Algo forced, bool direct_ok) const;
};

}  // namespace collex
