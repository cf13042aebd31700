// The module's root: the exceptions the core raises as Python's, the tables of
// names and codes the Python layer reads (dtypes, ops, algorithms), the handles,
// and the Communicator class. The checked calls are in calls.cpp, their checks in checks.cpp, the test
// hooks in testing.cpp, the fusion layer in fusion.cpp; arrays.h turns Python
// objects into Buffers. The only C++ that knows Python.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "bindings/checks.h"
#include "bindings/lane_arguments.h"
#include "collex/common/errors.h"
#include "collex/common/time_parts.h"
#include "collex/common/waiting.h"
#include "collex/core/communicator.h"
#include "collex/kernels/copy.h"
#include "collex/kernels/reduce.h"
#include "collex/kernels/stream.h"
#include "collex/transport/cuda_ipc/host_lanes.h"
#include "collex/transport/window.h"

namespace py = pybind11;
using namespace collex;
using namespace collex::bindings;

void bind_fusion(py::module_& m);  // fusion.cpp

namespace {

// The core's tables, in code order: the Python layer builds its own from these.
void bind_tables(py::module_& m) {
  py::list dtypes, floating;
  for (int code = 0; code < kNumDTypes; ++code) {
    dtypes.append(dtype_name(static_cast<DType>(code)));
    if (dtype_is_float(static_cast<DType>(code))) floating.append(code);
  }
  py::dict ops;
  for (ReduceOp op : kReduceOps) ops[reduce_op_name(op)] = static_cast<int>(op);
  py::list algos;
  for (Algo a : kNamedAlgos) algos.append(algo_name(a));
  m.attr("DTYPE_NAMES") = py::tuple(dtypes);
  m.attr("FLOAT_DTYPE_CODES") = py::tuple(floating);
  m.attr("OPS") = ops;
  m.attr("ALGOS") = py::tuple(algos);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "collex C++ core (internal; use the collex package)";

  // Exception classes live for the whole process (raw references, never released:
  // a static py::object would be destroyed after the interpreter is gone).
  static PyObject* collex_error = PyErr_NewException("collex.CollexError", PyExc_RuntimeError, nullptr);
  static PyObject* timeout_error = PyErr_NewException("collex.CollectiveTimeout", collex_error, nullptr);
  static PyObject* mismatch_error = PyErr_NewException("collex.CollectiveMismatch", collex_error, nullptr);
  static PyObject* broken_error = PyErr_NewException("collex.CommunicatorBroken", collex_error, nullptr);
  m.attr("CollexError") = py::handle(collex_error);
  m.attr("CollectiveTimeout") = py::handle(timeout_error);
  m.attr("CollectiveMismatch") = py::handle(mismatch_error);
  m.attr("CommunicatorBroken") = py::handle(broken_error);
  // Translators run most recent first, so derived types are tried before the base.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Interrupted&) {
      if (!PyErr_Occurred()) PyErr_SetNone(PyExc_KeyboardInterrupt);
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const CollectiveTimeout& e) {
      PyErr_SetString(timeout_error, e.what());
    } catch (const CollectiveMismatch& e) {
      PyErr_SetString(mismatch_error, e.what());
    } catch (const CommunicatorBroken& e) {
      PyErr_SetString(broken_error, e.what());
    } catch (const CollexError& e) {
      PyErr_SetString(collex_error, e.what());
    }
  });

  // Long waits on the main thread poll this so that Ctrl-C ends them.
  set_interrupt_check([] {
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
  });

  bind_checks(m);
  m.def("set_bfloat16_type_num", [](int num) { bfloat16_type_num = num; });
  m.def("kernel_isa", &kernels::kernel_isa, "The instruction set the reduction kernels use.");
  m.def(
      "kernel_copy_loop", [] { return kernels::copy_loop_name(kernels::copy_loop()); },
      "How large streaming copies walk their source: one-stream or two-pages (COLLEX_COPY_LOOP).");
  bind_tables(m);
  bind_fusion(m);
  bind_testing(m);
  bind_dlpack(m);

  m.def(
      "_lane_failure",
      [](const std::vector<std::uint64_t>& words, double timeout_s) {
        ipc::LaneStatus s{};
        if (words.size() != sizeof s / sizeof(std::uint64_t)) throw InvalidArgument("_lane_failure: 7 status words");
        s = {words[0], words[1], words[2], words[3], words[4], words[5], words[6]};
        return ipc::describe_failure(s, timeout_s);
      },
      py::arg("words"), py::arg("timeout"),
      "What a CUDA IPC lane's status words (transport/cuda_ipc/lanes.h's LaneStatus) say, as an error's text.");
  m.def(
      "_ipc_call_signature",
      [](int collective, std::size_t bytes, int root, int dtype, int op, bool direct) {
        ipc::Call call = bindings::lane_call(collective, 0, 0, bytes, 1, 2, root);
        call.direct = direct;
        return ipc::call_signature(call, dtype, op);
      },
      py::arg("collective"), py::arg("bytes"), py::arg("root"), py::arg("dtype"), py::arg("op"), py::arg("direct"),
      "The word in which CUDA IPC collectives' ranks compare their calls (lanes.h's call_signature).");
  m.def(
      "_ipc_describe_call", [](std::uint64_t signature) { return ipc::describe_signature(signature); },
      py::arg("signature"), "A CUDA IPC call's signature (_ipc_call_signature) in words, for an error's text.");
  m.def(
      "_stream",
      [](std::size_t bytes, int repeats) {
        kernels::StreamBandwidth bw;
        {
          py::gil_scoped_release release;
          bw = kernels::measure_stream(bytes, repeats);
        }
        return py::make_tuple(bw.copy, bw.add);
      },
      py::arg("bytes"), py::arg("repeats") = 5,
      "Memory bandwidth (copy, add) in bytes read+written per second at this working-set size.");
  m.def(
      "_time_parts_enable", [](bool on) { time_parts::enable(on); }, py::arg("on"),
      "Turns on (or off) the totals of where collectives' time goes in this process; either way they restart.");
  m.def(
      "_time_parts",
      [] {
        const time_parts::Totals t = time_parts::totals();
        return py::make_tuple(std::vector<std::uint64_t>(t.ns.begin(), t.ns.end()),
                              std::vector<std::uint64_t>(t.bytes.begin(), t.bytes.end()));
      },
      "(ns, bytes) so far in reduction kernels, copies in place, copies through the kernel and waits for peers.");

  // A symmetric buffer's memory as a Python buffer (NumPy wraps it without a copy
  // and keeps it, and so the mapping, alive).
  py::class_<SymmetricMemory, std::shared_ptr<SymmetricMemory>>(m, "SymmetricMemory", py::buffer_protocol())
      .def_buffer([](SymmetricMemory& s) {
        return py::buffer_info(s.data(), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(s.bytes())}, {1});
      })
      .def_property_readonly("address", [](SymmetricMemory& s) { return reinterpret_cast<std::uintptr_t>(s.data()); });

  py::class_<Work, std::shared_ptr<Work>>(m, "Work").def("wait", &Work::wait, Guard()).def("done", &Work::done);
  py::class_<P2pWork, std::shared_ptr<P2pWork>>(m, "P2pWork")
      .def("wait", &P2pWork::wait, Guard())
      .def("done", &P2pWork::done, Guard())
      .def(
          "device_reply",
          [](const P2pWork& w) {
            std::string reply;
            {
              py::gil_scoped_release release;  // the core's lock may be held by a thread that wants the GIL
              reply = w.device_reply();
            }
            return py::bytes(reply);
          },
          "A device send's reply from its receiver (empty until done).");

  CommunicatorClass comm(m, "Communicator");
  comm.def(py::init<long, double>(), py::arg("fortran_handle"), py::arg("timeout"), Guard())
      .def("split", &Communicator::split, Guard())
      .def_property_readonly("rank", &Communicator::rank)
      .def_property_readonly("size", &Communicator::size)
      .def_property_readonly("local_rank", &Communicator::local_rank)
      .def_property_readonly("local_size", &Communicator::local_size)
      .def_property_readonly("node_leader", &Communicator::node_leader)
      .def_property_readonly("broken", &Communicator::broken)
      .def_property_readonly("broken_reason", &Communicator::broken_reason)
      .def_property_readonly("max_user_tag", &Communicator::max_user_tag)
      .def_property_readonly("timeout", [](const Communicator& c) { return c.config().timeout_s; })
      .def("shutdown", &Communicator::shutdown, py::arg("why") = std::string(), Guard())
      .def("allocate_symmetric", &Communicator::allocate_symmetric)
      .def_property_readonly("window", &Communicator::window_name)
      .def("copy_ways", &Communicator::copy_ways, Guard())
      .def(
          "allreduce",
          [](Communicator& c, std::uintptr_t in, std::uintptr_t out, std::size_t n, int dtype, int op,
             const std::string& algo, bool async) {
            return c.allreduce(make_buffer(in, n, dtype), make_buffer(out, n, dtype), make_op(op), make_algo(algo),
                               async);
          },
          Guard())
      .def(
          "broadcast",
          [](Communicator& c, std::uintptr_t buf, std::size_t n, int dtype, int root, const std::string& algo,
             bool async) { return c.broadcast(make_buffer(buf, n, dtype), root, make_algo(algo), async); },
          Guard())
      .def(
          "reduce",
          [](Communicator& c, std::uintptr_t in, std::uintptr_t out, std::size_t n, int dtype, int op, int root,
             bool async) {
            return c.reduce(make_buffer(in, n, dtype), make_buffer(out, n, dtype), make_op(op), root, async);
          },
          Guard())
      .def(
          "allgather",
          [](Communicator& c, std::uintptr_t in, std::uintptr_t out, std::size_t n, int dtype, bool async) {
            return c.allgather(make_buffer(in, n, dtype),
                               make_buffer(out, n * static_cast<std::size_t>(c.size()), dtype), async);
          },
          Guard())
      .def(
          "reduce_scatter",
          [](Communicator& c, std::uintptr_t in, std::uintptr_t out, std::size_t n, int dtype, int op, bool async) {
            return c.reduce_scatter(make_buffer(in, n, dtype),
                                    make_buffer(out, n / static_cast<std::size_t>(c.size()), dtype), make_op(op),
                                    async);
          },
          Guard())
      .def("barrier", &Communicator::barrier, Guard());
  bind_calls(comm);
}
