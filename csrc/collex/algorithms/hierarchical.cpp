// Hierarchical all-reduce over several nodes, composed of plans on each node's
// window (WindowRunner) and a ring across nodes (MessageRunner):
//
// * up to kSlicesMinBytes, or on nodes of unequal size: reduce to each node's
//   leader through its window, ring all-reduce among the leaders, broadcast
//   back through the window. The leaders' ring fixes one order across nodes, so
//   every rank gets the same bits. Sums travel as sums; an average is divided
//   once, by the leaders.
// * larger, on nodes of equal size: reduce-scatter inside the node (local rank
//   i reduces block i), ring all-reduce of block i among local rank i of every
//   node (all blocks at once, on every rank's link), then all-gather inside the
//   node: every rank moves 1/L of the data across nodes instead of the leader
//   moving all of it.
#include <cstring>

#include "collex/algorithms/algorithm.h"
#include "collex/algorithms/message_runner.h"
#include "collex/algorithms/ring.h"
#include "collex/algorithms/window_runner.h"
#include "collex/transport/transport.h"

namespace collex {
namespace {

constexpr std::size_t kSlicesMinBytes = 64 * 1024;

// A ring all-reduce of `count` elements at `data` among the ranks of `t` (leaders or slices).
void ring_allreduce_across(Transport& t, const std::vector<int>* watch_ranks, const CollectiveCall& c, const Site& site,
                           char* data, std::size_t count, const char* algo) {
  MessageRunner& m = *site.messages;
  Schedule s;
  const std::size_t es = dtype_size(c.in.dtype);
  const std::size_t chunk = m.chunk_elements(count * es / static_cast<std::size_t>(t.size()), c.in.dtype, true);
  ring::allreduce(s, t.rank(), t.size(), count, chunk, c.op == ReduceOp::kAvg);
  // args() divides an average by every rank's count, not t's: the average is over all.
  ExecArgs a = m.args(data, c.in.dtype, pairwise_op(c.op), m.tag(c));
  // The watch knows the communicator's ranks, not the leaders' or slices' numbering.
  a.watch_ranks = watch_ranks;
  m.run(s, t, a, OpLabel{site.rank, collective_name(c.kind), c.seq, algo, c.in.dtype, c.in.bytes()});
}

bool use_slices(const CollectiveCall& c, const Site& site) { return site.slices && c.in.bytes() > kSlicesMinBytes; }

class Hierarchical final : public Algorithm {
 public:
  Algo id() const override { return Algo::kHier; }

  Offer offer(const CollectiveCall& c, const Site& site, const CostModel& model) const override {
    if (c.kind != Collective::kAllreduce) return Offer::decline("the hierarchical algorithm runs all-reduces only");
    if (c.segments) return Offer::decline("segmented all-reduces run on one node");
    if (!site.hier_everywhere)
      return Offer::decline("needs several nodes, each with a window that reads peers (or of one rank)");
    const double n = static_cast<double>(c.in.bytes()), nodes = site.nodes;
    const double across = use_slices(c, site) ? n / site.max_local_size : n;
    const double inside = site.max_local_size > 1 ? model.window.of(2, 2 * n) : 0;
    return Offer::at(inside + model.messages.of(2 * (nodes - 1), 2 * (nodes - 1) / nodes * across));
  }

  void run(const CollectiveCall& c, const Site& site) const override {
    if (use_slices(c, site)) return run_slices(c, site);
    const char* algo = "hier";
    note_label(site.messages->debug(),
               OpLabel{site.rank, collective_name(c.kind), c.seq, algo, c.in.dtype, c.in.bytes()});
    if (site.node) {
      site.node->reduce_to_leader(c, pairwise_op(c.op), algo);
    } else if (c.out.data != c.in.data && c.in.bytes() > 0) {
      std::memcpy(c.out.data, c.in.data, c.in.bytes());  // a node of one rank is its own leader
    }
    if (site.leaders)
      ring_allreduce_across(*site.leaders, site.leader_ranks, c, site, c.out.bytes_at(0), c.in.count, algo);
    if (site.node) site.node->broadcast_from_leader(c, algo);
  }

 private:
  static void run_slices(const CollectiveCall& c, const Site& site) {
    const char* algo = "hier-slices";
    note_label(site.messages->debug(),
               OpLabel{site.rank, collective_name(c.kind), c.seq, algo, c.in.dtype, c.in.bytes()});
    site.node->reduce_own_block(c, pairwise_op(c.op), algo);
    const Range mine = block_range(c.in.count, site.local_size, site.local_rank);
    ring_allreduce_across(*site.slices, site.slice_ranks, c, site, c.out.bytes_at(mine.offset), mine.count, algo);
    site.node->gather_blocks(c, algo);
  }
};

}  // namespace

const Algorithm& hierarchical_algorithm() {
  static const Hierarchical hierarchical;
  return hierarchical;
}

}  // namespace collex
