// Direct algorithms for the ranks of one node, written against a Window: every
// rank reads its peers' data itself instead of receiving messages.
//
// Small operations stage through the window's slots (one copy in, then every
// rank reads what it needs from its peers' slots); mid-size all-reduces,
// broadcasts and all-gathers stream through them in chunks. Large ones read peers' own
// buffers in one copy: a reduction is split into p blocks, rank b reduces block b
// from every rank's input (reduce-scatter), then the ranks fetch each other's
// reduced blocks (all-gather); a reduce's ranks write their blocks into the
// root's result instead (the root's own block larger when that result is
// ordinary memory, which the others write through the kernel). Each step ends
// at a marker every rank must reach.
//
// Reductions combine ranks left to right in rank order, whichever rank computes
// them and whichever path runs, so every rank gets the same bits, run after run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "collex/algorithms/op_label.h"
#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"
#include "collex/kernels/copy.h"
#include "collex/transport/window.h"

namespace collex::direct {

// The largest size whose broadcast may stream through the slots (all-gather
// blocks: a quarter of it). Beyond it the two copies are memory-bound and lose.
constexpr std::size_t kSlotsLimit = 16 * 1024 * 1024;
// Operations of up to this many bytes per rank stage whole (one copy in, one
// synchronisation); larger ones stream through the slots in chunks or read
// peers' buffers.
constexpr std::size_t kStagedBytes = 64 * 1024;
// Broadcasts always stage whole only up to this: the receivers' copy out of the
// root's slot reads what the root's core has just written, and on the
// project's 2-core Xeon reading the root's buffer in one copy (attach) beat the
// two copies from 32 KiB (2.6 against 3.9 us; 16 KiB: 2.2 against 2.0), where
// staged broadcasts of 32-64 KiB were slower than MPICH's. Larger ones are
// mid-size, their way decided while running (CopyWays); the slots' way stages
// them whole up to kStagedBytes, with the stores chosen for staged writes.
constexpr std::size_t kStagedBroadcastBytes = 16 * 1024;

struct Op {
  const void* in = nullptr;
  void* out = nullptr;
  std::size_t count = 0;  // elements: of x (all-reduce, reduce, broadcast, all-gather), of out (reduce-scatter)
  DType dtype = DType::kUInt8;
  ReduceOp op = ReduceOp::kSum;
  int root = 0;
  std::uint64_t epoch = 0;  // numbers the window's operations alike on every rank, from 1
  double timeout_s = 300;
  OpLabel label;                                // says which operation failed, in errors
  CallPrint print;                              // what this rank called, compared by its peers
  std::vector<char>* scratch;                   // grown as needed for pieces read from peers
  const std::vector<Span>* segments = nullptr;  // allreduce_segments: where peers read this rank's data
  const std::vector<Span>* home = nullptr;      // ... and where it lies (null: there), see allreduce_segments
  // Mid-size operations (see midsize_bytes) of up to this many bytes stream
  // through the slots (two copies, both in cache); larger ones read the source
  // where it lies (one copy that pins its pages). Which is faster depends on the
  // machine and the moment (the communicator times both); every rank of the
  // window must pass the same.
  std::size_t slots_limit = kSlotsLimit;
  // A staged operation writes its slot with streaming stores: the data then
  // waits in memory rather than in this core's cache. Where the cores pass data
  // between their caches slowly, peers read it there faster (a 32 KiB broadcast
  // took 3-5 us instead of 15-18 on the project's VM at such times); where they
  // pass it fast, slower. Decided while running (CopyWays).
  bool stream_stage = false;
  // How an operation that reads peers' buffers in place writes its results:
  // its reductions' and its copies' stores (kernels::Stores). By size, unless
  // decided while running (CopyWays: all-reduces from kMinChosenStores to
  // kMaxChosenStores) or forced (COLLEX_RESULT_WRITES). Ranks need not agree.
  kernels::Stores result_stores = kernels::Stores::kBySize;
};

// The collectives whose mid-size data can move either way.
enum class Streamable { kAllreduce, kBroadcast, kAllgather };

// The bytes such an operation compares with o.slots_limit (its whole data, or an
// all-gather's block), or 0 when its path does not depend on that limit: staged
// whole, or too large to stream. (A window that cannot read peers streams every
// mid-size operation, whatever the limit.)
std::size_t midsize_bytes(const Window& w, Streamable kind, const Op& o);

// The collectives whose staged operations may write their slots either way
// (Op::stream_stage).
enum class Staged { kAllreduce, kBroadcast, kReduce, kAllgather, kReduceScatter };
// Staged operations that write fewer bytes than this into a slot never stream:
// a few cache lines cost the same either way.
constexpr std::size_t kMinStreamedStage = 4 * 1024;

// The bytes such an operation writes into a rank's slot when it is staged whole
// and writes at least kMinStreamedStage; 0 otherwise.
std::size_t staged_write_bytes(const Window& w, Staged kind, const Op& o);

// The collectives whose operations that read peers' buffers in place (neither
// staged nor streamed through the slots) may write their results either way
// (Op::result_stores); kSegments is allreduce_segments. COLLEX_RESULT_WRITES
// may force a way on all of them; the all-reduces alone choose while running.
enum class Large { kAllreduce, kBroadcast, kReduce, kAllgather, kReduceScatter, kSegments };
// The sizes whose result stores are decided while running: smaller results
// stay in the cache (ordinary stores); larger ones stream by size (in the
// project's bench runs, letting operations of up to 64 MiB choose ordinary
// stores too made all-reduces, reduces and reduce-scatters of 64 MiB slower in
// the medians, 6.2 against 9.6 ms for an all-reduce).
constexpr std::size_t kMinChosenStores = 1024 * 1024;
constexpr std::size_t kMaxChosenStores = 16 * 1024 * 1024;

// The bytes of such an operation's data (an all-gather's whole result, a
// reduce-scatter's whole input) when it reads peers' buffers in place; 0 when
// it is staged or streams through the slots. After o.slots_limit is set.
std::size_t large_bytes(const Window& w, Large kind, const Op& o);

// Whether an operation staging `bytes` per rank can run here: small enough to
// stage, or the window can read peers' buffers. All-reduce, reduce and
// broadcast stage x, all-gather x, reduce-scatter the whole input.
bool supported(const Window& w, std::size_t staged_bytes);

void allreduce(Window& w, const Op& o);
// The two halves of the large all-reduce, for a hierarchical all-reduce that
// reduces each block across nodes in between. With B = block_range(count, p, rank):
// reduce_own_block writes block B of the reduction of every rank's `in` (op is
// applied pairwise; no average) into out; gather_blocks then copies every other
// rank's block of its `out` into this rank's `out`. Need can_read_peers().
void reduce_own_block(Window& w, const Op& o);
void gather_blocks(Window& w, const Op& o);
void broadcast(Window& w, const Op& o);
void reduce(Window& w, const Op& o);
void allgather(Window& w, const Op& o);       // out holds size * count elements
void reduce_scatter(Window& w, const Op& o);  // in holds size * count elements
void barrier(Window& w, const Op& o);

// An in-place all-reduce of data that lies in many pieces (o.segments, in order,
// o.count elements in all, cut alike on every rank), e.g. a bucket of separate
// gradient arrays: peers' pieces are read where they lie and results written
// back where they belong, so nothing is packed into a contiguous buffer first.
// Where some of this rank's data lies in memory its peers cannot read well
// (small arrays on private pages), o.home says where all of it lies (the same
// bytes, in order, cut its own way) and o.segments holds a staging area for
// those parts (a symmetric buffer): the parts that peers reduce are copied
// there first, and the results of this rank's block with them; this rank reads
// its own elements from, and writes every result to, o.home.
// Needs can_read_peers().
void allreduce_segments(Window& w, const Op& o);

}  // namespace collex::direct
