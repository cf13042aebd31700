#include "collex/transport/cuda_ipc/host_lanes.h"

#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "collex/common/errors.h"
#include "collex/kernels/combine.h"

namespace collex::ipc {
namespace {

using Clock = std::chrono::steady_clock;
namespace el = kernels::elements;

const char* phase_name(std::uint64_t value) {
  switch (value % 4) {
    case kStaged: return "staged";
    case kReduced: return "reduced";
    default: return "done";
  }
}

// The first failure of any thread, for the caller to raise.
struct Failures {
  std::mutex mutex;
  std::string first;
  void add(const std::string& text) {
    std::lock_guard<std::mutex> lock(mutex);
    if (first.empty()) first = text;
  }
};

// A lane on one host thread: the thread is the whole CUDA block, so the
// block's barriers are nothing and it is its own leader.
template <typename Tr, ReduceOp Op>
class HostLane {
 public:
  HostLane(int rank, int lane, double timeout_s, Failures& failures)
      : rank_(rank), lane_(lane), timeout_(std::chrono::duration<double>(timeout_s)), failures_(failures) {}

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
    failures_.add("collex: CUDA IPC lanes (host stand-in): rank " + std::to_string(rank_) + ", lane " +
                  std::to_string(lane_) + " waited " + std::to_string(timeout_.count()) + " s for rank " +
                  std::to_string(from) + " to finish phase '" + phase_name(value) + "' of round " +
                  std::to_string(value / 4));
    return false;
  }

 private:
  int rank_;
  int lane_;
  std::chrono::duration<double> timeout_;
  Failures& failures_;
};

// Picks nothing: asks whether the dtype and op have a kernel at all.
struct Supported {
  template <typename Tr, ReduceOp Op>
  void run() {}
};

// One (rank, lane) thread's work: every call, in order.
struct LaneThread {
  const std::vector<std::vector<const void*>>& inputs;
  const std::vector<std::vector<void*>>& outputs;
  std::size_t bytes;
  const Peers& peers;
  Shots shots;
  int lane;
  double timeout_s;
  Failures& failures;

  template <typename Tr, ReduceOp Op>
  void run() {
    HostLane<Tr, Op> ctx(peers.rank, lane, timeout_s, failures);
    std::uint64_t seq = 1;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      Call c;
      c.input = static_cast<const char*>(inputs[i][static_cast<std::size_t>(peers.rank)]);
      c.output = static_cast<char*>(outputs[i][static_cast<std::size_t>(peers.rank)]);
      c.bytes = bytes;
      c.first_seq = seq;
      c.shots = shots;
      if (!run_lane(peers, c, lane, ctx)) return;
      seq += rounds(bytes, peers.staging_bytes);
    }
  }
};

}  // namespace

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
  Supported supported;
  if (!el::with_elements(dtype, op, supported)) {
    throw InvalidArgument("run_host_lanes: op: avg is not defined for integer dtypes");
  }
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
  std::vector<Peers> views(ranks, peers);
  Failures failures;
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < ranks; ++r) {
    views[r].rank = static_cast<int>(r);
    if (static_cast<int>(r) == options.absent_rank) continue;
    for (int lane = 0; lane < options.lanes; ++lane) {
      threads.emplace_back([&, r, lane] {
        LaneThread work{inputs, outputs, bytes, views[r], options.shots, lane, options.timeout_s, failures};
        el::with_elements(dtype, op, work);
      });
    }
  }
  for (auto& t : threads) t.join();
  if (!failures.first.empty()) throw CollectiveTimeout(failures.first);
}

}  // namespace collex::ipc
