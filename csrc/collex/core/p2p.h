// Point-to-point messages of one communicator that never deliver into a buffer
// that does not fit them, and never leave a sender waiting on a receiver that
// refused its message.
//
// Every message starts with a header describing what the sender passed (dtype,
// element count, shape). The receiver compares it with its own buffer before a
// byte of payload lands there and answers every message with a verdict: on a
// mismatch it raises CollectiveMismatch, tells the sender what its buffer is,
// and drains the payload into scratch memory, so the pair's later messages still
// match. A send completes when its verdict has come (MPI_Ssend's rule: a program
// that is correct under MPI's rules for buffering cannot deadlock on it), so
// the sender raises the refusal in the send itself.
//
// Small payloads travel inside the header's message (one MPI message, copied out
// of a staging buffer); larger ones follow it as separate messages received
// straight into the caller's buffer. Sends to this rank itself are copied into a
// local queue, so a blocking send to self before the receive works too.
//
// Operations are posted at once (nothing waits behind the communicator's queued
// collectives), and every wait advances all of the communicator's pending
// point-to-point operations: posting order across ranks cannot deadlock.
//
// A device message (a CUDA array between ranks of one node, DeviceEnd) never
// passes its bytes through here: its message carries, in place of the payload,
// where the receiver can read the array, and the receiver's copy is queued by
// its DeviceEnd by whichever wait next makes progress once the message has
// matched, before the verdict goes back. So device messages keep every rule above.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collex/common/buffer.h"
#include "collex/common/failure.h"

namespace collex {

// What a sender's or receiver's array looks like: dtype and count from the
// Buffer, and its shape when it has one of at most kMaxDims axes.
struct MessageShape {
  static constexpr int kMaxDims = 8;
  int ndim = -1;  // -1: no shape known (only the element count is compared)
  std::int64_t dims[kMaxDims] = {};
};

class PointToPoint;
struct P2pOp;

// The device side of a send or receive of a CUDA array (python/collex/cuda/p2p.py
// fills it in). The sender's message carries `descriptor` (where a peer can open
// the array, and the IPC event after its producers) in place of the payload; the
// receiver, when the message matches and fits, calls `deliver`, which queues the
// copy on the receiving array's stream and returns what the sender needs to order
// its own stream after that copy; the verdict carries it back into the sender's
// `reply`. A deliver that throws refuses the message, with its reason on both
// sides. A device message never lands in a host buffer, nor a host message in a
// device buffer: both are refused as a mismatch.
struct DeviceEnd {
  std::string descriptor;                                             // send
  std::function<std::string(const std::string& descriptor)> deliver;  // recv; may run on any thread that waits
  std::string reply;  // send: the receiver's answer, once the send has completed
  // recv, filled in by the core: the matched message's descriptor and serial number.
  std::string matched;
  std::uint64_t serial = 0;
};
// How much of a reply (or of a refusal's reason) a verdict carries.
constexpr std::size_t kDeviceReplyBytes = 256;

// The handle of a posted send or receive. wait() advances every pending
// operation of the communicator while it waits for this one.
class P2pWork {
 public:
  P2pWork(std::shared_ptr<PointToPoint> owner, std::shared_ptr<P2pOp> op)
      : owner_(std::move(owner)), op_(std::move(op)) {}
  bool done();
  void wait();
  // A device send's reply (DeviceEnd::reply), once done; empty otherwise.
  std::string device_reply() const;

 private:
  std::shared_ptr<PointToPoint> owner_;
  std::shared_ptr<P2pOp> op_;
};

class PointToPoint : public std::enable_shared_from_this<PointToPoint> {
 public:
  // Tags [tag_base, tag_base + 3 * 2^20) of `comm` are this object's. `on_failure`
  // is told of a timeout or a transport failure (the communicator breaks).
  // Waits that last tell stderr after `warn_after_s`, and ask `watch` (which
  // outlives this object's waits; may be null) whether their peer is gone.
  static constexpr int kUserTagBits = 20;
  PointToPoint(MPI_Comm comm, int rank, std::uint32_t tag_base, double timeout_s, double warn_after_s, PeerWatch* watch,
               std::function<void(const std::string&)> on_failure);
  ~PointToPoint();

  std::shared_ptr<P2pWork> send(const Buffer& buf, const MessageShape& shape, int dst, int tag);
  std::shared_ptr<P2pWork> recv(const Buffer& buf, const MessageShape& shape, int src, int tag);
  // A device message's (DeviceEnd, not null): `buf` says what the array is, and is never read.
  std::shared_ptr<P2pWork> send_device(const Buffer& buf, const MessageShape& shape, int dst, int tag,
                                       std::shared_ptr<DeviceEnd> device);
  std::shared_ptr<P2pWork> recv_device(const Buffer& buf, const MessageShape& shape, int src, int tag,
                                       std::shared_ptr<DeviceEnd> device);

  // Gives up on everything pending and forgets on_failure (the communicator is
  // being shut down; a handle Python still holds may outlive it).
  void abandon_all();

 private:
  friend class P2pWork;
  struct Header;
  struct Verdict;
  struct VerdictIn;

  std::shared_ptr<P2pWork> post_send(const std::shared_ptr<P2pOp>& op);
  std::shared_ptr<P2pWork> post_recv(const std::shared_ptr<P2pOp>& op);
  // What `op`'s array is (dtype, count, shape), as a message header carries it.
  static Header header_of(const P2pOp& op);
  bool done(P2pOp& op);
  void wait(P2pOp& op);
  // Advances every pending operation; the caller holds mutex_.
  void progress();
  void progress_send(P2pOp& op);
  void progress_recv(P2pOp& op, bool earlier_waiting);
  bool match_self(P2pOp& op);
  void accept_header(P2pOp& op, const Header& h, const char* inline_payload, std::size_t inline_bytes);
  // Device receives whose messages matched (Stage::kDeliver), claimed by this
  // caller (which holds mutex_) to run their delivers without it: a deliver runs
  // Python, whose garbage collector may ask any Work whether it is done.
  std::vector<std::shared_ptr<P2pOp>> claim_deliveries();
  // Runs them (the caller does not hold mutex_), then answers their senders.
  void deliver(const std::vector<std::shared_ptr<P2pOp>>& ops);
  void refuse(P2pOp& op, const Header& h);
  void poll_verdicts();
  void post_verdict_receive();
  // `kind`: p2p_detail::VerdictKind; `reply`: a device receive's (or its refusal's reason).
  void answer(P2pOp& op, const Header& h, int kind, const std::string& reply = "");
  void finish(P2pOp& op, std::exception_ptr error);
  void fail(P2pOp& op, const std::string& message, bool timeout);
  void fail(P2pOp& op, std::exception_ptr error, const std::string& message);
  // Drops finished operations from pending_ (after a wait failed one).
  void forget_finished();
  std::vector<char> take_staging();

  MPI_Comm comm_;
  int rank_;
  std::uint32_t header_tag_base_, payload_tag_base_, verdict_tag_;
  double timeout_s_;
  double warn_after_s_;
  PeerWatch* watch_;
  std::function<void(const std::string&)> on_failure_;

  std::mutex mutex_;
  std::deque<std::shared_ptr<P2pOp>> pending_;  // in posting order
  // Per (peer, tag): the number of the next message sent / received, so that a
  // refusal names the send it is about.
  std::map<std::pair<int, int>, std::uint64_t> sent_serial_;
  // Messages sent to this rank itself, per tag, in order: header and payload.
  std::map<int, std::deque<std::pair<std::vector<char>, std::uint64_t>>> to_self_;
  struct InFlight {  // verdicts being sent and refused payloads being drained
    MPI_Request request;
    std::shared_ptr<std::vector<char>> memory;
  };
  std::vector<InFlight> in_flight_;
  std::unique_ptr<VerdictIn> verdict_in_;  // where the next verdict lands (any peer)
  MPI_Request verdict_request_ = MPI_REQUEST_NULL;
  std::vector<std::vector<char>> staging_pool_;
  bool sent_to_peers_ = false;   // verdicts are polled only once this rank has sent
  std::size_t deliverable_ = 0;  // device receives matched since the last claim_deliveries()
  std::vector<std::pair<int, int>> receives_before_header_;  // progress()'s, kept between polls
};

}  // namespace collex
