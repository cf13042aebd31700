// Point-to-point, posting and matching: send and recv, headers and verdicts, a
// refused message. Progress and waits are in p2p_progress.cpp.
#include "collex/core/p2p.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <set>
#include <sstream>

#include "collex/common/errors.h"
#include "collex/common/failure.h"
#include "collex/common/waiting.h"
#include "collex/core/p2p_ops.h"

namespace collex {

using namespace p2p_detail;  // NOLINT: the shared vocabulary of p2p_ops.h

bool P2pWork::done() { return owner_->done(*op_); }
void P2pWork::wait() { owner_->wait(*op_); }
std::string P2pWork::device_reply() const {
  std::lock_guard<std::mutex> lock(owner_->mutex_);
  return op_->finished && op_->device ? op_->device->reply : std::string();
}

PointToPoint::PointToPoint(MPI_Comm comm, int rank, std::uint32_t tag_base, double timeout_s, double warn_after_s,
                           PeerWatch* watch, std::function<void(const std::string&)> on_failure)
    : comm_(comm),
      rank_(rank),
      header_tag_base_(tag_base),
      payload_tag_base_(tag_base + (std::uint32_t{1} << kUserTagBits)),
      verdict_tag_(tag_base + (std::uint32_t{2} << kUserTagBits)),
      timeout_s_(timeout_s),
      warn_after_s_(warn_after_s),
      watch_(watch),
      on_failure_(std::move(on_failure)) {
  verdict_in_ = std::make_unique<VerdictIn>();
  post_verdict_receive();
}

void PointToPoint::post_verdict_receive() {
  MPI_Irecv(verdict_in_.get(), sizeof(VerdictIn), MPI_BYTE, MPI_ANY_SOURCE, static_cast<int>(verdict_tag_), comm_,
            &verdict_request_);
}

PointToPoint::~PointToPoint() { abandon_all(); }

std::vector<char> PointToPoint::take_staging() {
  if (staging_pool_.empty()) {
    std::vector<char> v;
    v.reserve(sizeof(Header) + kInlineBytes);
    return v;
  }
  std::vector<char> v = std::move(staging_pool_.back());
  staging_pool_.pop_back();
  return v;
}

namespace {

std::shared_ptr<P2pOp> make_op(bool is_send, const Buffer& buf, const MessageShape& shape, int peer, int tag) {
  auto op = std::make_shared<P2pOp>();
  op->is_send = is_send;
  op->peer = peer;
  op->tag = tag;
  op->buf = buf;
  op->shape = shape;
  return op;
}

}  // namespace

PointToPoint::Header PointToPoint::header_of(const P2pOp& op) {
  Header h;
  h.dtype = static_cast<std::uint32_t>(op.buf.dtype);
  h.count = op.buf.count;
  h.serial = op.serial;
  h.ndim = op.shape.ndim;
  h.tag = op.tag;
  std::copy(op.shape.dims, op.shape.dims + MessageShape::kMaxDims, h.dims);
  h.device = op.device ? 1 : 0;
  return h;
}

std::shared_ptr<P2pWork> PointToPoint::send(const Buffer& buf, const MessageShape& shape, int dst, int tag) {
  return post_send(make_op(true, buf, shape, dst, tag));
}

std::shared_ptr<P2pWork> PointToPoint::send_device(const Buffer& buf, const MessageShape& shape, int dst, int tag,
                                                   std::shared_ptr<DeviceEnd> device) {
  if (device->descriptor.size() > kInlineBytes) {
    throw InvalidArgument("a device message's descriptor is larger than " + std::to_string(kInlineBytes) + " bytes");
  }
  auto op = make_op(true, buf, shape, dst, tag);
  op->device = std::move(device);
  return post_send(op);
}

std::shared_ptr<P2pWork> PointToPoint::post_send(const std::shared_ptr<P2pOp>& op) {
  const Buffer& buf = op->buf;
  const int dst = op->peer, tag = op->tag;
  std::lock_guard<std::mutex> lock(mutex_);
  op->serial = sent_serial_[{dst, tag}]++;
  const Header h = header_of(*op);
  // A device message's payload is its descriptor; the array's bytes stay where they are.
  const char* payload = op->device ? op->device->descriptor.data() : static_cast<const char*>(buf.data);
  const std::size_t bytes = op->device ? op->device->descriptor.size() : buf.bytes();
  // To this rank itself the whole payload is copied, whatever its size.
  const bool inline_payload = bytes <= kInlineBytes || dst == rank_;
  op->staging = take_staging();
  op->staging.resize(sizeof(Header) + (inline_payload ? bytes : 0));
  std::memcpy(op->staging.data(), &h, sizeof(Header));
  if (inline_payload && bytes > 0) std::memcpy(op->staging.data() + sizeof(Header), payload, bytes);

  if (dst == rank_) {
    to_self_[tag].emplace_back(std::move(op->staging), op->serial);
    op->finished = true;
    return std::make_shared<P2pWork>(shared_from_this(), op);
  }
  sent_to_peers_ = true;
  MPI_Request r;
  int rc = MPI_Isend(op->staging.data(), as_int(op->staging.size()), MPI_BYTE, dst,
                     static_cast<int>(header_tag_base_) + tag, comm_, &r);
  if (rc == MPI_SUCCESS) op->requests.push_back(r);
  for (std::size_t at = 0; rc == MPI_SUCCESS && !inline_payload && at < bytes; at += kPieceBytes) {
    rc = MPI_Isend(static_cast<const char*>(buf.data) + at, as_int(std::min(kPieceBytes, bytes - at)), MPI_BYTE, dst,
                   static_cast<int>(payload_tag_base_) + tag, comm_, &r);
    if (rc == MPI_SUCCESS) op->requests.push_back(r);
  }
  if (rc != MPI_SUCCESS) {
    for (MPI_Request& q : op->requests) MPI_Request_free(&q);
    if (on_failure_) on_failure_(what(*op, rank_) + ": MPI_Isend failed");
    throw CollexError(what(*op, rank_) + ": MPI_Isend failed");
  }
  pending_.push_back(op);
  return std::make_shared<P2pWork>(shared_from_this(), op);
}

std::shared_ptr<P2pWork> PointToPoint::recv(const Buffer& buf, const MessageShape& shape, int src, int tag) {
  return post_recv(make_op(false, buf, shape, src, tag));
}

std::shared_ptr<P2pWork> PointToPoint::recv_device(const Buffer& buf, const MessageShape& shape, int src, int tag,
                                                   std::shared_ptr<DeviceEnd> device) {
  auto op = make_op(false, buf, shape, src, tag);
  op->device = std::move(device);
  return post_recv(op);
}

std::shared_ptr<P2pWork> PointToPoint::post_recv(const std::shared_ptr<P2pOp>& op) {
  const int src = op->peer, tag = op->tag;
  std::unique_lock<std::mutex> lock(mutex_);
  if (src != rank_) {
    // Posted now, so that MPI matches this rank's receives of one (peer, tag) in
    // posting order.
    op->staging = take_staging();
    op->staging.resize(sizeof(Header) + kInlineBytes);
    MPI_Request r;
    if (MPI_Irecv(op->staging.data(), as_int(op->staging.size()), MPI_BYTE, src,
                  static_cast<int>(header_tag_base_) + tag, comm_, &r) != MPI_SUCCESS) {
      if (on_failure_) on_failure_(what(*op, rank_) + ": MPI_Irecv failed");
      throw CollexError(what(*op, rank_) + ": MPI_Irecv failed");
    }
    op->requests.push_back(r);
  }
  pending_.push_back(op);
  progress();
  if (deliverable_ > 0) {
    std::vector<std::shared_ptr<P2pOp>> deliveries = claim_deliveries();
    lock.unlock();
    deliver(deliveries);
  }
  return std::make_shared<P2pWork>(shared_from_this(), op);
}

void PointToPoint::finish(P2pOp& op, std::exception_ptr error) {
  op.finished = true;
  op.error = std::move(error);
  op.requests.clear();
  if (op.staging.capacity() >= sizeof(Header) + kInlineBytes && staging_pool_.size() < 16) {
    op.staging.clear();
    staging_pool_.push_back(std::move(op.staging));
  }
}

void PointToPoint::fail(P2pOp& op, const std::string& message, bool timeout) {
  fail(op,
       timeout ? std::make_exception_ptr(CollectiveTimeout(message)) : std::make_exception_ptr(CollexError(message)),
       message);
}

void PointToPoint::fail(P2pOp& op, std::exception_ptr error, const std::string& message) {
  // Receives are cancelled so no late message lands; sends are left to MPI.
  // Memory MPI may still touch is leaked rather than freed under its feet.
  for (MPI_Request& r : op.requests) {
    if (r == MPI_REQUEST_NULL) continue;
    if (!op.is_send) MPI_Cancel(&r);
    MPI_Request_free(&r);
  }
  new std::vector<char>(std::move(op.staging));  // NOLINT: deliberate leak
  op.requests.clear();
  op.finished = true;
  op.error = std::move(error);
  if (on_failure_) on_failure_(message);
}

void PointToPoint::poll_verdicts() {
  for (;;) {
    int flag = 0;
    MPI_Status st;
    MPI_Test(&verdict_request_, &flag, &st);
    if (!flag) return;
    const Verdict v = verdict_in_->verdict;
    const std::string reply(verdict_in_->reply, std::min<std::size_t>(v.reply_bytes, kDeviceReplyBytes));
    const int from = st.MPI_SOURCE;
    post_verdict_receive();
    auto it = std::find_if(pending_.begin(), pending_.end(), [&](const std::shared_ptr<P2pOp>& p) {
      return p->is_send && !p->finished && p->peer == from && p->tag == v.tag && p->serial == v.serial;
    });
    if (it == pending_.end()) continue;  // a send given up on (timed out)
    P2pOp& s = **it;
    s.answered = true;
    if (v.kind == kTaken) {
      if (s.device) s.device->reply = reply;
      continue;
    }
    if (v.kind == kRefusedFailure) {
      s.refused_mismatch = false;
      s.refused = what(s, rank_) + ": rank " + std::to_string(from) + " could not take the CUDA array: " + reply;
      continue;
    }
    const Header& b = v.receiver;
    const bool differ = (b.device != 0) != (s.device != nullptr);
    s.refused = what(s, rank_) + ": rank " + std::to_string(from) + " refused the message: it is " +
                describe(s.buf.dtype, s.buf.count, s.shape.ndim, s.shape.dims) +
                memory_of(s.device != nullptr, differ) + ", the receiving buffer is " +
                describe(static_cast<DType>(b.dtype), b.count, b.ndim, b.dims) + memory_of(b.device != 0, differ);
  }
}

void PointToPoint::answer(P2pOp& op, const Header& h, int kind, const std::string& reply) {
  Verdict v;
  v.serial = h.serial;
  v.tag = op.tag;
  v.kind = kind;
  v.receiver = header_of(op);
  v.reply_bytes = std::min(reply.size(), kDeviceReplyBytes);
  auto memory = std::make_shared<std::vector<char>>(sizeof v + v.reply_bytes);
  std::memcpy(memory->data(), &v, sizeof v);
  std::memcpy(memory->data() + sizeof v, reply.data(), v.reply_bytes);
  MPI_Request q;
  MPI_Isend(memory->data(), static_cast<int>(memory->size()), MPI_BYTE, op.peer, static_cast<int>(verdict_tag_), comm_,
            &q);
  in_flight_.push_back({q, memory});
}

void PointToPoint::refuse(P2pOp& op, const Header& h) {
  answer(op, h, kRefusedMismatch);
  MPI_Request q;
  // The payload that follows is received into scratch memory, so the pair's
  // later messages match as posted (a device message has none that follows).
  const std::size_t bytes = h.device != 0 ? 0 : h.bytes();
  if (bytes > kInlineBytes) {
    auto scratch = std::make_shared<std::vector<char>>(std::min(bytes, kPieceBytes));
    for (std::size_t at = 0; at < bytes; at += kPieceBytes) {
      MPI_Irecv(scratch->data(), as_int(std::min(kPieceBytes, bytes - at)), MPI_BYTE, op.peer,
                static_cast<int>(payload_tag_base_) + op.tag, comm_, &q);
      in_flight_.push_back({q, scratch});
    }
  }
}

void PointToPoint::accept_header(P2pOp& op, const Header& h, const char* inline_payload, std::size_t inline_bytes) {
  const auto sent = static_cast<DType>(h.dtype);
  const bool differ = (h.device != 0) != (op.device != nullptr);
  bool fits = sent == op.buf.dtype && h.count == op.buf.count && !differ;
  if (fits && h.ndim >= 0 && op.shape.ndim >= 0) {
    fits = h.ndim == op.shape.ndim && std::equal(h.dims, h.dims + h.ndim, op.shape.dims);
  }
  if (!fits) {
    if (op.peer != rank_) refuse(op, h);
    const std::string m = what(op, rank_) + ": the message is " + describe(sent, h.count, h.ndim, h.dims) +
                          memory_of(h.device != 0, differ) + ", the receiving buffer is " +
                          describe(op.buf.dtype, op.buf.count, op.shape.ndim, op.shape.dims) +
                          memory_of(op.device != nullptr, differ) + "; nothing was written" +
                          (op.peer != rank_ ? " (the sender is told)" : "");
    finish(op, std::make_exception_ptr(CollectiveMismatch(m)));
    return;
  }
  if (op.device) {
    op.device->matched.assign(inline_payload, inline_bytes);
    op.device->serial = h.serial;
    op.stage = P2pOp::Stage::kDeliver;  // a wait runs the deliver, outside the lock
    ++deliverable_;
    return;
  }
  if (op.peer != rank_) answer(op, h, kTaken);
  const std::size_t bytes = op.buf.bytes();
  if (bytes <= kInlineBytes || op.peer == rank_) {
    if (inline_bytes != bytes) {
      fail(op,
           what(op, rank_) + ": malformed message (" + std::to_string(inline_bytes) + " payload bytes, expected " +
               std::to_string(bytes) + ")",
           false);
      return;
    }
    if (bytes > 0) std::memcpy(op.buf.data, inline_payload, bytes);
    finish(op, nullptr);
    return;
  }
  op.requests.clear();
  for (std::size_t at = 0; at < bytes; at += kPieceBytes) {
    MPI_Request q;
    if (MPI_Irecv(static_cast<char*>(op.buf.data) + at, as_int(std::min(kPieceBytes, bytes - at)), MPI_BYTE, op.peer,
                  static_cast<int>(payload_tag_base_) + op.tag, comm_, &q) != MPI_SUCCESS) {
      fail(op, what(op, rank_) + ": MPI_Irecv failed", false);
      return;
    }
    op.requests.push_back(q);
  }
  op.stage = P2pOp::Stage::kPayload;
}

std::vector<std::shared_ptr<P2pOp>> PointToPoint::claim_deliveries() {
  std::vector<std::shared_ptr<P2pOp>> claimed;
  for (const auto& p : pending_) {
    if (!p->finished && p->stage == P2pOp::Stage::kDeliver) {
      p->stage = P2pOp::Stage::kDelivering;
      claimed.push_back(p);
    }
  }
  deliverable_ = 0;  // those claimed, and any abandoned since they matched
  return claimed;
}

void PointToPoint::deliver(const std::vector<std::shared_ptr<P2pOp>>& ops) {
  for (const auto& op : ops) {
    std::string reply, why;
    try {
      reply = op->device->deliver(op->device->matched);
    } catch (const std::exception& e) {
      why = e.what();
      if (why.empty()) why = "unknown error";
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (op->finished) continue;  // abandoned meanwhile (the communicator was shut down)
    Header h;
    h.serial = op->device->serial;
    const bool to_peer = op->peer != rank_;
    if (!why.empty()) {
      if (to_peer) answer(*op, h, kRefusedFailure, why);
      finish(*op, std::make_exception_ptr(CollexError(what(*op, rank_) + ": could not take the CUDA array: " + why +
                                                      (to_peer ? " (the sender is told)" : ""))));
      continue;
    }
    // The verdict leaves only now: the sender orders its stream after the copy just queued.
    if (to_peer) answer(*op, h, kTaken, reply);
    finish(*op, nullptr);
  }
}

}  // namespace collex
