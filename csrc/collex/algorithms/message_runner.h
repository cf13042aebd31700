// Runs the message schedules of one communicator's algorithms (ring, tree,
// dissemination, and the across-node part of the hierarchical one) on a
// Transport, with what every execution shares: the deadline, the tag layout
// with the call's hash, the watch that hears of failed peers, what this rank
// called, the staging memory, and the pipelining chunk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "collex/algorithms/algorithm.h"
#include "collex/algorithms/executor.h"
#include "collex/algorithms/op_label.h"
#include "collex/algorithms/schedule.h"
#include "collex/common/tags.h"

namespace collex {

class MessageRunner {
 public:
  struct Settings {
    int rank = 0, size = 1;
    double timeout_s = 300, warn_after_s = 60;
    std::size_t chunk_bytes = 0;   // COLLEX_CHUNK_BYTES or its default
    bool chunk_bytes_set = false;  // set by the user: also between nodes
    int debug = 0;
  };
  // `running`: what this rank called for the operation under way (told to peers that wait long).
  MessageRunner(const Settings& settings, const TagSpace& tags, PeerWatch* watch, const CallPrint* running)
      : settings_(settings), tags_(tags), watch_(watch), running_(running) {}

  // What every execution shares: the average divides by the whole communicator's
  // size, and every wait has the configured deadline.
  ExecArgs args(void* data, DType dtype, ReduceOp op, std::uint32_t tag_base) const;
  // The base tag of a call's messages on `channel`, with the call's hash.
  std::uint32_t tag(const CollectiveCall& call, int channel = 0) const;
  const TagSpace& tags() const { return tags_; }

  // The pipelining chunk (elements) for schedules moving blocks of `block_bytes`:
  // COLLEX_CHUNK_BYTES, or larger between nodes when that is not set.
  std::size_t chunk_elements(std::size_t block_bytes, DType dtype, bool across_nodes) const;
  // The chunk for a call's schedule over all `site.size` ranks.
  std::size_t chunk_for(const CollectiveCall& call, const Site& site) const;

  // Runs `schedule` on `transport`: data at `data`, first touches read from
  // `input` (null: data), this rank's label `algo`; printed under COLLEX_DEBUG.
  void run_call(const Schedule& schedule, Transport& transport, const CollectiveCall& call, void* data,
                const void* input, const char* algo);
  // The same with the arguments made by the caller.
  void run(const Schedule& schedule, Transport& transport, const ExecArgs& args, const OpLabel& label);

  // After a failure: a receive the transport could not cancel may still land in
  // the staging memory, so it is left to it rather than freed under its feet.
  void abandon_staging();

  int debug() const { return settings_.debug; }

 private:
  Settings settings_;
  TagSpace tags_;
  PeerWatch* watch_;
  const CallPrint* running_;
  Staging staging_;
};

}  // namespace collex
