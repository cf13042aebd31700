// The one interface every algorithm has (ring.cpp, tree.cpp, barrier.cpp,
// direct_algorithm.cpp, hierarchical.cpp). Given a call and where it would run,
// an algorithm either declines, saying why, or offers to run it at a cost the
// tuner's model estimates; the tuner (core/tuner.h) asks every candidate and
// runs the cheapest. An algorithm reaches the ranks only through the Site: the
// message schedules it builds run on a Transport (MessageRunner), the direct
// ones on the node's Window (WindowRunner); it never learns which transport.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "collex/common/buffer.h"
#include "collex/common/call_print.h"
#include "collex/common/collective.h"
#include "collex/common/memory.h"
#include "collex/common/reduce_op.h"

namespace collex {

class Transport;
class MessageRunner;
class WindowRunner;

// One collective call, as the communicator numbered it (alike on every rank).
struct CollectiveCall {
  Collective kind = Collective::kAllreduce;
  Buffer in{};
  Buffer out{};
  ReduceOp op = ReduceOp::kSum;
  int root = 0;
  std::uint64_t seq = 0;
  const std::vector<Span>* segments = nullptr;  // allreduce_segments: where the data lies (in == out: null)
  const std::vector<Span>* home = nullptr;      // ... and where this rank's own lies, when elsewhere (direct.h)

  // The elements each rank's call names (of out for reduce-scatter, of x otherwise).
  std::size_t count() const { return kind == Collective::kReduceScatter ? out.count : in.count; }
};

// What this rank called, as its peers compare it (window) or hash it (tags).
CallPrint print_of(const CollectiveCall& call);
std::uint32_t print_hash(const CallPrint& print);
// "allreduce(count=8, float32, op=sum)": a call in a mismatch message.
std::string describe_call(const CallPrint& print);

// Where a call runs: the communicator's ranks and the ways to reach them. Every
// field an offer reads is alike on every rank (or on every rank of a node, for
// what only a node's ranks compare), so that all ranks choose the same algorithm.
struct Site {
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;
  int nodes = 1;           // nodes in the communicator
  int max_local_size = 1;  // ranks on the largest node
  Transport* world = nullptr;
  MessageRunner* messages = nullptr;
  WindowRunner* node = nullptr;  // this node's window, when its ranks share one
  // Across nodes: the node leaders (local rank 0; null elsewhere), and local rank
  // i of every node (null unless nodes are of equal size), numbered in the watch's terms.
  Transport* leaders = nullptr;
  Transport* slices = nullptr;
  const std::vector<int>* leader_ranks = nullptr;
  const std::vector<int>* slice_ranks = nullptr;
  bool hier_everywhere = false;          // every node can run the hierarchical path
  std::vector<char>* scratch = nullptr;  // partial results, reused across calls

  bool across_nodes() const { return local_size < size; }
};

// The tuner's model of moving data: `latency_us` per step (a message, or a
// synchronisation on the window) plus `us_per_byte` for each byte a rank moves
// on its busiest link. The parameters come from bench runs (core/tuner.cpp).
struct LinkCost {
  double latency_us = 0;
  double us_per_byte = 0;
  double of(double steps, double bytes) const { return steps * latency_us + bytes * us_per_byte; }
};

struct CostModel {
  LinkCost window;    // the node's shared-memory window
  LinkCost messages;  // MPI messages (inside a node or between nodes)
  // The tree broadcast's bytes against the chain's (1: it keeps up; bench runs fit it).
  double tree_broadcast_bytes = 1;
};

// An algorithm's answer: `declined` says why it cannot run the call (null: it can,
// at `cost_us`).
struct Offer {
  const char* declined = nullptr;
  double cost_us = 0;
  static Offer decline(const char* why) { return Offer{why, 0}; }
  static Offer at(double cost_us) { return Offer{nullptr, cost_us}; }
};

class Algorithm {
 public:
  virtual ~Algorithm() = default;
  virtual Algo id() const = 0;
  virtual Offer offer(const CollectiveCall& call, const Site& site, const CostModel& model) const = 0;
  // Runs a call it offered to run.
  virtual void run(const CollectiveCall& call, const Site& site) const = 0;
};

// The algorithms (one definition each, in the file of the same name).
const Algorithm& ring_algorithm();
const Algorithm& tree_algorithm();
const Algorithm& dissemination_algorithm();
const Algorithm& direct_algorithm();
const Algorithm& hierarchical_algorithm();

inline double log2_ranks(int size) { return size > 1 ? std::log2(static_cast<double>(size)) : 0.0; }

}  // namespace collex
