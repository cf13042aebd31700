#include "collex/core/tuner.h"

#include <cstdio>
#include <string>

#include "collex/common/errors.h"

namespace collex {
namespace {

// Equal costs go to the earlier: the hierarchical path over nodes of one rank
// each is the leaders' ring, and stays the hierarchical one.
const std::array<const Algorithm*, 5>& candidates() {
  static const std::array<const Algorithm*, 5> all = {&direct_algorithm(), &hierarchical_algorithm(), &ring_algorithm(),
                                                      &tree_algorithm(), &dissemination_algorithm()};
  return all;
}

const Algorithm* named(Algo a) {
  for (const Algorithm* c : candidates())
    if (c->id() == a) return c;
  return nullptr;
}

}  // namespace

// From bench runs on the project's 2-core VM (bench/README.md, "Where the
// thresholds come from"):
// * messages: 4 ranks over MPI (bench/results/history/tuner-mpi-4ranks.json):
//   all-reduces of 1-4 KiB took 26-31 us by the ring's 6 steps and 16-17 us by
//   the tree's 4, about 4.5 us a step; the ring's 256 KiB all-reduce 130 us, of
//   which 1.5 x 256 KiB moved per rank: about 0.26 ns a byte. The model then
//   puts the all-reduce crossover at 4 ranks at 69 KB (measured: the tree ahead
//   at 64 KiB, the ring at 256 KiB). The tree's broadcast kept up with the
//   chain's through 4 MiB there and lost at 16 MiB: a factor of 1.002 on its
//   bytes puts the crossover at 4 ranks near 8 MiB.
// * window: 8 B all-reduces in about 0.8 us on 2 ranks (two synchronisations),
//   64 MiB at about 14 GB/s of bus bandwidth.
CostModel Tuner::measured_model() {
  CostModel m;
  m.messages = LinkCost{4.5, 0.26e-3};
  m.window = LinkCost{0.4, 0.07e-3};
  m.tree_broadcast_bytes = 1.002;
  return m;
}

const Algorithm& Tuner::choose(const CollectiveCall& call, const Site& site, Algo requested, Algo forced) {
  const std::size_t bytes = call.in.bytes();
  const bool segments = call.segments != nullptr;
  if (last_.chosen && last_.kind == call.kind && last_.bytes == bytes && last_.requested == requested &&
      last_.segments == segments)
    return *last_.chosen;
  const Algorithm& chosen = decide(call, site, requested, forced);
  last_ = Last{call.kind, bytes, requested, segments, &chosen};
  return chosen;
}

const Algorithm& Tuner::decide(const CollectiveCall& call, const Site& site, Algo requested, Algo forced) const {
  for (Algo wanted : {requested, forced}) {
    const Algorithm* a = named(wanted);
    if (!a) continue;
    const Offer offer = a->offer(call, site, model_);
    if (!offer.declined) return *a;
    if (debug_ >= 1)
      std::fprintf(stderr, "collex: [rank %d] %s of %zu B: algo=%s declines (%s); the tuner chooses\n", site.rank,
                   collective_name(call.kind), call.in.bytes(), algo_name(wanted), offer.declined);
  }
  const Algorithm* best = nullptr;
  double best_cost = 0;
  for (const Algorithm* a : candidates()) {
    const Offer offer = a->offer(call, site, model_);
    if (offer.declined) {
      if (debug_ >= 2)
        std::fprintf(stderr, "collex: [rank %d] %s: %s declines: %s\n", site.rank, collective_name(call.kind),
                     algo_name(a->id()), offer.declined);
      continue;
    }
    if (debug_ >= 2)
      std::fprintf(stderr, "collex: [rank %d] %s of %zu B: %s costs %.1f us\n", site.rank, collective_name(call.kind),
                   call.in.bytes(), algo_name(a->id()), offer.cost_us);
    if (!best || offer.cost_us < best_cost) {
      best = a;
      best_cost = offer.cost_us;
    }
  }
  // Over messages some algorithm runs every collective; only a segmented
  // all-reduce needs the window, which its entry point checked.
  if (!best) throw CollexError(std::string("collex: internal error: no algorithm runs ") + collective_name(call.kind));
  return *best;
}

}  // namespace collex
