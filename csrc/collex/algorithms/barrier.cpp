#include "collex/algorithms/barrier.h"

#include <cmath>

#include "collex/algorithms/algorithm.h"
#include "collex/algorithms/message_runner.h"

namespace collex::barrier {

void dissemination(Schedule& s, int rank, int size) {
  int round = 0;
  for (int dist = 1; dist < size; dist *= 2, ++round) {
    s.send((rank + dist) % size, 0, 0, round, round & 3);
    s.recv_copy((rank - dist + size) % size, 0, 0, round, round & 3);
  }
  s.rounds = round;
}

}  // namespace collex::barrier

// ---- the dissemination barrier as an algorithm, over the communicator's transport ----

namespace collex {
namespace {

class Dissemination final : public Algorithm {
 public:
  Algo id() const override { return Algo::kDissemination; }

  Offer offer(const CollectiveCall& c, const Site& site, const CostModel& model) const override {
    if (!meets_only(c.kind)) return Offer::decline("dissemination runs barriers only");
    return Offer::at(model.messages.of(std::ceil(log2_ranks(site.size)), 0));
  }

  void run(const CollectiveCall& c, const Site& site) const override {
    static char nothing = 0;
    Schedule s;
    barrier::dissemination(s, site.rank, site.size);
    site.messages->run_call(s, *site.world, c, &nothing, nullptr, "dissemination");
  }
};

}  // namespace

const Algorithm& dissemination_algorithm() {
  static const Dissemination dissemination;
  return dissemination;
}

}  // namespace collex
