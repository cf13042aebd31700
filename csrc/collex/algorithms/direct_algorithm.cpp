// The direct algorithms as one algorithm: when every rank of the communicator
// shares the node's window, each collective runs on it (direct.h), where ranks
// read each other's memory: one copy instead of a message pipeline, and a
// single synchronisation for small messages.
#include "collex/algorithms/algorithm.h"
#include "collex/algorithms/window_runner.h"

namespace collex {
namespace {

class Direct final : public Algorithm {
 public:
  Algo id() const override { return Algo::kDirect; }

  Offer offer(const CollectiveCall& c, const Site& site, const CostModel& model) const override {
    if (!site.node) return Offer::decline("the ranks share no window");
    if (site.local_size != site.size) return Offer::decline("the ranks are not all on one node");
    if (!site.node->supports(c.in.bytes()))
      return Offer::decline("too large to stage, and the window cannot read peers' memory");
    const double p = site.size, n = static_cast<double>(c.in.bytes());
    switch (c.kind) {
      // Reductions: every rank reduces its block from all inputs, then fetches the others' blocks.
      case Collective::kAllreduce: return Offer::at(model.window.of(2, 2 * (p - 1) / p * n));
      case Collective::kReduce: return Offer::at(model.window.of(2, n));
      case Collective::kReduceScatter: return Offer::at(model.window.of(1, (p - 1) / p * n));
      // Copies: every rank reads what it lacks.
      case Collective::kBroadcast: return Offer::at(model.window.of(1, n));
      case Collective::kAllgather: return Offer::at(model.window.of(1, (p - 1) * n));
      case Collective::kBarrier:
      case Collective::kSplit: return Offer::at(model.window.of(1, 0));
      default: return Offer::decline("not a collective");
    }
  }

  void run(const CollectiveCall& c, const Site& site) const override { site.node->run(c, "direct"); }
};

}  // namespace

const Algorithm& direct_algorithm() {
  static const Direct direct;
  return direct;
}

}  // namespace collex
