// Point-to-point, progress: moving each operation along, waiting with a
// deadline and the watch, and abandoning what a failure leaves pending.
#include <algorithm>
#include <climits>
#include <cstring>
#include <sstream>
#include <utility>
#include <vector>

#include "collex/common/errors.h"
#include "collex/common/failure.h"
#include "collex/common/waiting.h"
#include "collex/core/p2p.h"
#include "collex/core/p2p_ops.h"

namespace collex {

using namespace p2p_detail;  // NOLINT: the shared vocabulary of p2p_ops.h
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
  } else if (op.refused_mismatch) {
    finish(op, std::make_exception_ptr(CollectiveMismatch(op.refused)));
  } else {
    finish(op, std::make_exception_ptr(CollexError(op.refused)));
  }
}

void PointToPoint::progress_recv(P2pOp& op, bool earlier_waiting) {
  // A device receive that matched waits for a wait to run its deliver, nothing else.
  if (op.stage == P2pOp::Stage::kDeliver || op.stage == P2pOp::Stage::kDelivering) return;
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
  // (peer, tag) of the receives still before their headers: a member, so that
  // the polls of a wait reuse its memory instead of allocating every time.
  std::vector<std::pair<int, int>>& waiting = receives_before_header_;
  waiting.clear();
  for (std::size_t i = 0; i < pending_.size(); ++i) {
    P2pOp& op = *pending_[i];
    if (op.finished) continue;
    if (op.is_send) {
      progress_send(op);
      continue;
    }
    const std::pair<int, int> key{op.peer, op.tag};
    const bool earlier = std::find(waiting.begin(), waiting.end(), key) != waiting.end();
    progress_recv(op, earlier);
    if (!op.finished && op.stage == P2pOp::Stage::kHeader && !earlier) waiting.push_back(key);
  }
  pending_.erase(std::remove_if(pending_.begin(), pending_.end(), [](const auto& p) { return p->finished; }),
                 pending_.end());
}

bool PointToPoint::done(P2pOp& op) {
  std::vector<std::shared_ptr<P2pOp>> deliveries;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (op.finished) return true;
    progress();
    if (deliverable_ == 0) return op.finished;
    deliveries = claim_deliveries();
  }
  deliver(deliveries);
  std::lock_guard<std::mutex> lock(mutex_);
  return op.finished;
}

void PointToPoint::wait(P2pOp& op) {
  const Deadline deadline(timeout_s_);
  StallWarning stall(warn_after_s_);
  Backoff backoff;
  for (unsigned polls = 0;; ++polls) {
    std::vector<std::shared_ptr<P2pOp>> deliveries;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!op.finished) progress();
      if (deliverable_ > 0) deliveries = claim_deliveries();
      if (deliveries.empty() && op.finished) break;
      // Claimed deliveries always run (below) before this wait may end.
      if (deliveries.empty() && (polls & 1023) == 1023) {
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
    if (!deliveries.empty()) {
      deliver(deliveries);  // this operation may be one of them: look again before pausing
      continue;
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
