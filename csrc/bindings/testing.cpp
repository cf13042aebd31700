// Hooks for tests, named with a leading underscore: the kernels alone, one
// rank's schedule as data, the mid-size copy chooser driven by given times,
// algorithms run on ranks that are threads of this process, the huge-page
// backing of memory that peers read, and the CUDA IPC protocol's CPU stand-in.
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "bindings/lane_arguments.h"
#include "collex/algorithms/barrier.h"
#include "collex/algorithms/copy_ways.h"
#include "collex/algorithms/ring.h"
#include "collex/algorithms/tree.h"
#include "collex/common/errors.h"
#include "collex/core/in_process.h"
#include "collex/kernels/compress_segments.h"
#include "collex/kernels/copy.h"
#include "collex/kernels/reduce.h"
#include "collex/transport/cuda_ipc/host_lanes.h"
#include "collex/transport/cuda_ipc/host_turns.h"
#include "collex/transport/shm/huge_pages.h"
#include "collex/transport/shm/shared_pages.h"

namespace collex::bindings {
namespace {

// Drives the mid-size copy chooser as one rank alone (its times then stand for
// every rank's), for tests of its decisions: `seconds(call, slots)` gives each
// call's time. Returns the way each call took (True: the slots, or ordinary
// stores) and the decisions, as (call, line). `kind`: "midsize" (broadcasts),
// "staged" (staged broadcasts' slot writes) or "large" (all-reduces' results).
py::tuple copy_ways_run(std::size_t bytes, int calls, const py::function& seconds, const std::string& kind,
                        bool fixed) {
  CopyWays ways;
  if (fixed) ways.fix(true);
  py::list taken, decisions;
  for (int call = 0; call < calls; ++call) {
    const CopyWays::Pick pick = kind == "staged"  ? ways.pick(direct::Staged::kBroadcast, bytes)
                                : kind == "large" ? ways.pick(direct::Large::kAllreduce, bytes)
                                                  : ways.pick(direct::Streamable::kBroadcast, bytes);
    taken.append(pick.slots);
    if (pick.size_class < 0) continue;
    ways.record(pick, bytes, seconds(call, pick.slots).cast<double>());
    if (!pick.settle) continue;
    const std::string line = ways.settle(pick, ways.mean(pick));
    if (!line.empty()) decisions.append(py::make_tuple(call, line));
  }
  return py::make_tuple(taken, decisions);
}

// One rank's schedule as tuples (kind, channel, round, peer, offset, count, from_input), for
// tests that check the algorithms without any transport.
py::list schedule_steps(const std::string& name, int rank, int size, std::size_t count, std::size_t chunk, int root,
                        bool average) {
  Schedule s;
  if (name == "ring_allreduce") {
    ring::allreduce(s, rank, size, count, chunk, average);
  } else if (name == "ring_reduce_scatter") {
    ring::reduce_scatter(s, rank, size, count, chunk, average);
  } else if (name == "ring_allgather") {
    ring::allgather(s, rank, size, count, chunk);
  } else if (name == "ring_broadcast") {
    ring::broadcast(s, rank, size, root, count, chunk);
  } else if (name == "tree_allreduce") {
    tree::allreduce(s, rank, size, count, chunk, average);
  } else if (name == "tree_reduce") {
    tree::reduce(s, rank, size, tree::Layout::kRotated, root, {0, count}, chunk, average);
  } else if (name == "tree_broadcast") {
    tree::broadcast(s, rank, size, tree::Layout::kRotated, root, {0, count}, chunk);
  } else if (name == "barrier") {
    barrier::dissemination(s, rank, size);
  } else {
    throw InvalidArgument("unknown schedule " + name);
  }
  static const char* kinds[] = {"send", "recv_reduce", "recv_copy", "divide"};
  py::list out;
  for (const Step& st : s.steps) {
    out.append(py::make_tuple(kinds[static_cast<int>(st.kind)], st.channel, st.round, st.peer, st.offset, st.count,
                              st.from_input));
  }
  return out;
}

// Runs `algo` for `collective` on as many ranks as `inputs` has addresses, each
// a thread of this process: rank r reads inputs[r] and writes outputs[r]
// (`count` elements of x; of out for reduce-scatter, which reads size times as many).
void run_in_threads_hook(const std::string& algo, const std::string& collective,
                         const std::vector<std::uintptr_t>& inputs, const std::vector<std::uintptr_t>& outputs,
                         std::size_t count, int dtype, int op, int root, std::size_t chunk_bytes, double timeout_s) {
  static const std::pair<const char*, Collective> kinds[] = {{"allreduce", Collective::kAllreduce},
                                                             {"broadcast", Collective::kBroadcast},
                                                             {"reduce", Collective::kReduce},
                                                             {"allgather", Collective::kAllgather},
                                                             {"reduce_scatter", Collective::kReduceScatter},
                                                             {"barrier", Collective::kBarrier}};
  Collective kind = Collective::kAllreduce;
  bool known = false;
  for (const auto& k : kinds)
    if (collective == k.first) kind = k.second, known = true;
  if (!known) throw InvalidArgument("unknown collective " + collective);
  Algo a = Algo::kAuto;
  if (algo == "dissemination") {
    a = Algo::kDissemination;
  } else if (!algo_from_string(algo, &a)) {
    throw InvalidArgument("unknown algo " + algo);
  }
  if (inputs.size() != outputs.size() || inputs.empty()) throw InvalidArgument("one input and one output per rank");
  const std::size_t size = inputs.size();
  std::vector<CollectiveCall> calls(size);
  for (std::size_t r = 0; r < size; ++r) {
    CollectiveCall& c = calls[r];
    c.kind = kind;
    c.op = make_op(op);
    c.root = root;
    const std::size_t in_count = kind == Collective::kReduceScatter ? count * size : count;
    const std::size_t out_count = kind == Collective::kAllgather ? count * size : count;
    c.in = make_buffer(inputs[r], in_count, dtype);
    c.out = make_buffer(outputs[r], out_count, dtype);
    if (kind == Collective::kBroadcast) c.out = c.in;  // in place, as the communicator calls it
  }
  InProcessOptions options;
  options.chunk_bytes = chunk_bytes;
  options.timeout_s = timeout_s;
  py::gil_scoped_release release;
  run_in_threads(a, calls, options);
}

// The CUDA IPC collectives' protocol on host threads (transport/cuda_ipc/host_lanes.h):
// inputs[call][rank] and outputs[call][rank] are addresses, `bytes` as in ipc::Call.
void ipc_lanes_hook(int collective, const std::vector<std::vector<std::uintptr_t>>& inputs,
                    const std::vector<std::vector<std::uintptr_t>>& outputs, std::size_t bytes, int dtype, int op,
                    int lanes, std::size_t staging_bytes, int shots, int root, double timeout_s, int absent_rank,
                    bool direct) {
  std::vector<std::vector<const void*>> in;
  std::vector<std::vector<void*>> out;
  for (const auto& call : inputs) {
    in.emplace_back();
    for (std::uintptr_t a : call) in.back().push_back(reinterpret_cast<const void*>(a));
  }
  for (const auto& call : outputs) {
    out.emplace_back();
    for (std::uintptr_t a : call) out.back().push_back(reinterpret_cast<void*>(a));
  }
  const ipc::Call shape = lane_call(collective, 0, 0, bytes, 1, shots, root);  // checks the codes
  ipc::HostLanesOptions options;
  options.kind = shape.kind;
  options.root = root;
  options.lanes = lanes;
  options.staging_bytes = staging_bytes;
  options.shots = shape.shots;
  options.timeout_s = timeout_s;
  options.absent_rank = absent_rank;
  options.direct = direct;
  const DType dt = make_buffer(0, 0, dtype).dtype;
  const ReduceOp reduce_op = make_op(op);
  py::gil_scoped_release release;
  ipc::run_host_lanes(in, out, bytes, dt, reduce_op, options);
}

// One rank's part of a collective of the lane protocol on host threads, its
// peers other processes: staging[r] and flags[r] lie in memory all ranks map.
// The binding of the CUDA module's lanes_launch, with `status` likewise.
void ipc_lane_rank_hook(int collective, const std::vector<std::uintptr_t>& staging,
                        const std::vector<std::uintptr_t>& flags, std::size_t staging_bytes, int rank, int lanes,
                        std::uintptr_t input, std::uintptr_t output, std::size_t bytes, std::uint64_t first_seq,
                        int shots, int root, int dtype, int op, double timeout_s, std::uintptr_t status,
                        const std::vector<std::uintptr_t>& inputs, const std::vector<std::uintptr_t>& outputs) {
  const ipc::Peers peers = lane_peers(staging, flags, staging_bytes, rank, lanes);
  ipc::Call call = lane_call(collective, input, output, bytes, first_seq, shots, root);
  lane_direct(call, inputs, outputs, peers.ranks);
  const DType dt = make_buffer(0, 0, dtype).dtype;
  const ReduceOp reduce_op = make_op(op);
  py::gil_scoped_release release;
  ipc::run_host_lane_rank(peers, call, dt, reduce_op, timeout_s, reinterpret_cast<ipc::LaneStatus*>(status));
}

// The turns (transport/cuda_ipc/turns.h) of one collective over every rank in
// this process, round by round: rank r's arrays at inputs[r] and outputs[r].
void ipc_turns_hook(int collective, const std::vector<std::uintptr_t>& inputs,
                    const std::vector<std::uintptr_t>& outputs, std::size_t bytes, int dtype, int op, int root,
                    std::size_t staging_bytes, bool direct, bool reverse) {
  const ipc::Call shape = lane_call(collective, 0, 0, bytes, 1, 2, root);  // checks the codes
  std::vector<const void*> in;
  std::vector<void*> out;
  for (std::uintptr_t a : inputs) in.push_back(reinterpret_cast<const void*>(a));
  for (std::uintptr_t a : outputs) out.push_back(reinterpret_cast<void*>(a));
  const DType dt = make_buffer(0, 0, dtype).dtype;
  const ReduceOp reduce_op = make_op(op);
  py::gil_scoped_release release;
  ipc::run_host_turns(shape.kind, in, out, bytes, dt, reduce_op, root, staging_bytes, direct, reverse);
}

// One rank's kernel of a turn on the host, its peers other processes whose
// staging buffers (and, direct, arrays) lie in memory all map: the CUDA
// module's turns_launch's stand-in.
void ipc_turn_hook(int part, int collective, const std::vector<std::uintptr_t>& staging, std::size_t staging_bytes,
                   int rank, std::uintptr_t input, std::uintptr_t output, std::size_t bytes, std::uint64_t round,
                   int root, int dtype, int op, const std::vector<std::uintptr_t>& inputs,
                   const std::vector<std::uintptr_t>& outputs) {
  const ipc::Peers peers = lane_peers(staging, staging, staging_bytes, rank, 1);
  ipc::Call call = lane_call(collective, input, output, bytes, 1, 2, root);
  lane_direct(call, inputs, outputs, peers.ranks);
  const DType dt = make_buffer(0, 0, dtype).dtype;
  const ReduceOp reduce_op = make_op(op);
  py::gil_scoped_release release;
  ipc::run_host_turn(peers, call, turn_part_arg(part), round, dt, reduce_op);
}

// The CPU stand-in of GradientReducer's compression kernels on the GPU
// (kernels/cuda/compress.h): the same element arithmetic over the same
// segments, in host memory, one element after another.
void bucket_compress_hook(const std::string& what, std::uintptr_t segments_address, int count,
                          std::uintptr_t wire_address, std::uintptr_t residual_address, std::uintptr_t amax_address,
                          int ranks, bool fp16) {
  namespace cp = kernels::segments;
  const auto* segments = reinterpret_cast<const cp::Segment*>(segments_address);
  auto* wire = reinterpret_cast<std::uint16_t*>(wire_address);
  auto* residual = reinterpret_cast<float*>(residual_address);
  auto* amax = reinterpret_cast<float*>(amax_address);
  if (what == "amax") {
    float best = 0.0f;
    for (int k = 0; k < count; ++k) {
      const cp::Segment& s = segments[k];
      for (std::size_t i = 0; i < s.count; ++i) {
        const float m =
            cp::magnitude(reinterpret_cast<const float*>(s.grad), residual ? residual + s.offset : nullptr, i);
        best = m != m || best != best ? std::nanf("") : (m > best ? m : best);
      }
    }
    *amax = best;
    return;
  }
  if (what != "pack" && what != "unpack") throw InvalidArgument("what: amax, pack or unpack");
  const float scale = amax != nullptr ? cp::wire_scale(fp16, *amax, ranks) : 1.0f;
  for (int k = 0; k < count; ++k) {
    const cp::Segment& s = segments[k];
    auto* grad = reinterpret_cast<float*>(s.grad);
    for (std::size_t i = 0; i < s.count; ++i) {
      if (what == "pack") {
        cp::pack_element(wire + s.offset, grad, residual ? residual + s.offset : nullptr, i, scale, fp16);
      } else {
        cp::unpack_element(grad, wire + s.offset, i, 1.0f / (scale * static_cast<float>(ranks)), fp16);
      }
    }
  }
}

}  // namespace

void bind_testing(py::module_& m) {
  // The kernels, for tests: dst = a OP b, dst /= divisor, and the copy of results.
  m.def("_kernel_reduce", [](std::uintptr_t dst, std::uintptr_t a, std::uintptr_t b, std::size_t n, int dtype, int op) {
    kernels::reduce(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(b), n,
                    make_buffer(0, 0, dtype).dtype, make_op(op));
  });
  m.def(
      "_kernel_reduce_streaming",
      [](std::uintptr_t dst, std::uintptr_t a, std::uintptr_t b, std::size_t n, int dtype, int op, double divisor) {
        kernels::reduce_streaming(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(a),
                                  reinterpret_cast<const void*>(b), n, make_buffer(0, 0, dtype).dtype, make_op(op),
                                  divisor);
      },
      py::arg("dst"), py::arg("a"), py::arg("b"), py::arg("n"), py::arg("dtype"), py::arg("op"),
      py::arg("divisor") = 1.0);
  m.def("_kernel_divide", [](std::uintptr_t dst, std::size_t n, int dtype, double divisor) {
    kernels::divide(reinterpret_cast<void*>(dst), n, make_buffer(0, 0, dtype).dtype, divisor);
  });
  m.def(
      "_kernel_copy_result",
      [](std::uintptr_t dst, std::uintptr_t src, std::size_t bytes, bool streaming) {
        kernels::copy_result(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes, 0,
                             streaming ? kernels::Stores::kStreaming : kernels::Stores::kBySize);
      },
      py::arg("dst"), py::arg("src"), py::arg("bytes"), py::arg("streaming") = false);
  m.def("_use_kernel_isa", [](const std::string& isa) { return kernels::use_kernel_isa(isa.c_str()); });
  m.def("_use_copy_loop", [](const std::string& name) {
    kernels::CopyLoop loop;
    if (!kernels::copy_loop_from_name(name, &loop)) return false;
    kernels::use_copy_loop(loop);
    return true;
  });

  m.def("_copy_ways_run", &copy_ways_run, py::arg("bytes"), py::arg("calls"), py::arg("seconds"),
        py::arg("kind") = "midsize", py::arg("fixed") = false);
  m.def("_schedule", &schedule_steps, py::arg("name"), py::arg("rank"), py::arg("size"), py::arg("count"),
        py::arg("chunk"), py::arg("root") = 0, py::arg("average") = false);

  m.def("_back_with_huge_pages", [](const std::vector<std::pair<std::uintptr_t, std::size_t>>& spans) {
    std::vector<Span> list;
    for (const auto& [address, bytes] : spans) list.push_back(Span{address, bytes});
    return shm::back_with_huge_pages(list.data(), list.size());
  });

  // (regions, bytes) of this process's memory now on shared pages (shm/shared_pages.h).
  m.def("_shared_pages", [] { return py::make_tuple(shm::shared_count(), shm::shared_bytes()); });

  m.def("_run_in_threads", &run_in_threads_hook, py::arg("algo"), py::arg("collective"), py::arg("inputs"),
        py::arg("outputs"), py::arg("count"), py::arg("dtype"), py::arg("op") = 0, py::arg("root") = 0,
        py::arg("chunk_bytes") = 512 * 1024, py::arg("timeout") = 30.0);
  m.def("_ipc_lanes", &ipc_lanes_hook, py::arg("collective"), py::arg("inputs"), py::arg("outputs"), py::arg("bytes"),
        py::arg("dtype"), py::arg("op") = 0, py::arg("lanes") = 1, py::arg("staging_bytes") = 1 << 20,
        py::arg("shots") = 2, py::arg("root") = 0, py::arg("timeout") = 30.0, py::arg("absent_rank") = -1,
        py::arg("direct") = false);
  m.def("_ipc_lane_rank", &ipc_lane_rank_hook, py::arg("collective"), py::arg("staging"), py::arg("flags"),
        py::arg("staging_bytes"), py::arg("rank"), py::arg("lanes"), py::arg("input"), py::arg("output"),
        py::arg("bytes"), py::arg("first_seq"), py::arg("shots"), py::arg("root"), py::arg("dtype"), py::arg("op"),
        py::arg("timeout"), py::arg("status"), py::arg("inputs") = std::vector<std::uintptr_t>(),
        py::arg("outputs") = std::vector<std::uintptr_t>());
  m.def("_ipc_turns", &ipc_turns_hook, py::arg("collective"), py::arg("inputs"), py::arg("outputs"), py::arg("bytes"),
        py::arg("dtype"), py::arg("op") = 0, py::arg("root") = 0, py::arg("staging_bytes") = 1 << 20,
        py::arg("direct") = false, py::arg("reverse") = false);
  m.def("_ipc_turn", &ipc_turn_hook, py::arg("part"), py::arg("collective"), py::arg("staging"),
        py::arg("staging_bytes"), py::arg("rank"), py::arg("input"), py::arg("output"), py::arg("bytes"),
        py::arg("round"), py::arg("root"), py::arg("dtype"), py::arg("op"),
        py::arg("inputs") = std::vector<std::uintptr_t>(), py::arg("outputs") = std::vector<std::uintptr_t>());
  m.def("_bucket_compress", &bucket_compress_hook, py::arg("what"), py::arg("segments"), py::arg("count"),
        py::arg("wire"), py::arg("residual"), py::arg("amax"), py::arg("ranks"), py::arg("fp16"));
  m.def(
      "_ipc_lane_rounds",
      [](int collective, std::size_t bytes, std::size_t staging_bytes, int ranks) {
        return ipc::rounds(lane_call(collective, 0, 0, bytes, 1, 2, 0).kind, bytes, staging_bytes, ranks);
      },
      py::arg("collective"), py::arg("bytes"), py::arg("staging_bytes"), py::arg("ranks"));
}

}  // namespace collex::bindings
