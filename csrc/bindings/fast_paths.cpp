// The entry of every collective and of send/recv from Python. The synchronous
// call on plain arrays with arguments that need no conversion, checked in one
// step, runs from here; anything else (async, CUDA arrays, other array types,
// a bad argument) goes to the Python layer's one dispatch function,
// Communicator._dispatch(name, *args), which routes CUDA arrays to
// python/collex/cuda/ and runs the full checks (and error messages) of the
// rest before the general entry points. The caller's Communicator comes along
// as `owner`, so the fast path costs one Python frame and no look-up.
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "collex/core/communicator.h"

namespace collex::bindings {
namespace {

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

// The fast path's answer, or the Python layer's for a call it declines.
template <typename... Args>
py::object or_dispatch(py::object done, py::handle owner, const char* name, Args... args) {
  if (done.ptr() != Py_NotImplemented) return done;
  return owner.attr("_dispatch")(name, args...);
}

bool synchronous(py::handle async_op) { return async_op.ptr() == Py_False; }

py::object not_fast() { return py::reinterpret_borrow<py::object>(Py_NotImplemented); }

}  // namespace

void bind_fast_paths(CommunicatorClass& c) {
  // Arguments in the order of the Python methods', then the owner.
  c.def("allreduce_call",
        [](Communicator& c, py::handle x, py::handle op, py::handle out, py::handle algo, py::handle async_op,
           py::handle owner) {
          py::object done = synchronous(async_op) ? allreduce_now(c, x, out, op, algo) : not_fast();
          return or_dispatch(done, owner, "allreduce", x, op, out, algo, async_op);
        })
      .def("broadcast_call",
           [](Communicator& c, py::handle x, py::handle root, py::handle algo, py::handle async_op, py::handle owner) {
             py::object done = synchronous(async_op) ? broadcast_now(c, x, root, algo) : not_fast();
             return or_dispatch(done, owner, "broadcast", x, root, algo, async_op);
           })
      .def("reduce_call",
           [](Communicator& c, py::handle x, py::handle op, py::handle root, py::handle out, py::handle async_op,
              py::handle owner) {
             py::object done = synchronous(async_op) ? reduce_now(c, x, out, op, root) : not_fast();
             return or_dispatch(done, owner, "reduce", x, op, root, out, async_op);
           })
      .def("allgather_call",
           [](Communicator& c, py::handle x, py::handle out, py::handle async_op, py::handle owner) {
             py::object done = synchronous(async_op) ? allgather_now(c, x, out) : not_fast();
             return or_dispatch(done, owner, "allgather", x, out, async_op);
           })
      .def("reduce_scatter_call",
           [](Communicator& c, py::handle x, py::handle op, py::handle out, py::handle async_op, py::handle owner) {
             py::object done = synchronous(async_op) ? reduce_scatter_now(c, x, out, op) : not_fast();
             return or_dispatch(done, owner, "reduce_scatter", x, op, out, async_op);
           })
      .def("send_call",
           [](Communicator& c, py::handle x, py::handle dst, py::handle tag, py::handle owner) {
             return or_dispatch(send_now(c, x, dst, tag), owner, "send", x, dst, tag);
           })
      .def("recv_call",
           [](Communicator& c, py::handle x, py::handle src, py::handle tag, py::handle owner) {
             return or_dispatch(recv_now(c, x, src, tag), owner, "recv", x, src, tag);
           })
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

}  // namespace collex::bindings
