#include "collex/transport/cuda_ipc/host_lanes.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "collex/common/errors.h"
#include "collex/kernels/combine.h"

namespace collex::ipc {
namespace {

using Clock = std::chrono::steady_clock;
namespace el = kernels::elements;

// A lane on one host thread: the thread is the whole CUDA block, so the
// block's barriers are nothing and it is its own leader.
template <typename Tr, ReduceOp Op>
class HostLane {
 public:
  HostLane(int rank, int lane, double timeout_s, LaneStatus* status)
      : rank_(rank), lane_(lane), timeout_(std::chrono::duration<double>(timeout_s)), status_(status) {}

  void copy(char* dst, const char* src, Range r) {
    if (!r.empty()) std::memcpy(dst + r.begin, src + r.begin, r.end - r.begin);
  }

  void combine(char* out, char* also, const char* const* src, int count, Range r) {
    if (r.empty()) return;
    const std::size_t whole = r.begin + (r.end - r.begin) / kVector * kVector;
    for (std::size_t v = r.begin / kVector; v < whole / kVector; ++v) {
      el::combine_vector<Tr, Op>(out, src, count, v);
    }
    using S = typename Tr::S;
    for (std::size_t e = whole / sizeof(S); e < r.end / sizeof(S); ++e) el::combine_element<Tr, Op>(out, src, count, e);
    if (also != nullptr) std::memcpy(also + r.begin, out + r.begin, r.end - r.begin);
  }

  void sync() {}
  bool sync_and(bool ok) { return ok; }
  bool leader() const { return true; }

  void signal(std::uint64_t* word, std::uint64_t value) { __atomic_store_n(word, value, __ATOMIC_RELEASE); }

  bool wait(const std::uint64_t* word, std::uint64_t value, int from) {
    const Clock::time_point deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout_);
    for (unsigned spin = 1;; ++spin) {
      if (__atomic_load_n(word, __ATOMIC_ACQUIRE) >= value) return true;
      if (spin % 64 == 0) std::this_thread::yield();  // the stand-in runs more threads than cores
      if (spin % 1024 == 0 && Clock::now() > deadline) break;
    }
    std::uint64_t none = 0;
    if (__atomic_compare_exchange_n(&status_->failed, &none, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
      status_->lane = static_cast<std::uint64_t>(lane_);
      status_->from = static_cast<std::uint64_t>(from);
      status_->token = value;
      status_->waiter = static_cast<std::uint64_t>(rank_);
    }
    return false;
  }

 private:
  int rank_;
  int lane_;
  std::chrono::duration<double> timeout_;
  LaneStatus* status_;
};

// Picks nothing: asks whether the dtype and op have a kernel at all.
struct Supported {
  template <typename Tr, ReduceOp Op>
  void run() {}
};

void check_supported(DType dtype, ReduceOp op, const char* who) {
  Supported supported;
  if (!el::with_elements(dtype, op, supported)) {
    throw InvalidArgument(std::string(who) + ": op: avg is not defined for integer dtypes");
  }
}

// One lane's work: its part of every call, in order.
struct LaneThread {
  const Peers& peers;
  const std::vector<Call>& calls;
  int lane;
  double timeout_s;
  LaneStatus* status;

  template <typename Tr, ReduceOp Op>
  void run() {
    HostLane<Tr, Op> ctx(peers.rank, lane, timeout_s, status);
    for (const Call& c : calls) {
      if (!run_lane(peers, c, lane, ctx)) return;
    }
  }
};

}  // namespace

std::string describe_failure(const LaneStatus& s, double timeout_s) {
  const char* phase = s.token % 4 == kStaged ? "staged" : s.token % 4 == kReduced ? "reduced" : "done";
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%g", timeout_s);
  return "rank " + std::to_string(s.waiter) + ", lane " + std::to_string(s.lane) + " waited " + seconds +
         " s for rank " + std::to_string(s.from) + " to finish phase '" + phase + "' of round " +
         std::to_string(s.token / 4);
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
  check_supported(dtype, op, "run_host_lanes");
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
  const std::size_t words = static_cast<std::size_t>(options.lanes) * ranks;
  for (std::size_t r = 0; r < ranks; ++r) {
    staging_memory.emplace_back(new std::uint64_t[staging / sizeof(std::uint64_t)]());
    flag_memory.emplace_back(new std::uint64_t[words]());
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
      Call c;
      c.input = static_cast<const char*>(inputs[i][r]);
      c.output = static_cast<char*>(outputs[i][r]);
      c.bytes = bytes;
      c.first_seq = seq;
      c.shots = options.shots;
      calls[r].push_back(c);
      seq += rounds(bytes, staging);
    }
  }
  LaneStatus status{};
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < ranks; ++r) {
    if (static_cast<int>(r) == options.absent_rank) continue;
    for (int lane = 0; lane < options.lanes; ++lane) {
      threads.emplace_back([&, r, lane] {
        LaneThread work{views[r], calls[r], lane, options.timeout_s, &status};
        el::with_elements(dtype, op, work);
      });
    }
  }
  for (auto& t : threads) t.join();
  if (status.failed) {
    throw CollectiveTimeout("collex: CUDA IPC lanes (host stand-in): " + describe_failure(status, options.timeout_s));
  }
}

void run_host_lane_rank(const Peers& peers, const Call& call, DType dtype, ReduceOp op, double timeout_s,
                        LaneStatus* status) {
  if (peers.ranks < 1 || peers.ranks > kMaxRanks || peers.rank < 0 || peers.rank >= peers.ranks || peers.lanes < 1 ||
      peers.lanes > kMaxLanes || peers.staging_bytes == 0 || peers.staging_bytes % kVector != 0) {
    throw InvalidArgument("run_host_lane_rank: ranks, lanes or staging size outside the protocol's limits");
  }
  check_supported(dtype, op, "run_host_lane_rank");
  const std::vector<Call> calls{call};
  std::vector<std::thread> threads;
  for (int lane = 0; lane < peers.lanes; ++lane) {
    threads.emplace_back([&, lane] {
      LaneThread work{peers, calls, lane, timeout_s, status};
      el::with_elements(dtype, op, work);
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace collex::ipc
