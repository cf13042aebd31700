// collex._cuda: the optional CUDA module, built when CMake finds the CUDA toolkit
// and imported only when a CUDA array reaches collex. It moves bytes; the Python
// layer (collex/_device.py) decides what goes where.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "collex/device/cuda_memory.h"

namespace py = pybind11;
using collex::cuda::Event;
using collex::cuda::PinnedBuffer;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "collex's CUDA module: device/host copies and pinned host memory";
  m.def("device_count", &collex::cuda::device_count);
  m.def("pointer_device", &collex::cuda::pointer_device, py::arg("address"));
  m.def("copy_async", &collex::cuda::copy_async, py::arg("dst"), py::arg("src"), py::arg("bytes"), py::arg("stream"),
        py::arg("device"));
  m.def("copy", &collex::cuda::copy, py::arg("dst"), py::arg("src"), py::arg("bytes"), py::arg("stream"),
        py::arg("device"), py::call_guard<py::gil_scoped_release>());
  py::class_<Event>(m, "Event")
      .def(py::init<int>(), py::arg("device"))
      .def("record", &Event::record, py::arg("stream"))
      .def("synchronize", &Event::synchronize, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("device", &Event::device);
  py::class_<PinnedBuffer>(m, "PinnedBuffer", py::buffer_protocol())
      .def(py::init<std::size_t>(), py::arg("bytes"))
      .def_property_readonly("address",
                             [](const PinnedBuffer& b) { return reinterpret_cast<std::uintptr_t>(b.data()); })
      .def_property_readonly("bytes", &PinnedBuffer::bytes)
      .def_buffer([](PinnedBuffer& b) {
        return py::buffer_info(b.data(), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(b.bytes())}, {1});
      });
}
