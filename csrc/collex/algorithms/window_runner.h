// Runs the direct algorithms (direct.h) on one node's shared-memory window and
// keeps what they share from call to call: the window's operation count (every
// operation is numbered alike on every rank of the node), the buffers pieces
// of peers' data are read into, and the ways mid-size copies move and staged
// operations write (CopyWays, with the timing exchange that keeps the node's
// ranks on one way). Made with
// the window, one per communicator, used on the engine's thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "collex/algorithms/algorithm.h"
#include "collex/algorithms/copy_ways.h"
#include "collex/algorithms/direct.h"

namespace collex {

class Window;

class WindowRunner {
 public:
  struct Settings {
    int rank = 0;  // in the communicator, for labels
    double timeout_s = 300;
    int debug = 0;
    // COLLEX_MIDSIZE_COPY: "auto" (timed while running), "slots" or "attach".
    std::string midsize_copy = "auto";
    // COLLEX_STAGE_WRITES: "auto" (timed while running), "ordinary" or "streaming" stores.
    std::string stage_writes = "auto";
    // COLLEX_RESULT_WRITES: "auto" (all-reduces of 1-16 MiB timed while
    // running, the rest by size), "size" (by size), "ordinary" or "streaming"
    // stores (every operation that reads in place).
    std::string result_writes = "auto";
  };
  WindowRunner(Window& window, const Settings& settings);

  Window& window() { return window_; }
  // Whether an operation staging `bytes` per rank can run on this window.
  bool supports(std::size_t staged_bytes) const;
  // How mid-size operations move now, per size class (CopyWays::describe).
  std::string copy_ways() const { return copy_ways_.describe(); }

  // The direct algorithm: `call` among the window's ranks (every collective, and
  // segmented all-reduces), labelled `algo`.
  void run(const CollectiveCall& call, const char* algo);

  // The node's halves of a hierarchical all-reduce, with `op` applied pairwise:
  // reduce every rank's input to local rank 0's out; broadcast local rank 0's
  // out; or, for slices, reduce block i into local rank i's out, then gather
  // every rank's block of out (direct::reduce_own_block / gather_blocks).
  void reduce_to_leader(const CollectiveCall& call, ReduceOp op, const char* algo);
  void broadcast_from_leader(const CollectiveCall& call, const char* algo);
  void reduce_own_block(const CollectiveCall& call, ReduceOp op, const char* algo);
  void gather_blocks(const CollectiveCall& call, const char* algo);

 private:
  // The window operation for a call (buffers, dtype, root, label); the epoch is set by begin().
  direct::Op op_for(const CollectiveCall& call, const char* algo, ReduceOp op);
  // Numbers the next window operation and announces what this rank called.
  void begin(direct::Op& o);
  // Runs an all-reduce (segmented too, o.segments), broadcast, reduce,
  // all-gather or reduce-scatter, taking and timing the ways copy_ways_ picks:
  // how staged or mid-size data moves, and how an all-reduce that reads peers
  // in place writes its results.
  void run_picked(Collective kind, direct::Op& o);
  // For an operation that reads peers in place: sets o.result_stores as
  // COLLEX_RESULT_WRITES says, or as copy_ways_ picks (then *pick and *bytes
  // are what record() needs).
  void pick_result_stores(direct::Large kind, direct::Op& o, CopyWays::Pick* pick, std::size_t* bytes);
  // After the call that ends a timing window: the ranks exchange their times and decide.
  void settle_copy_way(const CopyWays::Pick& pick, const OpLabel& call);

  Window& window_;
  Settings settings_;
  std::uint64_t epoch_ = 0;   // window operations so far, alike on every rank
  std::vector<char> pieces_;  // pieces read from peers
  CopyWays copy_ways_;
};

}  // namespace collex
