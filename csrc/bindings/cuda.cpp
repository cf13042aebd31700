// collex._cuda: the optional CUDA module, built when CMake finds the CUDA toolkit
// and imported only when a CUDA array reaches collex. It moves bytes; the Python
// layer (collex/cuda/) decides what goes where.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "collex/device/cuda_memory.h"
#if defined(COLLEX_CUDA_KERNELS)
#include "bindings/lane_arguments.h"
#include "collex/kernels/cuda/compress.h"
#include "collex/kernels/cuda/reduce_peers.h"
#include "collex/transport/cuda_ipc/device_lanes.h"
#include "collex/transport/cuda_ipc/device_turns.h"
#endif

namespace py = pybind11;
using collex::cuda::Event;
using collex::cuda::PeerDeviceBuffer;
using collex::cuda::PinnedBuffer;
using collex::cuda::SharedDeviceBuffer;
using collex::cuda::Stream;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "collex's CUDA module: copies, pinned host memory, IPC-shared device memory, the reduction kernel";
  m.def("device_count", &collex::cuda::device_count);
  m.def("pointer_device", &collex::cuda::pointer_device, py::arg("address"));
  m.def("copy_async", &collex::cuda::copy_async, py::arg("dst"), py::arg("src"), py::arg("bytes"), py::arg("stream"),
        py::arg("device"));
  m.def("copy", &collex::cuda::copy, py::arg("dst"), py::arg("src"), py::arg("bytes"), py::arg("stream"),
        py::arg("device"), py::call_guard<py::gil_scoped_release>());
  m.def("synchronize", &collex::cuda::synchronize, py::arg("stream"), py::arg("device"),
        py::call_guard<py::gil_scoped_release>());
  py::class_<SharedDeviceBuffer>(m, "SharedDeviceBuffer")
      .def(py::init<std::size_t, int, bool>(), py::arg("bytes"), py::arg("device"), py::arg("zeroed") = true)
      .def_property_readonly("address", &SharedDeviceBuffer::address)
      .def_property_readonly("bytes", &SharedDeviceBuffer::bytes)
      .def("handle", [](const SharedDeviceBuffer& b) { return py::bytes(b.handle()); });
  m.def(
      "allocation_of",
      [](std::uintptr_t address) {
        const collex::cuda::Allocation a = collex::cuda::allocation_of(address);
        return py::make_tuple(a.base, a.bytes);
      },
      py::arg("address"), "(base, bytes) of the device allocation holding `address`.");
  m.def(
      "ipc_handle", [](std::uintptr_t base) { return py::bytes(collex::cuda::ipc_handle(base)); }, py::arg("base"),
      "The CUDA IPC handle of the allocation at `base`, for a peer's PeerDeviceBuffer.");
  py::class_<PeerDeviceBuffer>(m, "PeerDeviceBuffer")
      .def(py::init([](py::bytes handle, int device) {
             return std::make_unique<PeerDeviceBuffer>(std::string(handle), device);
           }),
           py::arg("handle"), py::arg("device"))
      .def_property_readonly("address", &PeerDeviceBuffer::address);
#if defined(COLLEX_CUDA_KERNELS)
  // out = the rank-ordered reduction of the buffers at `sources` (n elements each).
  m.def(
      "reduce_peers",
      [](std::uintptr_t out, const std::vector<std::uintptr_t>& sources, std::size_t n, int dtype, int op,
         std::uintptr_t stream, int device) {
        if (dtype < 0 || dtype >= collex::kNumDTypes || op < 0 || op > static_cast<int>(collex::ReduceOp::kAvg))
          throw py::value_error("collex._cuda.reduce_peers: bad dtype or op code");
        const auto t = static_cast<collex::DType>(dtype);
        const auto o = static_cast<collex::ReduceOp>(op);
        if (sources.empty() || sources.size() > static_cast<std::size_t>(collex::cuda::kMaxPeers))
          throw py::value_error("collex._cuda.reduce_peers: between 1 and 32 sources");
        collex::cuda::Sources src;
        src.count = static_cast<int>(sources.size());
        for (std::size_t r = 0; r < sources.size(); ++r) src.at[r] = reinterpret_cast<const void*>(sources[r]);
        collex::cuda::reduce_peers(reinterpret_cast<void*>(out), src, n, t, o, stream, device);
      },
      py::arg("out"), py::arg("sources"), py::arg("n"), py::arg("dtype"), py::arg("op"), py::arg("stream"),
      py::arg("device"), py::call_guard<py::gil_scoped_release>());
  // One collective of the lane protocol (transport/cuda_ipc/lanes.h), queued on
  // `stream`: staging[r] and flags[r] are rank r's buffers as mapped here;
  // with inputs and outputs (rank r's arrays as mapped here) a direct call.
  m.def(
      "lanes_launch",
      [](int collective, const std::vector<std::uintptr_t>& staging, const std::vector<std::uintptr_t>& flags,
         std::size_t staging_bytes, int rank, int lanes, int threads, std::uintptr_t input, std::uintptr_t output,
         std::size_t bytes, std::uint64_t first_seq, int shots, int root, int dtype, int op, double timeout_s,
         std::uintptr_t status, std::uintptr_t stream, int device, const std::vector<std::uintptr_t>& inputs,
         const std::vector<std::uintptr_t>& outputs) {
        namespace ipc = collex::ipc;
        if (dtype < 0 || dtype >= collex::kNumDTypes || op < 0 || op > static_cast<int>(collex::ReduceOp::kAvg))
          throw py::value_error("collex._cuda.lanes_launch: bad dtype or op code");
        const ipc::Peers peers = collex::bindings::lane_peers(staging, flags, staging_bytes, rank, lanes);
        ipc::Call call = collex::bindings::lane_call(collective, input, output, bytes, first_seq, shots, root);
        collex::bindings::lane_direct(call, inputs, outputs, peers.ranks);
        collex::cuda::select_device(device);
        ipc::launch_lanes(peers, call, static_cast<collex::DType>(dtype), static_cast<collex::ReduceOp>(op), threads,
                          timeout_s, reinterpret_cast<ipc::LaneStatus*>(status), stream);
      },
      py::arg("collective"), py::arg("staging"), py::arg("flags"), py::arg("staging_bytes"), py::arg("rank"),
      py::arg("lanes"), py::arg("threads"), py::arg("input"), py::arg("output"), py::arg("bytes"), py::arg("first_seq"),
      py::arg("shots"), py::arg("root"), py::arg("dtype"), py::arg("op"), py::arg("timeout"), py::arg("status"),
      py::arg("stream"), py::arg("device"), py::arg("inputs") = std::vector<std::uintptr_t>(),
      py::arg("outputs") = std::vector<std::uintptr_t>(), py::call_guard<py::gil_scoped_release>());
  // One part of a round of a turn (transport/cuda_ipc/turns.h: 0 stages, 1
  // reads) queued on `stream`: staging[r] is rank r's staging buffer as mapped
  // here; with inputs and outputs a direct call.
  m.def(
      "turns_launch",
      [](int part, int collective, const std::vector<std::uintptr_t>& staging, std::size_t staging_bytes, int rank,
         int threads, std::uintptr_t input, std::uintptr_t output, std::size_t bytes, std::uint64_t round, int root,
         int dtype, int op, std::uintptr_t stream, int device, const std::vector<std::uintptr_t>& inputs,
         const std::vector<std::uintptr_t>& outputs) {
        namespace ipc = collex::ipc;
        if (dtype < 0 || dtype >= collex::kNumDTypes || op < 0 || op > static_cast<int>(collex::ReduceOp::kAvg))
          throw py::value_error("collex._cuda.turns_launch: bad dtype or op code");
        const ipc::Peers peers = collex::bindings::lane_peers(staging, staging, staging_bytes, rank, 1);
        ipc::Call call = collex::bindings::lane_call(collective, input, output, bytes, 1, 2, root);
        collex::bindings::lane_direct(call, inputs, outputs, peers.ranks);
        collex::cuda::select_device(device);
        ipc::launch_turn(peers, call, collex::bindings::turn_part_arg(part), round, static_cast<collex::DType>(dtype),
                         static_cast<collex::ReduceOp>(op), threads, stream);
      },
      py::arg("part"), py::arg("collective"), py::arg("staging"), py::arg("staging_bytes"), py::arg("rank"),
      py::arg("threads"), py::arg("input"), py::arg("output"), py::arg("bytes"), py::arg("round"), py::arg("root"),
      py::arg("dtype"), py::arg("op"), py::arg("stream"), py::arg("device"),
      py::arg("inputs") = std::vector<std::uintptr_t>(), py::arg("outputs") = std::vector<std::uintptr_t>(),
      py::call_guard<py::gil_scoped_release>());
  m.def("lanes_resident", &collex::ipc::lanes_resident, py::arg("threads"), py::arg("device"),
        "How many lanes (blocks of `threads` threads) of the lanes' kernels `device` runs at once.");
  m.def(
      "lanes_rounds",
      [](int collective, std::size_t bytes, std::size_t staging_bytes, int ranks) {
        return collex::ipc::rounds(static_cast<collex::ipc::Collective>(collective), bytes, staging_bytes, ranks);
      },
      py::arg("collective"), py::arg("bytes"), py::arg("staging_bytes"), py::arg("ranks"),
      "How many rounds (sequence numbers) a collective of `bytes` (as in lanes.h's Call) takes through staging "
      "buffers of `staging_bytes` among `ranks` ranks.");
  // GradientReducer's compression on the GPU (kernels/cuda/compress.h): every
  // address is device memory; `segments` holds `count` (grad, count, offset)
  // triples of uint64; amax 0: none (bf16).
  using collex::cuda::Segment;
  m.def(
      "bucket_amax",
      [](std::uintptr_t segments, int count, std::uintptr_t residual, std::uintptr_t amax, std::uintptr_t stream,
         int device) {
        collex::cuda::bucket_amax(reinterpret_cast<const Segment*>(segments), count,
                                  reinterpret_cast<const float*>(residual), reinterpret_cast<float*>(amax), stream,
                                  device);
      },
      py::arg("segments"), py::arg("count"), py::arg("residual"), py::arg("amax"), py::arg("stream"),
      py::arg("device"));
  m.def(
      "bucket_pack",
      [](std::uintptr_t segments, int count, std::uintptr_t wire, std::uintptr_t residual, std::uintptr_t amax,
         int ranks, bool fp16, std::uintptr_t stream, int device) {
        collex::cuda::bucket_pack(reinterpret_cast<const Segment*>(segments), count,
                                  reinterpret_cast<std::uint16_t*>(wire), reinterpret_cast<float*>(residual),
                                  reinterpret_cast<const float*>(amax), ranks, fp16, stream, device);
      },
      py::arg("segments"), py::arg("count"), py::arg("wire"), py::arg("residual"), py::arg("amax"), py::arg("ranks"),
      py::arg("fp16"), py::arg("stream"), py::arg("device"));
  m.def(
      "bucket_unpack",
      [](std::uintptr_t segments, int count, std::uintptr_t wire, std::uintptr_t amax, int ranks, bool fp16,
         std::uintptr_t stream, int device) {
        collex::cuda::bucket_unpack(reinterpret_cast<const Segment*>(segments), count,
                                    reinterpret_cast<const std::uint16_t*>(wire), reinterpret_cast<const float*>(amax),
                                    ranks, fp16, stream, device);
      },
      py::arg("segments"), py::arg("count"), py::arg("wire"), py::arg("amax"), py::arg("ranks"), py::arg("fp16"),
      py::arg("stream"), py::arg("device"));
  m.attr("LANE_MAX_RANKS") = collex::ipc::kMaxRanks;
  m.attr("LANE_MAX_LANES") = collex::ipc::kMaxLanes;
  m.attr("LANE_FLAG_WORDS") = collex::ipc::kFlagWords;
  m.attr("has_kernels") = true;
#else
  m.attr("has_kernels") = false;
#endif
  m.def(
      "device_identity", [](int device) { return py::bytes(collex::cuda::device_identity(device)); }, py::arg("device"),
      "The device's UUID (16 bytes): ranks with the same one share a GPU.");
  py::class_<Event>(m, "Event")
      .def(py::init<int, bool>(), py::arg("device"), py::arg("interprocess") = false)
      .def_static(
          "opened", [](py::bytes handle, int device) { return std::make_unique<Event>(std::string(handle), device); },
          py::arg("handle"), py::arg("device"), "A peer process's interprocess Event, opened by its handle.")
      .def("handle", [](const Event& e) { return py::bytes(e.handle()); })
      .def("record", &Event::record, py::arg("stream"))
      .def("synchronize", &Event::synchronize, py::call_guard<py::gil_scoped_release>())
      .def("done", &Event::done)
      .def("order_before", &Event::order_before, py::arg("stream"))
      .def_property_readonly("device", &Event::device);
  py::class_<Stream>(m, "Stream")
      .def(py::init<int>(), py::arg("device"))
      .def_property_readonly("handle", &Stream::handle)
      .def_property_readonly("device", &Stream::device);
  py::class_<PinnedBuffer>(m, "PinnedBuffer", py::buffer_protocol())
      .def(py::init<std::size_t>(), py::arg("bytes"))
      .def_property_readonly("address",
                             [](const PinnedBuffer& b) { return reinterpret_cast<std::uintptr_t>(b.data()); })
      .def_property_readonly("bytes", &PinnedBuffer::bytes)
      .def_property_readonly("device_address", &PinnedBuffer::device_address)
      .def_buffer([](PinnedBuffer& b) {
        return py::buffer_info(b.data(), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(b.bytes())}, {1});
      });
}
