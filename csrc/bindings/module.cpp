// The only C++ that knows Python. The Python layer has already checked the arrays
// and passes raw addresses, element counts and dtype/op codes; this file turns them
// into Buffers, releases the GIL around everything that may wait, and maps the
// core's exceptions onto Python's.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "collex/algorithms/barrier.h"
#include "collex/algorithms/ring.h"
#include "collex/algorithms/tree.h"
#include "collex/common/errors.h"
#include "collex/common/waiting.h"
#include "collex/core/communicator.h"
#include "collex/core/copy_ways.h"
#include "collex/kernels/copy.h"
#include "collex/kernels/reduce.h"
#include "collex/kernels/stream.h"
#include "collex/transport/window.h"

namespace py = pybind11;
using namespace collex;

void bind_fusion(py::module_& m);  // fusion.cpp

namespace {

Buffer make_buffer(std::uintptr_t address, std::size_t count, int dtype_code) {
  Buffer b;
  if (!dtype_from_int(dtype_code, &b.dtype)) throw InvalidArgument("collex: unknown dtype code");
  b.data = reinterpret_cast<void*>(address);
  b.count = count;
  return b;
}

ReduceOp make_op(int code) {
  ReduceOp op;
  if (!reduce_op_from_int(code, &op)) throw InvalidArgument("collex: unknown op code");
  return op;
}

Algo make_algo(const std::string& name) {
  Algo a;
  if (!algo_from_string(name, &a)) throw InvalidArgument("collex: unknown algo '" + name + "'");
  return a;
}

using Guard = py::call_guard<py::gil_scoped_release>;

// ml_dtypes registers bfloat16 at run time; its NumPy type number is set once
// from Python (collex/_dtypes.py).
int bfloat16_type_num = -1;

// A C-contiguous NumPy array of a supported dtype in native byte order (and
// writeable when asked): its address, element count and dtype code.
struct Plain {
  std::uintptr_t address = 0;
  std::size_t count = 0;
  int code = -1;
};

// The fast path of the Python layer's array checks. False sends the call to the
// Python layer, whose full checks produce the error message; checking here in one
// step instead of several attribute look-ups keeps small collectives cheap.
bool plain_array(py::handle obj, bool writable, Plain* out) {
  if (!py::isinstance<py::array>(obj)) return false;
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!(a.flags() & py::array::c_style)) return false;
  if (writable && !a.writeable()) return false;
  py::dtype dt = a.dtype();
  if (dt.byteorder() == '>') return false;
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  DType t;
  if (kind == 'f' && size == 2)
    t = DType::kFloat16;
  else if (kind == 'f' && size == 4)
    t = DType::kFloat32;
  else if (kind == 'f' && size == 8)
    t = DType::kFloat64;
  else if (kind == 'i' && size == 1)
    t = DType::kInt8;
  else if (kind == 'i' && size == 4)
    t = DType::kInt32;
  else if (kind == 'i' && size == 8)
    t = DType::kInt64;
  else if (kind == 'u' && size == 1)
    t = DType::kUInt8;
  else if (dt.num() == bfloat16_type_num)
    t = DType::kBFloat16;
  else
    return false;
  out->address = reinterpret_cast<std::uintptr_t>(a.data());
  out->count = static_cast<std::size_t>(a.size());
  out->code = static_cast<int>(t);
  return true;
}

// For the Python layer: (address, element count, dtype code), or None.
py::object inspect_array(py::handle obj, bool writable) {
  Plain p;
  if (!plain_array(obj, writable, &p)) return py::none();
  return py::make_tuple(p.address, p.count, p.code);
}

// The synchronous fast path of every collective, for the common call: plain
// arrays and string arguments that need no conversion. Anything else returns
// NotImplemented and the Python layer runs its full checks (and error messages).

bool same_shape(py::handle a, py::handle b) {
  auto x = py::reinterpret_borrow<py::array>(a);
  auto y = py::reinterpret_borrow<py::array>(b);
  if (x.ndim() != y.ndim()) return false;
  for (py::ssize_t i = 0; i < x.ndim(); ++i) {
    if (x.shape(i) != y.shape(i)) return false;
  }
  return true;
}

int op_code(py::handle op) {
  if (!PyUnicode_Check(op.ptr())) return -1;
  const char* s = PyUnicode_AsUTF8(op.ptr());
  static const char* names[] = {"sum", "prod", "min", "max", "avg"};
  for (int i = 0; i < 5; ++i) {
    if (s != nullptr && std::strcmp(s, names[i]) == 0) return i;
  }
  return -1;
}

bool algo_code(py::handle algo, Algo* out) {
  if (!PyUnicode_Check(algo.ptr())) return false;
  const char* s = PyUnicode_AsUTF8(algo.ptr());
  return s != nullptr && algo_from_string(s, out);
}

// x and out (None: in place) of a reduction, checked as the Python layer would;
// false sends the call to the Python layer. `writes_x`: the result lands in x.
bool plain_reduction(py::handle x, py::handle out, py::handle op, bool writes_x, Plain* in, Plain* res, int* opc) {
  *opc = op_code(op);
  if (*opc < 0 || !plain_array(x, out.is_none() && writes_x, in)) return false;
  // avg of integers is an error: the Python layer says so.
  if (*opc == static_cast<int>(ReduceOp::kAvg) && !dtype_is_float(static_cast<DType>(in->code))) return false;
  if (out.is_none()) {
    *res = *in;
    return true;
  }
  if (!plain_array(out, true, res) || res->code != in->code || !same_shape(x, out)) return false;
  const std::size_t bytes = in->count * dtype_size(static_cast<DType>(in->code));
  const bool same = res->address == in->address;
  return same || bytes == 0 || !(res->address < in->address + bytes && in->address < res->address + bytes);
}

py::object allreduce_now(Communicator& c, py::handle x, py::handle out, py::handle op, py::handle algo) {
  Plain in, res;
  Algo a;
  int opc;
  if (!algo_code(algo, &a) || !plain_reduction(x, out, op, true, &in, &res, &opc)) {
    return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  }
  {
    py::gil_scoped_release release;
    c.allreduce(make_buffer(in.address, in.count, in.code), make_buffer(res.address, res.count, res.code),
                static_cast<ReduceOp>(opc), a, false);
  }
  return py::reinterpret_borrow<py::object>(out.is_none() ? x : out);
}

// A Python int that fits a long, read without raising: an int too large for
// one is left to the Python layer's checks (which name it) like any bad value.
bool exact_long(py::handle h, long* value) {
  if (!PyLong_CheckExact(h.ptr())) return false;
  int overflow = 0;
  *value = PyLong_AsLongAndOverflow(h.ptr(), &overflow);
  return overflow == 0;
}

py::object reduce_now(Communicator& c, py::handle x, py::handle out, py::handle op, py::handle root) {
  long r = 0;
  if (!exact_long(root, &r)) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  Plain in, res;
  int opc;
  if (r < 0 || r >= c.size() || !plain_reduction(x, out, op, r == c.rank(), &in, &res, &opc)) {
    return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  }
  {
    py::gil_scoped_release release;
    c.reduce(make_buffer(in.address, in.count, in.code), make_buffer(res.address, res.count, res.code),
             static_cast<ReduceOp>(opc), static_cast<int>(r), false);
  }
  return py::reinterpret_borrow<py::object>(out.is_none() ? x : out);
}

// The output of allgather / reduce_scatter: the caller's `out` when it is a plain
// array of that shape and x's dtype (not overlapping x), a new array when None.
bool plain_output(py::handle x, py::handle out, const std::vector<py::ssize_t>& shape, const Plain& in,
                  py::object* result, Plain* res) {
  if (out.is_none()) {
    *result = py::array(py::reinterpret_borrow<py::array>(x).dtype(), shape);
  } else {
    auto o = py::reinterpret_borrow<py::array>(out);
    if (!plain_array(out, true, res) || res->code != in.code || o.ndim() != static_cast<py::ssize_t>(shape.size())) {
      return false;
    }
    for (std::size_t i = 0; i < shape.size(); ++i) {
      if (o.shape(static_cast<py::ssize_t>(i)) != shape[i]) return false;
    }
    *result = py::reinterpret_borrow<py::object>(out);
  }
  if (!plain_array(*result, true, res)) return false;
  const std::size_t es = dtype_size(static_cast<DType>(in.code));
  const std::size_t a = in.count * es, b = res->count * es;
  return a == 0 || b == 0 || !(res->address < in.address + a && in.address < res->address + b);
}

py::object allgather_now(Communicator& c, py::handle x, py::handle out) {
  Plain in, res;
  py::object result;
  if (!plain_array(x, false, &in)) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  auto xa = py::reinterpret_borrow<py::array>(x);
  std::vector<py::ssize_t> shape{c.size()};
  for (py::ssize_t i = 0; i < xa.ndim(); ++i) shape.push_back(xa.shape(i));
  if (!plain_output(x, out, shape, in, &result, &res)) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  {
    py::gil_scoped_release release;
    c.allgather(make_buffer(in.address, in.count, in.code), make_buffer(res.address, res.count, res.code), false);
  }
  return result;
}

py::object reduce_scatter_now(Communicator& c, py::handle x, py::handle out, py::handle op) {
  Plain in, res;
  py::object result;
  const int opc = op_code(op);
  if (opc < 0 || !plain_array(x, false, &in)) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  if (opc == static_cast<int>(ReduceOp::kAvg) && !dtype_is_float(static_cast<DType>(in.code))) {
    return py::reinterpret_borrow<py::object>(Py_NotImplemented);  // avg of integers: an error
  }
  auto xa = py::reinterpret_borrow<py::array>(x);
  if (xa.ndim() == 0 || xa.shape(0) % c.size() != 0) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  std::vector<py::ssize_t> shape{xa.shape(0) / c.size()};
  for (py::ssize_t i = 1; i < xa.ndim(); ++i) shape.push_back(xa.shape(i));
  if (!plain_output(x, out, shape, in, &result, &res)) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  {
    py::gil_scoped_release release;
    c.reduce_scatter(make_buffer(in.address, in.count, in.code), make_buffer(res.address, res.count, res.code),
                     static_cast<ReduceOp>(opc), false);
  }
  return result;
}

py::object broadcast_now(Communicator& c, py::handle x, py::handle root, py::handle algo) {
  py::object slow = py::reinterpret_borrow<py::object>(Py_NotImplemented);
  long r = 0;
  if (!exact_long(root, &r)) return slow;
  Plain buf;
  Algo a;
  if (r < 0 || r >= c.size() || !algo_code(algo, &a) || !plain_array(x, r != c.rank(), &buf)) return slow;
  {
    py::gil_scoped_release release;
    c.broadcast(make_buffer(buf.address, buf.count, buf.code), static_cast<int>(r), a, false);
  }
  return py::reinterpret_borrow<py::object>(x);
}

// Drives the mid-size copy chooser as one rank alone (its times then stand for
// every rank's), for tests of its decisions: `seconds(call, slots)` gives each
// call's time. Returns the way each call took (True: the slots) and the
// decisions, as (call, line).
py::tuple copy_ways_run(std::size_t bytes, int calls, const py::function& seconds) {
  CopyWays ways;
  py::list taken, decisions;
  for (int call = 0; call < calls; ++call) {
    const CopyWays::Pick pick = ways.pick(direct::Streamable::kBroadcast, bytes);
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

}  // namespace

namespace {

// A tuple of ints; more axes than a header carries are compared by count alone.
MessageShape shape_of(const py::tuple& dims) {
  MessageShape m;
  if (dims.size() > static_cast<std::size_t>(MessageShape::kMaxDims)) return m;
  m.ndim = static_cast<int>(dims.size());
  for (std::size_t i = 0; i < dims.size(); ++i) m.dims[i] = dims[i].cast<std::int64_t>();
  return m;
}

// Posts a send or receive; a blocking one is waited for here (GIL released by the caller).
std::shared_ptr<P2pWork> post_p2p(Communicator& c, bool send, Buffer b, const MessageShape& shape, int peer, int tag,
                                  bool async) {
  auto w = send ? c.send(b, shape, peer, tag) : c.recv(b, shape, peer, tag);
  if (async) return w;
  w->wait();
  return nullptr;
}

// The blocking fast path of send/recv for a plain array and int arguments in
// range; anything else returns NotImplemented for the Python layer's checks.
py::object p2p_now(Communicator& c, bool send, py::handle x, py::handle peer, py::handle tag) {
  Plain p;
  long r = 0, t = 0;
  if (!exact_long(peer, &r) || !exact_long(tag, &t) || !plain_array(x, !send, &p)) {
    return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  }
  if (r < 0 || r >= c.size() || t < 0 || t > c.max_user_tag()) {
    return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  }
  auto a = py::reinterpret_borrow<py::array>(x);
  MessageShape shape;
  if (a.ndim() <= MessageShape::kMaxDims) {
    shape.ndim = static_cast<int>(a.ndim());
    for (py::ssize_t i = 0; i < a.ndim(); ++i) shape.dims[i] = a.shape(i);
  }
  {
    py::gil_scoped_release release;
    post_p2p(c, send, make_buffer(p.address, p.count, p.code), shape, static_cast<int>(r), static_cast<int>(t), false);
  }
  return send ? py::none() : py::reinterpret_borrow<py::object>(x);
}

py::object send_now(Communicator& c, py::handle x, py::handle dst, py::handle tag) {
  return p2p_now(c, true, x, dst, tag);
}
py::object recv_now(Communicator& c, py::handle x, py::handle src, py::handle tag) {
  return p2p_now(c, false, x, src, tag);
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

  m.def("inspect_array", &inspect_array, py::arg("array"), py::arg("writable"));
  bind_fusion(m);

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
  m.def("_kernel_copy_result", [](std::uintptr_t dst, std::uintptr_t src, std::size_t bytes) {
    kernels::copy_result(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes);
  });
  m.def("kernel_isa", &kernels::kernel_isa, "The instruction set the reduction kernels use.");
  m.def("_use_kernel_isa", [](const std::string& isa) { return kernels::use_kernel_isa(isa.c_str()); });
  m.def("set_bfloat16_type_num", [](int num) { bfloat16_type_num = num; });

  m.def("_copy_ways_run", &copy_ways_run, py::arg("bytes"), py::arg("calls"), py::arg("seconds"));
  m.def("_schedule", &schedule_steps, py::arg("name"), py::arg("rank"), py::arg("size"), py::arg("count"),
        py::arg("chunk"), py::arg("root") = 0, py::arg("average") = false);

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
      .def("done", &P2pWork::done, Guard());

  py::class_<Communicator, std::shared_ptr<Communicator>>(m, "Communicator")
      .def(py::init<long, double>(), py::arg("fortran_handle"), py::arg("timeout"), Guard())
      .def("split", &Communicator::split, Guard())
      .def_property_readonly("rank", &Communicator::rank)
      .def_property_readonly("size", &Communicator::size)
      .def_property_readonly("local_rank", &Communicator::local_rank)
      .def_property_readonly("local_size", &Communicator::local_size)
      .def_property_readonly("broken", &Communicator::broken)
      .def_property_readonly("broken_reason", &Communicator::broken_reason)
      .def_property_readonly("max_user_tag", &Communicator::max_user_tag)
      .def_property_readonly("timeout", [](const Communicator& c) { return c.config().timeout_s; })
      .def("shutdown", &Communicator::shutdown, py::arg("why") = std::string(), Guard())
      .def("allreduce_now", &allreduce_now)
      .def("reduce_now", &reduce_now)
      .def("allgather_now", &allgather_now)
      .def("reduce_scatter_now", &reduce_scatter_now)
      .def("allocate_symmetric", &Communicator::allocate_symmetric)
      .def_property_readonly("window", &Communicator::window_name)
      .def("copy_ways", &Communicator::copy_ways, Guard())
      .def("broadcast_now", &broadcast_now)
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
      .def("barrier", &Communicator::barrier, Guard())
      .def("send_now", &send_now)
      .def("recv_now", &recv_now)
      .def("send",
           [](Communicator& c, std::uintptr_t buf, std::size_t n, int dtype, const py::tuple& shape, int dst, int tag,
              bool async) {
             const MessageShape m = shape_of(shape);
             py::gil_scoped_release release;
             return post_p2p(c, true, make_buffer(buf, n, dtype), m, dst, tag, async);
           })
      .def("recv", [](Communicator& c, std::uintptr_t buf, std::size_t n, int dtype, const py::tuple& shape, int src,
                      int tag, bool async) {
        const MessageShape m = shape_of(shape);
        py::gil_scoped_release release;
        return post_p2p(c, false, make_buffer(buf, n, dtype), m, src, tag, async);
      });
}
