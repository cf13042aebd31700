#include "collex/transport/cuda_ipc/host_lanes.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "collex/common/errors.h"
#include "collex/kernels/combine.h"
#include "collex/transport/cuda_ipc/lane_elements.h"
#include "collex/transport/cuda_ipc/lane_rounds.h"

namespace collex::ipc {
namespace {

using Clock = std::chrono::steady_clock;
namespace el = kernels::elements;

// A lane on one host thread: the thread is the whole CUDA block, so the
// block's barriers are nothing and it is its own leader.
template <typename Tr, ReduceOp Op>
class HostLane {
 public:
  HostLane(double timeout_s, LaneStatus* status)
      : timeout_(std::chrono::duration<double>(timeout_s)), status_(status) {}

  void copy(char* dst, const char* src, Range r) {
    if (!r.empty()) std::memcpy(dst + r.begin, src + r.begin, r.end - r.begin);
  }

  // The whole range into the first out, then copied into the others: an out
  // may be a source only where no other lane or rank reads that range of it.
  void combine(const Outs& outs, const char* const* src, int count, Range r) {
    if (r.empty()) return;
    char* out = outs.at[0];
    const std::size_t whole = r.begin + (r.end - r.begin) / kVector * kVector;
    for (std::size_t v = r.begin / kVector; v < whole / kVector; ++v) {
      el::combine_vector<Tr, Op>(out, src, count, v);
    }
    using S = typename Tr::S;
    for (std::size_t e = whole / sizeof(S); e < r.end / sizeof(S); ++e) el::combine_element<Tr, Op>(out, src, count, e);
    for (int k = 1; k < outs.count; ++k) std::memcpy(outs.at[k] + r.begin, out + r.begin, r.end - r.begin);
  }

  // The rounds' meetings: lanes.h's barrier, over this lane's flag words.
  bool barrier(const Peers& w, int lane, std::uint64_t value, std::uint64_t signature = 0) {
    return ipc::barrier(w, lane, value, *this, signature);
  }

  void sync() {}
  bool sync_and(bool ok) { return ok; }
  bool leader() const { return true; }

  void signal(std::uint64_t* word, std::uint64_t value) { __atomic_store_n(word, value, __ATOMIC_RELEASE); }

  bool wait(const std::uint64_t* word, std::uint64_t value) {
    const Clock::time_point deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout_);
    for (unsigned spin = 1;; ++spin) {
      if (__atomic_load_n(word, __ATOMIC_ACQUIRE) >= value) return true;
      if (spin % 64 == 0) std::this_thread::yield();  // the stand-in runs more threads than cores
      if (spin % 1024 == 0 && Clock::now() > deadline) return false;
    }
  }

  void store(std::uint64_t* word, std::uint64_t value) { __atomic_store_n(word, value, __ATOMIC_RELAXED); }
  std::uint64_t load(const std::uint64_t* word) { return __atomic_load_n(word, __ATOMIC_RELAXED); }

  // The first lane to give up, of any rank sharing the status, says why.
  void report(const LaneStatus& why) {
    std::uint64_t none = 0;
    if (__atomic_compare_exchange_n(&status_->failed, &none, why.failed, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      fill_status(status_, why);
    }
  }

 private:
  std::chrono::duration<double> timeout_;
  LaneStatus* status_;
};

// Picks nothing: asks whether the dtype and op have a kernel at all.
struct Supported {
  template <typename Tr, ReduceOp Op>
  void run() {}
};

// One lane's work: its part of every call, in order.
struct LaneThread {
  const Peers& peers;
  const std::vector<Call>& calls;
  int lane;
  double timeout_s;
  LaneStatus* status;

  template <typename Tr, ReduceOp Op>
  void run() {
    HostLane<Tr, Op> ctx(timeout_s, status);
    for (const Call& c : calls) {
      if (!run_lane(peers, c, lane, ctx)) return;
    }
  }
};

}  // namespace

void check_supported(DType dtype, ReduceOp op, const char* who) {
  Supported supported;
  if (!el::with_elements(dtype, op, supported)) {
    throw InvalidArgument(std::string(who) + ": op: avg is not defined for integer dtypes");
  }
}

std::string describe_signature(std::uint64_t signature) {
  static const char* const kNames[kNumCollectives] = {"allreduce", "reduce_scatter", "allgather", "broadcast",
                                                      "reduce"};
  const std::uint64_t fields = signature >> 48 & 0x7fff;
  const int kind = static_cast<int>(fields & 7), root = static_cast<int>(fields >> 3 & 7);
  const int dtype = static_cast<int>(fields >> 7 & 15), op = static_cast<int>(fields >> 11 & 7);
  DType t;
  std::string text = std::string(kind < kNumCollectives ? kNames[kind] : "?") + " of " +
                     std::to_string(signature & ((std::uint64_t{1} << 48) - 1)) + " bytes";
  if (dtype_from_int(dtype, &t)) text += std::string(" of ") + dtype_name(t);
  const auto c = static_cast<Collective>(kind);
  if (!moves_only(c) && op <= static_cast<int>(ReduceOp::kAvg)) {
    text += std::string(", op ") + reduce_op_name(static_cast<ReduceOp>(op));
  }
  if (c == Collective::kBroadcast || c == Collective::kReduce) text += ", root " + std::to_string(root);
  if (fields >> 14 & 1) text += ", read in place";
  return text;
}

std::string describe_failure(const LaneStatus& s, double timeout_s) {
  const std::string who = "rank " + std::to_string(s.waiter) + ", lane " + std::to_string(s.lane);
  if (s.failed == kDisagreed) {
    return who + ": rank " + std::to_string(s.from) + " called " + describe_signature(s.theirs) + " where rank " +
           std::to_string(s.waiter) + " called " + describe_signature(s.mine) + " (round " +
           std::to_string(s.token / 4) + ")";
  }
  const char* phase = s.token % 4 == kStaged ? "staged" : s.token % 4 == kReduced ? "reduced" : "done";
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%g", timeout_s);
  return who + " waited " + seconds + " s for rank " + std::to_string(s.from) + " to finish phase '" + phase +
         "' of round " + std::to_string(s.token / 4);
}

void run_host_lanes(const std::vector<std::vector<const void*>>& inputs, const std::vector<std::vector<void*>>& outputs,
                    std::size_t bytes, DType dtype, ReduceOp op, const HostLanesOptions& options) {
  if (inputs.empty()) return;
  const std::size_t ranks = inputs[0].size();
  if (ranks < 1 || ranks > static_cast<std::size_t>(kMaxRanks)) {
    throw InvalidArgument("run_host_lanes: ranks: expected 1 to " + std::to_string(kMaxRanks) + ", got " +
                          std::to_string(ranks));
  }
  if (options.lanes < 1 || options.lanes > kMaxLanes) {
    throw InvalidArgument("run_host_lanes: lanes: expected 1 to " + std::to_string(kMaxLanes) + ", got " +
                          std::to_string(options.lanes));
  }
  const std::size_t staging = options.staging_bytes / kVector * kVector;
  if (staging == 0) throw InvalidArgument("run_host_lanes: staging_bytes: expected at least 16");
  if (bytes % dtype_size(dtype) != 0) throw InvalidArgument("run_host_lanes: bytes: not a whole number of elements");
  const LaneElements elements = lane_elements(options.kind, dtype, op);
  check_supported(elements.dtype, elements.op, "run_host_lanes");
  if (outputs.size() != inputs.size()) throw InvalidArgument("run_host_lanes: one output list per call");
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].size() != ranks || outputs[i].size() != ranks) {
      throw InvalidArgument("run_host_lanes: every call has one input and one output per rank");
    }
  }
  // Staging buffers 16-byte aligned (as cudaMalloc's are), flags zero: no round yet.
  std::vector<std::unique_ptr<std::uint64_t[]>> staging_memory, flag_memory;
  Peers peers;
  peers.staging_bytes = staging;
  peers.ranks = static_cast<int>(ranks);
  peers.lanes = options.lanes;
  Call shape;  // what every call has in common
  shape.kind = options.kind;
  shape.root = options.root;
  shape.bytes = bytes;
  shape.shots = options.shots;
  if (const char* why = invalid(peers, shape)) throw InvalidArgument(std::string("run_host_lanes: ") + why);
  shape.direct = options.direct;  // each call's arrays checked below
  shape.signature = call_signature(shape, static_cast<int>(dtype), static_cast<int>(op));
  for (std::size_t r = 0; r < ranks; ++r) {
    staging_memory.emplace_back(new std::uint64_t[staging / sizeof(std::uint64_t)]());
    flag_memory.emplace_back(new std::uint64_t[kFlagWords]());
    peers.staging[r] = reinterpret_cast<char*>(staging_memory.back().get());
    peers.flags[r] = flag_memory.back().get();
  }
  // Each rank's calls, their sequence numbers counted as the communicator would.
  std::vector<Peers> views(ranks, peers);
  std::vector<std::vector<Call>> calls(ranks);
  for (std::size_t r = 0; r < ranks; ++r) {
    views[r].rank = static_cast<int>(r);
    std::uint64_t seq = 1;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      Call c = shape;
      c.input = static_cast<const char*>(inputs[i][r]);
      c.output = static_cast<char*>(outputs[i][r]);
      for (std::size_t q = 0; q < ranks && c.direct; ++q) {
        c.inputs[q] = static_cast<const char*>(inputs[i][q]);
        c.outputs[q] = static_cast<char*>(outputs[i][q]);
      }
      if (const char* why = invalid(views[r], c)) throw InvalidArgument(std::string("run_host_lanes: ") + why);
      c.first_seq = seq;
      calls[r].push_back(c);
      seq += rounds(c.kind, bytes, staging, peers.ranks);
    }
  }
  LaneStatus status{};
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < ranks; ++r) {
    if (static_cast<int>(r) == options.absent_rank) continue;
    for (int lane = 0; lane < options.lanes; ++lane) {
      threads.emplace_back([&, r, lane] {
        LaneThread work{views[r], calls[r], lane, options.timeout_s, &status};
        el::with_elements(elements.dtype, elements.op, work);
      });
    }
  }
  for (auto& t : threads) t.join();
  if (status.failed) {
    const std::string what = "collex: CUDA IPC lanes (host stand-in): " + describe_failure(status, options.timeout_s);
    if (status.failed == kDisagreed) throw CollectiveMismatch(what);
    throw CollectiveTimeout(what);
  }
}

void run_host_lane_rank(const Peers& peers, const Call& call, DType dtype, ReduceOp op, double timeout_s,
                        LaneStatus* status) {
  if (const char* why = invalid(peers, call)) throw InvalidArgument(std::string("run_host_lane_rank: ") + why);
  const LaneElements elements = lane_elements(call.kind, dtype, op);
  check_supported(elements.dtype, elements.op, "run_host_lane_rank");
  std::vector<Call> calls{call};
  calls[0].signature = call_signature(call, static_cast<int>(dtype), static_cast<int>(op));
  std::vector<std::thread> threads;
  for (int lane = 0; lane < peers.lanes; ++lane) {
    threads.emplace_back([&, lane] {
      LaneThread work{peers, calls, lane, timeout_s, status};
      el::with_elements(elements.dtype, elements.op, work);
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace collex::ipc
