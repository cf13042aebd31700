#include "collex/core/p2p.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <set>
#include <sstream>

#include "collex/common/errors.h"
#include "collex/common/failure.h"
#include "collex/common/waiting.h"

namespace collex {

namespace {

// Payloads up to this size ride in the header's message: one MPI message instead
// of two, and one copy out of the staging buffer that costs less than a message.
constexpr std::size_t kInlineBytes = 8192;
// Larger payloads are cut into MPI messages of at most this many bytes (MPI counts are ints).
constexpr std::size_t kPieceBytes = std::size_t{1} << 28;
constexpr std::uint32_t kMagic = 0x43585031;  // "CXP1"

int as_int(std::size_t n) { return static_cast<int>(std::min<std::size_t>(n, INT_MAX)); }

}  // namespace

struct PointToPoint::Header {
  std::uint32_t magic = kMagic;
  std::uint32_t dtype = 0;
  std::uint64_t count = 0;
  std::uint64_t serial = 0;  // the sender's message number for this (receiver, tag)
  std::int32_t ndim = -1;
  std::int32_t tag = 0;
  std::int64_t dims[MessageShape::kMaxDims] = {};

  std::size_t bytes() const { return count * dtype_size(static_cast<DType>(dtype)); }
};

// A receiver's answer to every message: which message, whether it was taken,
// and what the receiving buffer was.
struct PointToPoint::Verdict {
  std::uint64_t serial = 0;
  std::int32_t tag = 0;
  std::int32_t accepted = 0;
  Header receiver{};
};

struct P2pOp {
  bool is_send = false;
  int peer = 0;
  int tag = 0;
  std::uint64_t serial = 0;  // sends: this message's number for (peer, tag)
  Buffer buf{};
  MessageShape shape{};
  enum class Stage { kHeader, kPayload } stage = Stage::kHeader;
  std::vector<char> staging;          // send: the header message; recv: where it lands
  std::vector<MPI_Request> requests;  // pending MPI requests
  bool answered = false;              // sends: the receiver's verdict has come
  std::string refused;                // sends: the receiver's refusal, raised on completion
  bool finished = false;
  std::exception_ptr error;
};

namespace {

std::string describe(DType dtype, std::uint64_t count, int ndim, const std::int64_t* dims) {
  std::ostringstream o;
  o << dtype_name(dtype);
  if (ndim >= 0) {
    o << " shape (";
    for (int i = 0; i < ndim; ++i) o << (i ? ", " : "") << dims[i];
    o << (ndim == 1 ? ",)" : ")");
  } else {
    o << " of " << count << " elements";
  }
  return o.str();
}

std::string what(const P2pOp& op, int rank) {
  std::ostringstream o;
  o << "[rank " << rank << "] collex." << (op.is_send ? "send to" : "recv from") << " rank " << op.peer << " tag "
    << op.tag;
  return o.str();
}

// what(), and the array: "[rank 0] collex.recv from rank 1 tag 0 (float64 shape (8,))".
std::string what_with_array(const P2pOp& op, int rank) {
  return what(op, rank) + " (" + describe(op.buf.dtype, op.buf.count, op.shape.ndim, op.shape.dims) + ")";
}

}  // namespace

bool P2pWork::done() { return owner_->done(*op_); }
void P2pWork::wait() { owner_->wait(*op_); }

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
  verdict_in_ = std::make_unique<Verdict>();
  post_verdict_receive();
}

void PointToPoint::post_verdict_receive() {
  MPI_Irecv(verdict_in_.get(), sizeof(Verdict), MPI_BYTE, MPI_ANY_SOURCE, static_cast<int>(verdict_tag_), comm_,
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
  return h;
}

std::shared_ptr<P2pWork> PointToPoint::send(const Buffer& buf, const MessageShape& shape, int dst, int tag) {
  auto op = make_op(true, buf, shape, dst, tag);
  std::lock_guard<std::mutex> lock(mutex_);
  op->serial = sent_serial_[{dst, tag}]++;
  const Header h = header_of(*op);
  const std::size_t bytes = buf.bytes();
  // To this rank itself the whole payload is copied, whatever its size.
  const bool inline_payload = bytes <= kInlineBytes || dst == rank_;
  op->staging = take_staging();
  op->staging.resize(sizeof(Header) + (inline_payload ? bytes : 0));
  std::memcpy(op->staging.data(), &h, sizeof(Header));
  if (inline_payload && bytes > 0) std::memcpy(op->staging.data() + sizeof(Header), buf.data, bytes);

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
  auto op = make_op(false, buf, shape, src, tag);
  std::lock_guard<std::mutex> lock(mutex_);
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
    const Verdict v = *verdict_in_;
    const int from = st.MPI_SOURCE;
    post_verdict_receive();
    auto it = std::find_if(pending_.begin(), pending_.end(), [&](const std::shared_ptr<P2pOp>& p) {
      return p->is_send && !p->finished && p->peer == from && p->tag == v.tag && p->serial == v.serial;
    });
    if (it == pending_.end()) continue;  // a send given up on (timed out)
    P2pOp& s = **it;
    s.answered = true;
    if (v.accepted) continue;
    const Header& b = v.receiver;
    s.refused = what(s, rank_) + ": rank " + std::to_string(from) + " refused the message: it is " +
                describe(s.buf.dtype, s.buf.count, s.shape.ndim, s.shape.dims) + ", the receiving buffer is " +
                describe(static_cast<DType>(b.dtype), b.count, b.ndim, b.dims);
  }
}

void PointToPoint::answer(P2pOp& op, const Header& h, bool accepted) {
  auto memory = std::make_shared<std::vector<char>>(sizeof(Verdict));
  Verdict v;
  v.serial = h.serial;
  v.tag = op.tag;
  v.accepted = accepted ? 1 : 0;
  v.receiver = header_of(op);
  std::memcpy(memory->data(), &v, sizeof v);
  MPI_Request q;
  MPI_Isend(memory->data(), sizeof v, MPI_BYTE, op.peer, static_cast<int>(verdict_tag_), comm_, &q);
  in_flight_.push_back({q, memory});
}

void PointToPoint::refuse(P2pOp& op, const Header& h) {
  answer(op, h, false);
  MPI_Request q;
  // The payload that follows is received into scratch memory, so the pair's
  // later messages match as posted.
  const std::size_t bytes = h.bytes();
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
  bool fits = sent == op.buf.dtype && h.count == op.buf.count;
  if (fits && h.ndim >= 0 && op.shape.ndim >= 0) {
    fits = h.ndim == op.shape.ndim && std::equal(h.dims, h.dims + h.ndim, op.shape.dims);
  }
  if (!fits) {
    if (op.peer != rank_) refuse(op, h);
    const std::string m = what(op, rank_) + ": the message is " + describe(sent, h.count, h.ndim, h.dims) +
                          ", the receiving buffer is " +
                          describe(op.buf.dtype, op.buf.count, op.shape.ndim, op.shape.dims) + "; nothing was written" +
                          (op.peer != rank_ ? " (the sender is told)" : "");
    finish(op, std::make_exception_ptr(CollectiveMismatch(m)));
    return;
  }
  if (op.peer != rank_) answer(op, h, true);
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

bool PointToPoint::match_self(P2pOp& op) {
  auto it = to_self_.find(op.tag);
  if (it == to_self_.end() || it->second.empty()) return false;
  std::vector<char> message = std::move(it->second.front().first);
  it->second.pop_front();
  Header h;
  std::memcpy(&h, message.data(), sizeof h);
  accept_header(op, h, message.data() + sizeof h, message.size() - sizeof h);
  return true;
}

void PointToPoint::progress_send(P2pOp& op) {
  int flag = 0;
  if (MPI_Testall(static_cast<int>(op.requests.size()), op.requests.data(), &flag, MPI_STATUSES_IGNORE) !=
      MPI_SUCCESS) {
    fail(op, what(op, rank_) + ": the transfer failed", false);
    return;
  }
  if (!flag || !op.answered) return;
  if (op.refused.empty()) {
    finish(op, nullptr);
  } else {
    finish(op, std::make_exception_ptr(CollectiveMismatch(op.refused)));
  }
}

void PointToPoint::progress_recv(P2pOp& op, bool earlier_waiting) {
  if (op.stage == P2pOp::Stage::kHeader) {
    // A later receive of the same (peer, tag) waits until the earlier ones have
    // read their headers, so that their payloads are posted in order.
    if (earlier_waiting) return;
    if (op.peer == rank_) {
      match_self(op);
      return;
    }
    int flag = 0;
    MPI_Status st;
    if (MPI_Test(&op.requests[0], &flag, &st) != MPI_SUCCESS) {
      fail(op, what(op, rank_) + ": the transfer failed", false);
      return;
    }
    if (!flag) return;
    int got = 0;
    MPI_Get_count(&st, MPI_BYTE, &got);
    Header h;
    if (got < static_cast<int>(sizeof h)) {
      fail(op, what(op, rank_) + ": malformed message of " + std::to_string(got) + " bytes", false);
      return;
    }
    std::memcpy(&h, op.staging.data(), sizeof h);
    if (h.magic != kMagic) {
      fail(op, what(op, rank_) + ": malformed message header", false);
      return;
    }
    accept_header(op, h, op.staging.data() + sizeof h, static_cast<std::size_t>(got) - sizeof h);
    return;
  }
  int flag = 0;
  if (MPI_Testall(static_cast<int>(op.requests.size()), op.requests.data(), &flag, MPI_STATUSES_IGNORE) !=
      MPI_SUCCESS) {
    fail(op, what(op, rank_) + ": the transfer failed", false);
    return;
  }
  if (flag) finish(op, nullptr);
}

void PointToPoint::progress() {
  if (sent_to_peers_) poll_verdicts();
  for (auto it = in_flight_.begin(); it != in_flight_.end();) {
    int flag = 0;
    MPI_Test(&it->request, &flag, MPI_STATUS_IGNORE);
    it = flag ? in_flight_.erase(it) : it + 1;
  }
  std::set<std::pair<int, int>> waiting;  // (peer, tag) with a receive still before its header
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    P2pOp& op = *pending_[i];
    if (op.finished) continue;
    if (op.is_send) {
      progress_send(op);
      continue;
    }
    const std::pair<int, int> key{op.peer, op.tag};
    const bool earlier = !waiting.empty() && waiting.count(key) > 0;
    progress_recv(op, earlier);
    if (!op.finished && op.stage == P2pOp::Stage::kHeader) waiting.insert(key);
  }
  pending_.erase(std::remove_if(pending_.begin(), pending_.end(), [](const auto& p) { return p->finished; }),
                 pending_.end());
}

bool PointToPoint::done(P2pOp& op) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!op.finished) progress();
  return op.finished;
}

void PointToPoint::wait(P2pOp& op) {
  const Deadline deadline(timeout_s_);
  StallWarning stall(warn_after_s_);
  Backoff backoff;
  for (unsigned polls = 0;; ++polls) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!op.finished) progress();
      if (op.finished) break;
      if ((polls & 1023) == 1023) {
        // A peer that has exited, left or failed will not come: say so now.
        if (watch_ != nullptr) {
          if (const PeerFailure f = watch_->check(op.peer, kNoSequence, nullptr)) {
            // What the peer sent before it left or ended (a verdict, a message)
            // has arrived by now: take it before deciding the operation failed.
            progress();
            if (op.finished) break;
            try {
              raise_failure(f, what(op, rank_));
            } catch (const std::exception& e) {
              fail(op, std::current_exception(), e.what());
            }
            forget_finished();
            break;
          }
        }
        if (stall.due()) {
          warn(what_with_array(op, rank_) + " has waited " + seconds_text(warn_after_s_) +
               " (COLLEX_WARN_AFTER): " + (op.is_send ? "not received" : "no message") + " yet");
        }
        if (deadline.expired()) {
          std::ostringstream o;
          o << what_with_array(op, rank_) << ": " << (op.is_send ? "not received" : "no message") << " after "
            << timeout_s_ << " s";
          fail(op, o.str(), true);
          forget_finished();
          break;
        }
      }
    }
    if ((polls & 1023) == 1023 && interrupt_requested()) throw Interrupted();
    backoff.pause();
  }
  if (op.error) std::rethrow_exception(op.error);
}

void PointToPoint::forget_finished() {
  pending_.erase(std::remove_if(pending_.begin(), pending_.end(), [](const auto& p) { return p->finished; }),
                 pending_.end());
}

void PointToPoint::abandon_all() {
  std::lock_guard<std::mutex> lock(mutex_);
  on_failure_ = nullptr;  // the communicator goes away; handles may outlive it
  watch_ = nullptr;
  for (auto& p : pending_) {
    for (MPI_Request& r : p->requests) {
      if (r == MPI_REQUEST_NULL) continue;
      if (!p->is_send) MPI_Cancel(&r);
      MPI_Request_free(&r);
    }
    new std::vector<char>(std::move(p->staging));  // NOLINT: deliberate leak (MPI may still write)
    p->requests.clear();
    p->finished = true;
    p->error = std::make_exception_ptr(
        CommunicatorBroken("[rank " + std::to_string(rank_) + "] collex: the communicator was shut down"));
  }
  pending_.clear();
  for (auto& f : in_flight_) MPI_Request_free(&f.request);
  in_flight_.clear();
  if (verdict_request_ != MPI_REQUEST_NULL) {
    MPI_Cancel(&verdict_request_);
    MPI_Request_free(&verdict_request_);
    verdict_in_.release();  // NOLINT: MPI may still write it
  }
}

}  // namespace collex
