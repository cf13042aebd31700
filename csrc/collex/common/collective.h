// The names every room shares for what is called (the collective) and how it
// runs (the algorithm), so that algorithms, the tuner and the bindings speak of
// them alike without including one another.
#pragma once

#include <string>

namespace collex {

// kAllocate: the node's ranks meeting to make a symmetric buffer (collex.empty).
// kSplit: the ranks meeting before Communicator::split; a barrier under a name
// of its own, so that a rank that called barrier meanwhile does not pass for it.
enum class Collective {
  kAllreduce,
  kBroadcast,
  kReduce,
  kAllgather,
  kReduceScatter,
  kBarrier,
  kSend,
  kRecv,
  kAllocate,
  kSplit
};

// kDirect: the node's ranks read each other's memory (needs a Window).
// kHier: direct inside each node, a ring across nodes (all-reduce on several nodes).
// kDissemination: the barrier over messages; never asked for by name.
enum class Algo { kAuto = 0, kRing = 1, kTree = 2, kDirect = 3, kHier = 4, kDissemination = 5 };

const char* algo_name(Algo a);
const char* collective_name(Collective c);
// The algorithms a caller may ask for by name (algo=, COLLEX_ALGO), in the
// order messages and the Python layer list them.
inline constexpr Algo kNamedAlgos[] = {Algo::kAuto, Algo::kRing, Algo::kTree, Algo::kDirect, Algo::kHier};
// One of kNamedAlgos by its name.
bool algo_from_string(const std::string& s, Algo* out);

inline bool reduces(Collective k) {
  return k == Collective::kAllreduce || k == Collective::kReduce || k == Collective::kReduceScatter;
}
inline bool rooted(Collective k) { return k == Collective::kBroadcast || k == Collective::kReduce; }
// Calls that move no data: every rank only arrives.
inline bool meets_only(Collective k) {
  return k == Collective::kBarrier || k == Collective::kSplit || k == Collective::kAllocate;
}

}  // namespace collex
