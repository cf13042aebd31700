// Which algorithm runs a collective. The tuner asks every candidate algorithm
// (algorithms/algorithm.h) for its offer on the call and runs the cheapest by
// its cost model; a per-call choice (algo=) wins over COLLEX_ALGO, which wins
// over the model, as long as that algorithm can run the call: one that
// declines falls back to the model, and COLLEX_DEBUG=1 prints why.
#pragma once

#include <array>
#include <cstddef>

#include "collex/algorithms/algorithm.h"

namespace collex {

class Tuner {
 public:
  explicit Tuner(int debug = 0) : debug_(debug) {}

  // `requested` is the per-call choice, `forced` COLLEX_ALGO's (kAuto: none).
  // Depends only on what every rank shares, so every rank chooses alike.
  const Algorithm& choose(const CollectiveCall& call, const Site& site, Algo requested, Algo forced);

  const CostModel& model() const { return model_; }

  // The model's parameters (core/tuner.cpp says where they come from).
  static CostModel measured_model();

 private:
  const Algorithm& decide(const CollectiveCall& call, const Site& site, Algo requested, Algo forced) const;

  CostModel model_ = measured_model();
  int debug_;
  // The last decision: calls repeat (a training step, a bench loop), and asking
  // every candidate costs more than comparing three fields.
  struct Last {
    Collective kind = Collective::kBarrier;
    std::size_t bytes = ~std::size_t{0};
    Algo requested = Algo::kAuto;
    bool segments = false;
    const Algorithm* chosen = nullptr;
  } last_;
};

}  // namespace collex
