#include "collex/algorithms/window_runner.h"

#include <array>
#include <chrono>
#include <cstdio>

#include "collex/transport/window.h"

namespace collex {

// Mid-size copies are re-decided while running (CopyWays) unless
// COLLEX_MIDSIZE_COPY forces a way; without cross-memory attach only the slots
// can move them.
WindowRunner::WindowRunner(Window& window, const Settings& settings) : window_(window), settings_(settings) {
  const bool attach = window_.can_read_peers();
  if (attach && settings_.midsize_copy == "auto") {
    if (settings_.debug >= 1)
      std::fprintf(stderr, "collex: [rank %d] mid-size copies: timed both ways while running\n", settings_.rank);
    return;
  }
  copy_ways_.fix(!attach || settings_.midsize_copy == "slots");
  if (settings_.debug >= 1)
    std::fprintf(stderr, "collex: [rank %d] mid-size copies: %s\n", settings_.rank, copy_ways_.describe().c_str());
}

bool WindowRunner::supports(std::size_t staged_bytes) const { return direct::supported(window_, staged_bytes); }

direct::Op WindowRunner::op_for(const CollectiveCall& c, const char* algo, ReduceOp op) {
  direct::Op o;
  o.timeout_s = settings_.timeout_s;
  o.scratch = &pieces_;
  o.in = c.in.data;
  o.out = c.out.data;
  o.count = c.count();
  o.dtype = c.in.dtype;
  o.op = op;
  o.root = c.root;
  o.segments = c.segments;
  o.home = c.home;
  o.print = print_of(c);
  o.label = OpLabel{settings_.rank, collective_name(c.kind), c.seq, algo, c.in.dtype, c.in.bytes()};
  return o;
}

void WindowRunner::begin(direct::Op& o) {
  o.epoch = ++epoch_;
  window_.announce(o.epoch, o.print);
}

void WindowRunner::run(const CollectiveCall& c, const char* algo) {
  direct::Op o = op_for(c, algo, c.op);
  note_label(settings_.debug, o.label);
  if (c.segments) return run_picked(c.kind, o);
  switch (c.kind) {
    case Collective::kAllreduce:
    case Collective::kBroadcast:
    case Collective::kReduce:
    case Collective::kAllgather:
    case Collective::kReduceScatter: return run_picked(c.kind, o);
    case Collective::kBarrier:
    case Collective::kSplit:
    case Collective::kAllocate: begin(o); return direct::barrier(window_, o);
    default: break;
  }
}

void WindowRunner::reduce_to_leader(const CollectiveCall& c, ReduceOp op, const char* algo) {
  direct::Op o = op_for(c, algo, op);
  o.root = 0;
  begin(o);
  direct::reduce(window_, o);  // the result lands on the leader only
}

void WindowRunner::broadcast_from_leader(const CollectiveCall& c, const char* algo) {
  direct::Op o = op_for(c, algo, c.op);
  o.root = 0;
  o.in = o.out = c.out.data;
  run_picked(Collective::kBroadcast, o);
}

void WindowRunner::reduce_own_block(const CollectiveCall& c, ReduceOp op, const char* algo) {
  direct::Op o = op_for(c, algo, op);
  begin(o);
  direct::reduce_own_block(window_, o);
}

void WindowRunner::gather_blocks(const CollectiveCall& c, const char* algo) {
  direct::Op o = op_for(c, algo, c.op);
  o.in = o.out = c.out.data;
  begin(o);
  direct::gather_blocks(window_, o);
}

namespace {

// The way-chooser's names for a collective whose data may move two ways.
direct::Staged staged_kind(Collective kind) {
  switch (kind) {
    case Collective::kBroadcast: return direct::Staged::kBroadcast;
    case Collective::kReduce: return direct::Staged::kReduce;
    case Collective::kAllgather: return direct::Staged::kAllgather;
    case Collective::kReduceScatter: return direct::Staged::kReduceScatter;
    default: return direct::Staged::kAllreduce;
  }
}
direct::Large large_kind(Collective kind, const direct::Op& o) {
  if (o.segments != nullptr) return direct::Large::kSegments;
  switch (kind) {
    case Collective::kBroadcast: return direct::Large::kBroadcast;
    case Collective::kReduce: return direct::Large::kReduce;
    case Collective::kAllgather: return direct::Large::kAllgather;
    case Collective::kReduceScatter: return direct::Large::kReduceScatter;
    default: return direct::Large::kAllreduce;
  }
}
bool streamable(Collective kind, direct::Streamable* as) {
  switch (kind) {
    case Collective::kAllreduce: *as = direct::Streamable::kAllreduce; return true;
    case Collective::kBroadcast: *as = direct::Streamable::kBroadcast; return true;
    case Collective::kAllgather: *as = direct::Streamable::kAllgather; return true;
    default: return false;
  }
}

}  // namespace

void WindowRunner::run_picked(Collective kind, direct::Op& o) {
  // An operation is mid-size, staged whole, or neither; the first two have
  // two ways to move, which copy_ways_ picks and times. A mid-size broadcast
  // of up to direct::kStagedBytes that takes the slots is staged whole, and so
  // has its way of writing the root's slot picked too. One that reads peers in
  // place (a mid-size one that takes that way, or a larger one) has two ways
  // to write its results, picked and timed alike, in classes of their own.
  CopyWays::Pick midsize, stage, stores;
  std::size_t midsize_bytes = 0, stage_bytes = 0, stores_bytes = 0;
  const bool segments = o.segments != nullptr;  // never staged, never through the slots
  direct::Streamable as{};
  if (!segments && streamable(kind, &as)) {
    midsize_bytes = direct::midsize_bytes(window_, as, o);
    midsize = copy_ways_.pick(as, midsize_bytes);
    o.slots_limit = midsize.slots_limit;
  }
  if (!segments && (midsize_bytes == 0 || midsize.slots)) {
    stage_bytes = direct::staged_write_bytes(window_, staged_kind(kind), o);
  }
  if (stage_bytes > 0 && settings_.stage_writes != "auto") {
    o.stream_stage = settings_.stage_writes == "streaming";
  } else if (stage_bytes > 0) {
    stage = copy_ways_.pick(staged_kind(kind), stage_bytes);
    o.stream_stage = !stage.slots;
  }
  pick_result_stores(large_kind(kind, o), o, &stores, &stores_bytes);
  begin(o);
  // Small calls do not read the clock.
  const bool timed = midsize.size_class >= 0 || stage.size_class >= 0 || stores.size_class >= 0;
  const auto start = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  if (segments) {
    direct::allreduce_segments(window_, o);
  } else {
    switch (kind) {
      case Collective::kAllreduce: direct::allreduce(window_, o); break;
      case Collective::kBroadcast: direct::broadcast(window_, o); break;
      case Collective::kReduce: direct::reduce(window_, o); break;
      case Collective::kAllgather: direct::allgather(window_, o); break;
      case Collective::kReduceScatter: direct::reduce_scatter(window_, o); break;
      default: break;
    }
  }
  if (!timed) return;
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  for (const auto& [p, b] :
       {std::pair{midsize, midsize_bytes}, std::pair{stage, stage_bytes}, std::pair{stores, stores_bytes}}) {
    if (p.size_class < 0) continue;
    copy_ways_.record(p, b, took.count());
    if (p.settle) settle_copy_way(p, o.label);
  }
}

void WindowRunner::pick_result_stores(direct::Large kind, direct::Op& o, CopyWays::Pick* pick, std::size_t* bytes) {
  const std::size_t in_place = direct::large_bytes(window_, kind, o);
  if (in_place == 0 || settings_.result_writes == "size") return;
  if (settings_.result_writes != "auto") {
    o.result_stores = settings_.result_writes == "streaming" ? kernels::Stores::kStreaming : kernels::Stores::kOrdinary;
    return;
  }
  const CopyWays::Pick p = copy_ways_.pick(kind, in_place);
  if (p.size_class < 0) return;  // a collective or size that goes by size
  *pick = p;
  *bytes = in_place;
  o.result_stores = p.slots ? kernels::Stores::kOrdinary : kernels::Stores::kStreaming;
}

// Every rank takes the slowest rank's mean time each way in the window just
// ended (a small all-reduce through the window, right after the operation that
// ended it: all ranks are there at once), so that all reach the same decision.
void WindowRunner::settle_copy_way(const CopyWays::Pick& pick, const OpLabel& call) {
  const std::array<double, 2> mine = copy_ways_.mean(pick);
  std::array<double, 2> slowest{};
  direct::Op o;
  o.timeout_s = settings_.timeout_s;
  o.scratch = &pieces_;
  o.in = mine.data();
  o.out = slowest.data();
  o.count = slowest.size();
  o.dtype = DType::kFloat64;
  o.op = ReduceOp::kMax;
  // Part of the call that ended the window, and named so in a timeout.
  o.label =
      OpLabel{settings_.rank, call.collective, call.seq, "direct (copy-way timings)", DType::kFloat64, sizeof slowest};
  o.print = CallPrint{static_cast<std::uint32_t>(Collective::kAllreduce), static_cast<std::uint32_t>(DType::kFloat64),
                      static_cast<std::uint32_t>(ReduceOp::kMax), 0, slowest.size()};
  begin(o);
  direct::allreduce(window_, o);
  const std::string decision = copy_ways_.settle(pick, slowest);
  if (settings_.debug >= 1 && !decision.empty()) {
    std::fprintf(stderr, "collex: [rank %d] %s: %s\n", settings_.rank, CopyWays::decides(pick), decision.c_str());
  }
}

}  // namespace collex
