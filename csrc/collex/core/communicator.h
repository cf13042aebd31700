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

#include "collex/algorithms/algorithm.h"
#include "collex/common/buffer.h"
#include "collex/common/config.h"
#include "collex/common/failure.h"
#include "collex/common/memory.h"
#include "collex/common/reduce_op.h"
#include "collex/common/tags.h"
#include "collex/core/engine.h"
#include "collex/core/p2p.h"
#include "collex/core/tuner.h"

namespace collex {

class FailureWatch;
class MessageRunner;
class WindowRunner;
class Topology;  // the MPI objects, kept out of this header

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
  // The ranks meet in a barrier of split's own first (MPI_Comm_split has no
  // deadline): a rank that never calls split, or calls another collective (a
  // barrier too), makes the others raise instead of waiting for ever.
  std::shared_ptr<Communicator> split(int color, int key);

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return site_.local_rank; }
  int local_size() const { return site_.local_size; }
  // Names this rank's node: the rank of its local rank 0 (a color for split).
  int node_leader() const { return node_leader_; }
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
  // every step makes the list once. `home`, when not null, says where this
  // rank's elements lie when some segments are only a staging area for its
  // peers (direct.h, allreduce_segments); it holds as many bytes.
  std::shared_ptr<Work> allreduce_segments(std::shared_ptr<const std::vector<Span>> segments,
                                           std::shared_ptr<const std::vector<Span>> home, std::size_t count,
                                           DType dtype, ReduceOp op, bool async);
  // Makes peers' reads of `spans` cheaper, once: memory of this rank that the
  // node's direct algorithm will read in place step after step (a reducer's
  // buckets). On a shared window whose peers read ordinary memory, backs it
  // with huge pages (shm/huge_pages.h). Local; returns the bytes of `spans`
  // on huge pages afterwards (0 where no peer reads them through the window).
  std::size_t prepare_peer_reads(const std::vector<Span>& spans);
  // Per span of this rank's memory: its part on pages the node's peers map
  // (share_pages' regions, symmetric buffers), which the direct algorithms
  // read in place; empty where no peer reads this rank's memory through a
  // window. Ordered with queued operations. Local.
  std::vector<Span> shared_parts(const std::vector<Span>& spans);
  // Moves the whole pages of `array`, this rank's ordinary memory that callers
  // pass again and again, onto pages the node's peers map, so that the direct
  // algorithms read and write it in place (shm/shared_pages.h). Ordered with
  // queued operations (none of which may still write it meanwhile). Local;
  // returns the region's id for release_pages, or 0 where nothing moved: no
  // peer reads this rank's memory through a window, or the memory cannot be
  // moved (why, with COLLEX_DEBUG=1).
  std::uint64_t share_pages(Span array);
  // Forgets a region share_pages made, before its memory is freed or reused,
  // making its pages private again (shm::release says how `keep_contents` does).
  static void release_pages(std::uint64_t id, bool keep_contents);

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
  // A CUDA array's send or receive, its bytes moved by `device` (p2p.h's DeviceEnd).
  std::shared_ptr<P2pWork> send_device(Buffer buf, const MessageShape& shape, int dst, int tag,
                                       std::shared_ptr<DeviceEnd> device);
  std::shared_ptr<P2pWork> recv_device(Buffer buf, const MessageShape& shape, int src, int tag,
                                       std::shared_ptr<DeviceEnd> device);

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
  // One operation as queued: the call the algorithms see, what the caller asked
  // for, and the caller's work around it.
  struct Call {
    CollectiveCall call;
    Algo algo = Algo::kAuto;
    Hook before, after;                                       // on the engine, around the collective (may be empty)
    std::shared_ptr<const std::vector<Span>> segments, home;  // keep call.segments and call.home alive
  };

  std::shared_ptr<Work> submit(Call call, bool async);
  // A call that moves no data (barrier, split's first step): every rank arrives.
  std::shared_ptr<Work> meet(Collective kind, bool async);
  void check_p2p_args(Collective kind, int peer, int tag) const;
  void run(const Call& call);
  void run_collective(const Call& call);
  // Breaks the communicator on the engine's thread, after a failed collective
  // (its staging memory is left to transfers still in flight).
  void mark_broken(const std::string& reason);
  // Breaks it from any thread (a failed point-to-point operation).
  void set_broken(const std::string& reason);
  // Raises CommunicatorBroken naming `operation` when an earlier failure broke this communicator.
  void throw_if_broken(const char* operation) const;
  // Reports a failure this rank found in an operation to every other rank.
  void tell_others(const std::exception& e);

  Config config_;
  std::unique_ptr<Topology> topo_;
  std::unique_ptr<FailureWatch> watch_;  // failures and departures of the other ranks, over MPI
  std::unique_ptr<MessageRunner> messages_;
  std::unique_ptr<WindowRunner> node_;  // beside topo_->window, when there is one
  std::vector<char> scratch_;           // partial results of the tree's reduce and the ring's reduce-scatter
  Site site_;                           // what the algorithms see of all the above
  Engine engine_;
  Tuner tuner_;
  TagSpace tags_;
  Algo forced_algo_ = Algo::kAuto;
  int rank_ = 0;
  int node_leader_ = 0;
  int size_ = 1;
  std::uint64_t next_seq_ = 0;  // advanced at issue time, by the issuing thread
  int max_user_tag_ = 0;
  std::shared_ptr<PointToPoint> p2p_;
  CallPrint running_;                        // what this rank called for the operation the engine runs now
  std::uint64_t running_seq_ = kNoSequence;  // and its sequence number
  mutable std::mutex state_mutex_;
  std::atomic<bool> broken_{false};
  std::string broken_reason_;
  bool shut_down_ = false;
};

}  // namespace collex
