#include "collex/algorithms/executor.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <sstream>

#include "collex/common/errors.h"
#include "collex/common/waiting.h"
#include "collex/kernels/reduce.h"

namespace collex {

std::string OpLabel::describe() const {
  std::ostringstream o;
  o << "[rank " << rank << "] " << collective << " seq=" << seq << " " << dtype_name(dtype) << " " << bytes
    << " B algo=" << algo;
  return o.str();
}

void note_label(int debug, const OpLabel& label) {
  if (debug >= 1) std::fprintf(stderr, "collex: %s\n", label.describe().c_str());
}

namespace {

// Receives posted ahead of the step being executed; enough to overlap the
// transfer of the next chunks with the reduction of this one.
constexpr std::size_t kWindow = 4;
// How far ahead of the current step the executor looks for receives to post.
constexpr std::size_t kLookahead = 64;

bool overlaps(std::size_t a_off, std::size_t a_n, std::size_t b_off, std::size_t b_n) {
  return a_off < b_off + b_n && b_off < a_off + a_n;
}

class Run {
 public:
  Run(const Schedule& s, Transport& t, const ExecArgs& a, const OpLabel& label, Staging& staging)
      : s_(s),
        t_(t),
        a_(a),
        label_(label),
        esize_(dtype_size(a.dtype)),
        data_(static_cast<char*>(a.data)),
        input_(a.input != nullptr ? static_cast<const char*>(a.input) : data_) {
    slot_bytes_ = s.max_recv_count * esize_;
    const std::size_t need = slot_bytes_ * kWindow;
    if (staging.bytes.size() < need) staging.bytes.resize(need);
    slots_ = staging.bytes.data();
    for (std::size_t k = 0; k < kWindow; ++k) free_slots_.push_back(k);
  }

  void go() {
    try {
      for (std::size_t i = 0; i < s_.steps.size(); ++i) step(i);
      for (auto& p : sends_) wait(p.req, s_.steps[p.index]);
      sends_.clear();
      if (a_.watch != nullptr) a_.watch->drain();
    } catch (...) {
      abandon_all();
      throw;
    }
  }

 private:
  struct PostedRecv {
    std::size_t index;
    Request req;
    std::size_t slot;  // kWindow when receiving into place
  };
  struct PendingSend {
    std::size_t index;
    Request req;
  };

  char* at(std::size_t element) const { return data_ + element * esize_; }
  const char* source(const Step& st) const { return (st.from_input ? input_ : data_) + st.offset * esize_; }
  std::uint32_t tag(const Step& st) const { return a_.tag_base + st.channel; }

  void step(std::size_t i) {
    const Step& st = s_.steps[i];
    switch (st.kind) {
      case StepKind::kSend:
        sends_.push_back({i, t_.isend(st.peer, source(st), st.count * esize_, tag(st))});
        if (sends_.size() >= 2 * kWindow) reap_sends();
        break;
      case StepKind::kRecvReduce:
      case StepKind::kRecvCopy: {
        post_ahead(i);
        PostedRecv r = posted_.front();
        posted_.pop_front();
        wait(r.req, st);
        if (st.kind == StepKind::kRecvReduce) {
          wait_sends_touching(st.offset, st.count);
          kernels::reduce(at(st.offset), source(st), slots_ + r.slot * slot_bytes_, st.count, a_.dtype, a_.op);
          free_slots_.push_back(r.slot);
        }
        post_ahead(i + 1);
        break;
      }
      case StepKind::kDivide:
        wait_sends_touching(st.offset, st.count);
        kernels::divide(at(st.offset), st.count, a_.dtype, a_.divisor);
        break;
    }
  }

  // Posts receives in program order, from the first not yet posted, while the
  // window has room and posting early cannot disturb data still in use.
  void post_ahead(std::size_t current) {
    next_ = std::max(next_, current);
    while (next_ < s_.steps.size() && posted_.size() < kWindow && next_ - current < kLookahead) {
      const Step& st = s_.steps[next_];
      if (st.kind == StepKind::kSend || st.kind == StepKind::kDivide) {
        ++next_;
        continue;
      }
      if (st.kind == StepKind::kRecvReduce) {
        if (free_slots_.empty()) return;
        std::size_t slot = free_slots_.front();
        free_slots_.pop_front();
        posted_.push_back({next_, t_.irecv(st.peer, slots_ + slot * slot_bytes_, st.count * esize_, tag(st)), slot});
      } else {
        // Receiving into place: nothing before it may still read or write the range.
        for (std::size_t j = current; j < next_; ++j) {
          const Step& prior = s_.steps[j];
          if (prior.kind != StepKind::kRecvCopy && overlaps(prior.offset, prior.count, st.offset, st.count)) {
            return;
          }
        }
        if (next_ > current && send_touching(st.offset, st.count)) return;
        wait_sends_touching(st.offset, st.count);
        posted_.push_back({next_, t_.irecv(st.peer, at(st.offset), st.count * esize_, tag(st)), kWindow});
      }
      ++next_;
    }
  }

  bool send_touching(std::size_t off, std::size_t n) const {
    for (const auto& p : sends_) {
      const Step& st = s_.steps[p.index];
      if (overlaps(st.offset, st.count, off, n)) return true;
    }
    return false;
  }

  void wait_sends_touching(std::size_t off, std::size_t n) {
    for (auto it = sends_.begin(); it != sends_.end();) {
      const Step& st = s_.steps[it->index];
      if (overlaps(st.offset, st.count, off, n)) {
        wait(it->req, st);
        it = sends_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void reap_sends() {
    sends_.erase(std::remove_if(sends_.begin(), sends_.end(), [&](PendingSend& p) { return test(p.req, label_.seq); }),
                 sends_.end());
  }

  void wait(Request& req, const Step& st) {
    if (test(req, label_.seq)) return;
    Deadline deadline(a_.timeout_s);
    StallWarning stall(a_.warn_after_s);
    const Clock::time_point began = Clock::now();
    Backoff backoff;
    for (unsigned polls = 1;; ++polls) {
      backoff.pause();
      if (test(req, label_.seq)) return;
      if ((polls & 255u) == 0) {
        if (stall.due())
          warn(where(st) + " has waited " + seconds_text(a_.warn_after_s) + " (COLLEX_WARN_AFTER): " + waiting_for(st) +
               " yet");
        if (a_.op_mask != 0) look_for_mismatch(st);
        if (a_.watch != nullptr) {
          const int peer = watched(st.peer);
          if (const PeerFailure f = a_.watch->check(peer, label_.seq, a_.call)) {
            // Data the peer sent before it ended has arrived by now: take it first.
            if (test(req, label_.seq)) return;
            raise_failure(f, where(st));
          }
          // Long enough not to be a transfer in progress: say what this rank called.
          if (a_.call != nullptr && !noted_ && Clock::now() - began >= kNoteWaitingAfter) {
            a_.watch->note_waiting(peer, label_.seq, *a_.call);
            noted_ = true;
          }
        }
        if (deadline.expired()) timed_out(st);
        if (polls >= 1024 && interrupt_requested()) throw Interrupted();
      }
    }
  }

  // The watch's number for the transport's rank `peer`.
  int watched(int peer) const {
    return a_.watch_ranks != nullptr ? (*a_.watch_ranks)[static_cast<std::size_t>(peer)] : peer;
  }

  // Whether `req` has completed. A transfer that failed (the peer gave up on it,
  // e.g. a sender that found a mismatch and went on, taking its buffer with it)
  // most often has a cause another rank is reporting: that cause is raised when
  // it arrives within a moment, rather than the transport's error.
  bool test(Request& req, std::uint64_t seq) {
    try {
      return t_.test(req);
    } catch (const CommunicatorBroken&) {
      if (a_.watch == nullptr) throw;
      const int peer = watched(req.peer);
      const PeerFailure cause = await_cause(0.5, [&] {
        PeerFailure f = a_.watch->check(peer, seq, a_.call);
        return f.relayed ? f : PeerFailure{};
      });
      if (cause) raise_failure(cause, label_.describe());
      throw;
    }
  }

  // A peer that called this operation differently sends under another tag, so
  // nothing of it matches here: its message waits unreceived, and says so.
  void look_for_mismatch(const Step& st) {
    std::uint32_t found = 0;
    if (t_.foreign_message(st.peer, tag(st), a_.op_mask, a_.hash_mask, &found)) {
      throw CollectiveMismatch(label_.describe() + ": rank " + std::to_string(st.peer) +
                               " sent data for this operation called differently (another collective, count, "
                               "dtype, op or root): the ranks called different operations; nothing was combined "
                               "from it, and the communicator is broken: make a new one");
    }
  }

  // The operation and the step a message names: "[rank 0] allreduce seq=3 ... step 2/4".
  std::string where(const Step& st) const {
    return label_.describe() + " step " + std::to_string(st.round + 1) + "/" +
           std::to_string(std::max(s_.rounds, st.round + 1));
  }

  // What a stalled step waits for. Over a transport a rank knows only the peer
  // of its step, not where the others are.
  static std::string waiting_for(const Step& st) {
    return st.kind == StepKind::kSend ? "rank " + std::to_string(st.peer) + " did not take data from this rank"
                                      : "no data from rank " + std::to_string(st.peer);
  }

  [[noreturn]] void timed_out(const Step& st) {
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.1f", a_.timeout_s);
    throw CollectiveTimeout(where(st) + ": " + waiting_for(st) + " after " + secs + " s");
  }

  void abandon_all() {
    for (auto& r : posted_) t_.abandon(r.req);
    for (auto& p : sends_) t_.abandon(p.req);
    posted_.clear();
    sends_.clear();
  }

  const Schedule& s_;
  Transport& t_;
  const ExecArgs& a_;
  const OpLabel& label_;
  std::size_t esize_;
  char* data_;
  const char* input_;
  char* slots_ = nullptr;
  std::size_t slot_bytes_ = 0;
  std::deque<std::size_t> free_slots_;
  std::deque<PostedRecv> posted_;
  std::vector<PendingSend> sends_;
  std::size_t next_ = 0;
  bool noted_ = false;  // the peer of a stalled wait has been told what this rank called
};

}  // namespace

void execute(const Schedule& schedule, Transport& transport, const ExecArgs& args, const OpLabel& label,
             Staging& staging) {
  if (schedule.steps.empty()) return;
  Run(schedule, transport, args, label, staging).go();
}

}  // namespace collex
