// A group of ranks and everything collex keeps for it: a private duplicate of the
// user's MPI communicator, the transport, the engine, the tuner, the sequence
// number that tags its operations, and whether a failure has broken it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collex/algorithms/direct.h"
#include "collex/algorithms/executor.h"
#include "collex/common/buffer.h"
#include "collex/common/config.h"
#include "collex/common/failure.h"
#include "collex/common/reduce_op.h"
#include "collex/core/copy_ways.h"
#include "collex/core/engine.h"
#include "collex/core/p2p.h"
#include "collex/core/tuner.h"
#include "collex/transport/window.h"

namespace collex {

class Transport;
class Window;
class SymmetricMemory;
class ShmWindow;
class FailureWatch;
struct MpiHandles;  // the MPI objects, kept out of this header

class Communicator : public std::enable_shared_from_this<Communicator> {
 public:
  // `fortran_handle` is MPI_Comm_c2f of the user's communicator (mpi4py's
  // comm.py2f()), which names a communicator portably across MPI libraries.
  // Collective over that communicator: it is duplicated.
  Communicator(long fortran_handle, double timeout_s);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // Collective: ranks passing the same color form a new communicator, ordered by key.
  std::shared_ptr<Communicator> split(int color, int key);

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const Config& config() const { return config_; }
  bool broken() const;
  std::string broken_reason() const;

  // Each returns a handle when `async`, else null after the operation completed.
  // In place when in.data == out.data. Arguments are checked by the Python layer;
  // violations found here raise InvalidArgument.
  std::shared_ptr<Work> allreduce(Buffer in, Buffer out, ReduceOp op, Algo algo, bool async);
  std::shared_ptr<Work> broadcast(Buffer buf, int root, Algo algo, bool async);

  // Whether allreduce_segments can run: every rank on one node, reading its
  // peers' memory, and no algorithm other than direct forced.
  bool can_reduce_segments() const;
  // An in-place all-reduce of `count` elements that lie in the pieces
  // `segments` of this rank's memory (in order; cut alike on every rank), read
  // and written where they lie: a fusion bucket without packing.
  // The segments are shared, not copied: a caller that reduces the same pieces
  // every step makes the list once.
  std::shared_ptr<Work> allreduce_segments(std::shared_ptr<const std::vector<Span>> segments, std::size_t count,
                                           DType dtype, ReduceOp op, bool async);

  // An all-reduce with the caller's work around it, run by the engine in issue
  // order: `before` just before the reduction (packing a fusion buffer), `after`
  // just after (unpacking), so neither holds up the issuing thread. Either may
  // be empty. A hook that throws breaks the communicator (peers are left waiting).
  using Hook = std::function<void()>;
  std::shared_ptr<Work> allreduce_with(Buffer in, Buffer out, ReduceOp op, Hook before, Hook after, bool async,
                                       Algo algo = Algo::kAuto);
  std::shared_ptr<Work> reduce(Buffer in, Buffer out, ReduceOp op, int root, bool async);
  std::shared_ptr<Work> allgather(Buffer in, Buffer out, bool async);
  std::shared_ptr<Work> reduce_scatter(Buffer in, Buffer out, ReduceOp op, bool async);
  std::shared_ptr<Work> barrier(bool async);
  // Point-to-point (core/p2p.h): posted at once, beside the queued collectives;
  // the caller waits on the handle. `shape` is what the receiver compares.
  std::shared_ptr<P2pWork> send(Buffer buf, const MessageShape& shape, int dst, int tag);
  std::shared_ptr<P2pWork> recv(Buffer buf, const MessageShape& shape, int src, int tag);

  // The largest user tag send/recv accept.
  int max_user_tag() const;

  // The name of the window the direct algorithms use ("shm"), or "" when there is none.
  const char* window_name() const;
  // How mid-size all-reduces, broadcasts and all-gathers move now, per size
  // class (CopyWays::describe), after queued operations; "" without a window.
  std::string copy_ways();

  // Collective: `bytes` of this rank's own in memory every rank reads in place
  // (null when the ranks have no shared window). Ordered with queued operations.
  std::shared_ptr<SymmetricMemory> allocate_symmetric(std::size_t bytes);

  // Finishes queued operations, tells the peers this rank left (`why`, the text
  // their errors carry if they still wait for it; empty: finalize or the end of
  // the program) and releases the MPI objects. Idempotent.
  void shutdown(const std::string& why = "");

 private:
  struct Call;  // one operation's description, for schedules, tags and messages

  std::shared_ptr<Work> submit(Call call, bool async);
  void check_p2p_args(Collective kind, int peer, int tag) const;
  void run(const Call& call);
  void run_collective(const Call& call);
  bool direct_ok(const Call& call) const;
  bool hier_ok(const Call& call) const;
  void run_direct(const Call& call);
  void run_hierarchical(const Call& call);
  void run_hierarchical_slices(const Call& call);
  // Numbers the next window operation (o.epoch) and announces o.print, this rank's call.
  void begin_window_op(direct::Op& o);
  // A window operation's settings that every call shares (timeout, buffers, slots limit).
  direct::Op window_base();
  // The window operation for a call (buffers, dtype, root, label), with `op`; the caller sets the epoch.
  direct::Op window_op(const Call& call, const char* algo, ReduceOp op);
  // The pipelining chunk (elements) for schedules moving blocks of `block_bytes`:
  // COLLEX_CHUNK_BYTES, or larger between nodes when that is not set.
  std::size_t chunk_elements(std::size_t block_bytes, DType dtype, bool across_nodes) const;
  // A ring all-reduce of `count` elements at `data` among the ranks of `t` (leaders or slices).
  void ring_allreduce_across(Transport& t, const Call& call, char* data, std::size_t count, const char* algo);
  // Fixes the way of mid-size copies where COLLEX_MIDSIZE_COPY or the window says.
  void set_up_copy_ways();
  // Runs a window operation whose mid-size data may move either way (o without
  // its epoch), taking and timing the way copy_ways_ picks.
  void run_streamable(direct::Streamable kind, direct::Op& o);
  // After the call that ends a window (labelled `call`): the ranks exchange their times and decide.
  void settle_copy_way(const CopyWays::Pick& pick, const OpLabel& call);
  void check_fingerprints(const Call& call);
  // Breaks the communicator on the engine's thread, after a failed collective
  // (its staging memory is left to transfers still in flight).
  void mark_broken(const std::string& reason);
  // Breaks it from any thread (a failed point-to-point operation).
  void set_broken(const std::string& reason);
  // Raises CommunicatorBroken naming `operation` when an earlier failure broke this communicator.
  void throw_if_broken(const char* operation) const;
  // The tag of a collective's messages: sequence number, hash of the call, channel.
  std::uint32_t collective_tag(std::uint64_t seq, int channel_block, std::uint32_t print_hash) const;
  // What this rank called, as its peers compare it (window) or hash it (tags).
  static CallPrint print_of(const Call& call);
  std::uint32_t print_hash(const Call& call) const;
  // Reports a failure this rank found in an operation to every other rank.
  void tell_others(const std::exception& e);
  ExecArgs exec_args(void* data, DType dtype, ReduceOp op, std::uint32_t tag_base) const;

  std::unique_ptr<MpiHandles> mpi_;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<FailureWatch> watch_;  // failures and departures of the other ranks, over MPI
  std::unique_ptr<ShmWindow> window_;    // this rank's node, when it has several ranks
  std::unique_ptr<Transport> leaders_;   // node leaders (local rank 0) across nodes
  std::unique_ptr<Transport> slices_;    // local rank i of every node, when nodes are of equal size
  int leader_rank_ = -1;                 // this rank among the leaders, or -1
  std::vector<int> leader_ranks_;        // each leader's rank in this communicator
  std::vector<int> slice_ranks_;         // each slice member's rank in this communicator
  bool hier_everywhere_ = false;         // every node can run the hierarchical path
  std::uint64_t window_epoch_ = 0;       // direct operations so far, alike on every rank
  std::vector<char> pieces_;             // direct algorithms' read buffers
  CopyWays copy_ways_;                   // how mid-size window operations move
  Engine engine_;
  Tuner tuner_;
  Config config_;
  Algo forced_algo_ = Algo::kAuto;
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  std::uint64_t next_seq_ = 0;  // advanced at issue time, by the issuing thread
  std::uint32_t seq_mask_ = 0;
  int hash_bits_ = 0;
  std::uint32_t op_mask_ = 0;
  std::uint32_t p2p_tag_base_ = 0;
  int max_user_tag_ = 0;
  std::shared_ptr<PointToPoint> p2p_;
  Staging staging_;
  CallPrint running_;                        // what this rank called for the operation the engine runs now
  std::uint64_t running_seq_ = kNoSequence;  // and its sequence number
  std::vector<char> scratch_;
  mutable std::mutex state_mutex_;
  std::atomic<bool> broken_{false};
  std::string broken_reason_;
  bool shut_down_ = false;
};

}  // namespace collex
