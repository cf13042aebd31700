// Bindings of the fusion room: GradientReducer, plus the bucket assignment and
// the conversion kernels for tests. Arrays arrive as (address, count, dtype
// code), checked by python/collex/_fusion.py, which also keeps them alive.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "bindings/sharing.h"
#include "collex/common/errors.h"
#include "collex/core/communicator.h"
#include "collex/fusion/bucketer.h"
#include "collex/fusion/reducer.h"
#include "collex/kernels/convert.h"

namespace py = pybind11;
using namespace collex;

namespace {

using Guard = py::call_guard<py::gil_scoped_release>;
using ArraySpec = std::tuple<std::uintptr_t, std::size_t, int>;  // address, elements, dtype code

DType dtype_of(int code) {
  DType t;
  if (!dtype_from_int(code, &t)) throw InvalidArgument("collex: unknown dtype code " + std::to_string(code));
  return t;
}

fusion::Compression compression_of(const std::string& name) {
  if (name == "none") return fusion::Compression::kNone;
  if (name == "fp16") return fusion::Compression::kFp16;
  if (name == "bf16") return fusion::Compression::kBf16;
  throw InvalidArgument("collex: unknown compression '" + name + "'");
}

// [(dtype code, [gradient indices], [offsets])] per bucket, in launch order.
py::list describe(const std::vector<fusion::Bucket>& buckets) {
  py::list out;
  for (const auto& b : buckets) {
    std::vector<std::size_t> members, offsets;
    for (const auto& m : b.members) {
      members.push_back(m.gradient);
      offsets.push_back(m.offset);
    }
    out.append(py::make_tuple(static_cast<int>(b.dtype), members, offsets));
  }
  return out;
}

template <typename T>
T* pointer(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

}  // namespace

void bind_fusion(py::module_& m) {
  using fusion::GradientReducer;
  py::class_<GradientReducer, std::shared_ptr<GradientReducer>>(m, "GradientReducer")
      .def(py::init([](std::shared_ptr<Communicator> comm, const std::vector<ArraySpec>& grads, std::size_t cap,
                       std::size_t first_cap, const std::string& compression, bool error_feedback, bool huge_pages,
                       std::uint64_t shapes_digest) {
             std::vector<Buffer> buffers;
             for (const auto& [address, count, code] : grads) {
               buffers.push_back(Buffer{pointer<void>(address), count, dtype_of(code)});
             }
             return std::make_shared<GradientReducer>(std::move(comm), std::move(buffers), cap, first_cap,
                                                      compression_of(compression), error_feedback, huge_pages,
                                                      shapes_digest);
           }),
           Guard())
      // A bucket publishes its gradients' addresses: no shared region may name
      // memory that moved (bindings/sharing.h).
      .def("ready",
           [](GradientReducer& r, std::size_t i) {
             bindings::release_moved_pages();
             py::gil_scoped_release release;
             r.ready(i);
           })
      .def("wait", &GradientReducer::wait, Guard())
      .def("reduce",
           [](GradientReducer& r) {
             bindings::release_moved_pages();
             py::gil_scoped_release release;
             r.reduce();
           })
      .def("buckets", [](const GradientReducer& r) { return describe(r.buckets()); })
      .def("wire_dtype", [](const GradientReducer& r, std::size_t b) { return static_cast<int>(r.wire_dtype(b)); })
      .def("path", &GradientReducer::path)
      .def("packed", &GradientReducer::packed)
      .def_property_readonly("symmetric", &GradientReducer::symmetric)
      .def_property_readonly("huge_page_bytes", &GradientReducer::huge_page_bytes)
      .def("residual_address",
           [](GradientReducer& r, std::size_t i) { return reinterpret_cast<std::uintptr_t>(r.residual(i)); });

  m.def("_assign_buckets",
        [](const std::vector<std::pair<std::size_t, int>>& grads, std::size_t cap, std::size_t first_cap) {
          std::vector<fusion::Gradient> g;
          for (const auto& [count, code] : grads) g.push_back(fusion::Gradient{count, dtype_of(code)});
          return describe(fusion::assign_buckets(g, cap, first_cap));
        });
  m.def("_kernel_max_abs", [](std::uintptr_t src, std::uintptr_t residual, std::size_t n) {
    return kernels::max_abs(pointer<const float>(src), pointer<const float>(residual), n);
  });
  m.def("_kernel_compress", [](std::uintptr_t wire, int wire_dtype, std::uintptr_t src, std::uintptr_t residual,
                               std::size_t n, float scale) {
    kernels::compress(pointer<void>(wire), dtype_of(wire_dtype), pointer<const float>(src), pointer<float>(residual), n,
                      scale);
  });
  m.def("_kernel_decompress", [](std::uintptr_t dst, std::uintptr_t wire, int wire_dtype, std::size_t n, float factor) {
    kernels::decompress(pointer<float>(dst), pointer<const void>(wire), dtype_of(wire_dtype), n, factor);
  });
}
