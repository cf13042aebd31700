// The entry of every collective and of send/recv from Python. A call on NumPy
// arrays is checked (bindings/checks.h, which raise the messages) and run from
// here, synchronously or queued (the Python layer wraps the handle in a Work);
// a call with any other array (CUDA arrays, lists, buffers) goes to the Python
// layer's one dispatch function, Communicator._dispatch(name, *args), which
// routes CUDA arrays to python/collex/cuda/ and makes NumPy arrays of the rest,
// then calls back in. The caller's Communicator comes along as `owner`, so a
// call costs one Python frame and no look-up.
#include <vector>

#include "bindings/bindings.h"
#include "bindings/checks.h"
#include "bindings/sharing.h"
#include "collex/core/communicator.h"

namespace collex::bindings {
namespace {

bool ndarray(py::handle x) { return py::isinstance<py::array>(x); }
// x and, where given, out are NumPy arrays: the call is checked and run here.
bool host_arrays(py::handle x, py::handle out) { return ndarray(x) && (out.is_none() || ndarray(out)); }

// Starts the call (`start(async)`, which returns its handle) without the GIL,
// and returns `result` once it finished, or the Work of a queued call
// (Communicator._finish), which keeps `arrays` alive until it is done.
// Before it starts, the call's arrays are offered for shared pages
// (bindings/sharing.h), after any region whose memory moved is released.
template <typename Start>
py::object run(Communicator& c, py::handle owner, py::handle async_op, Start start, py::object result,
               py::tuple arrays) {
  const int t = PyObject_IsTrue(async_op.ptr());
  if (t < 0) throw py::error_already_set();
  const bool async = t == 1;
  release_moved_pages();
  for (std::size_t i = 0; i < arrays.size(); ++i) {
    if (i == 0 || arrays[i].ptr() != arrays[0].ptr()) offer_pages(c, arrays[i]);
  }
  std::shared_ptr<Work> handle;
  {
    py::gil_scoped_release release;
    handle = start(async);
  }
  if (!async) return result;
  return owner.attr("_finish")(handle, result, arrays, true);
}

py::object keep(py::handle result) { return py::reinterpret_borrow<py::object>(result); }

// The result of a reduction into x (out None) or into out, checked.
Plain reduction_result(py::handle x, py::handle out, const Plain& in, const Where& w) {
  if (out.is_none()) return in;
  auto a = py::reinterpret_borrow<py::array>(x);
  return checked_out(out, std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()), in, w);
}

// The output of an all-gather or reduce-scatter: the caller's checked out, or a new array.
py::object new_or_out(py::handle x, py::handle out, const std::vector<py::ssize_t>& shape, const Plain& in,
                      const Where& w, Plain* res) {
  if (!out.is_none()) {
    *res = checked_out(out, shape, in, w);
    return keep(out);
  }
  py::array made(py::reinterpret_borrow<py::array>(x).dtype(), shape);
  *res = checked_array(made, "out", w, true);
  return std::move(made);
}

py::object allreduce(Communicator& c, py::handle x, py::handle op, py::handle out, py::handle algo, py::handle async_op,
                     py::handle owner) {
  const Where w{"allreduce", c.rank()};
  const Plain in = checked_array(x, "x", w, out.is_none());
  const ReduceOp o = checked_op(op, in.code, w);
  const Algo a = checked_algo(algo, w);
  const Plain res = reduction_result(x, out, in, w);
  py::object result = keep(out.is_none() ? x : out);
  return run(
      c, owner, async_op, [&](bool async) { return c.allreduce(make_buffer(in), make_buffer(res), o, a, async); },
      result, py::make_tuple(x, result));
}

py::object broadcast(Communicator& c, py::handle x, py::handle root, py::handle algo, py::handle async_op,
                     py::handle owner) {
  const Where w{"broadcast", c.rank()};
  const int r = checked_rank(root, "root", c.size(), w);
  const Plain buf = checked_array(x, "x", w, r != c.rank());
  const Algo a = checked_algo(algo, w);
  return run(
      c, owner, async_op, [&](bool async) { return c.broadcast(make_buffer(buf), r, a, async); }, keep(x),
      py::make_tuple(x));
}

py::object reduce(Communicator& c, py::handle x, py::handle op, py::handle root, py::handle out, py::handle async_op,
                  py::handle owner) {
  const Where w{"reduce", c.rank()};
  const int r = checked_rank(root, "root", c.size(), w);
  const Plain in = checked_array(x, "x", w, out.is_none() && r == c.rank());
  const ReduceOp o = checked_op(op, in.code, w);
  const Plain res = reduction_result(x, out, in, w);
  py::object result = keep(out.is_none() ? x : out);
  return run(
      c, owner, async_op, [&](bool async) { return c.reduce(make_buffer(in), make_buffer(res), o, r, async); }, result,
      py::make_tuple(x, result));
}

py::object allgather(Communicator& c, py::handle x, py::handle out, py::handle async_op, py::handle owner) {
  const Where w{"allgather", c.rank()};
  const Plain in = checked_array(x, "x", w, false);
  Plain res;
  py::object result = new_or_out(x, out, gathered_shape(x, c.size()), in, w, &res);
  return run(
      c, owner, async_op, [&](bool async) { return c.allgather(make_buffer(in), make_buffer(res), async); }, result,
      py::make_tuple(x, result));
}

py::object reduce_scatter(Communicator& c, py::handle x, py::handle op, py::handle out, py::handle async_op,
                          py::handle owner) {
  const Where w{"reduce_scatter", c.rank()};
  const Plain in = checked_array(x, "x", w, false);
  const ReduceOp o = checked_op(op, in.code, w);
  Plain res;
  auto xa = py::reinterpret_borrow<py::array>(x);
  const std::vector<py::ssize_t> x_shape(xa.shape(), xa.shape() + xa.ndim());
  py::object result = new_or_out(x, out, scattered_shape(x_shape, c.size(), w), in, w, &res);
  return run(
      c, owner, async_op, [&](bool async) { return c.reduce_scatter(make_buffer(in), make_buffer(res), o, async); },
      result, py::make_tuple(x, result));
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

// A blocking send or receive of a NumPy array, checked in the order the Python
// layer's isend/irecv check theirs (peer, tag, array).
py::object p2p(Communicator& c, bool send, py::handle x, py::handle peer, py::handle tag) {
  const Where w{send ? "send" : "recv", c.rank()};
  const int r = checked_rank(peer, send ? "dst" : "src", c.size(), w);
  const int t = checked_tag(tag, c.max_user_tag(), w);
  const Plain p = checked_array(x, "x", w, !send);
  auto a = py::reinterpret_borrow<py::array>(x);
  MessageShape shape;
  if (a.ndim() <= MessageShape::kMaxDims) {
    shape.ndim = static_cast<int>(a.ndim());
    for (py::ssize_t i = 0; i < a.ndim(); ++i) shape.dims[i] = a.shape(i);
  }
  {
    py::gil_scoped_release release;
    post_p2p(c, send, make_buffer(p), shape, r, t, false);
  }
  return send ? py::none() : keep(x);
}

// collex.cuda.p2p.deliver_matched, set under the GIL on first use (not as a
// guarded static: the import may release the GIL while another thread waits on the guard).
py::object* deliver_function = nullptr;

// A device receive's deliver: collex.cuda.p2p.deliver_matched(key, descriptor),
// which runs the receive's own (registered there under `key`). The core calls it
// on whichever thread waits, without its lock and with the GIL released, and
// holds no Python object: the function is looked up once and kept for good, so
// no reference is dropped where the GIL is not held.
std::string deliver_matched(std::uint64_t key, const std::string& descriptor) {
  py::gil_scoped_acquire gil;
  try {
    if (deliver_function == nullptr) {
      py::object f = py::module_::import("collex.cuda.p2p").attr("deliver_matched");
      if (deliver_function == nullptr) deliver_function = new py::object(std::move(f));
    }
    return (*deliver_function)(key, py::bytes(descriptor)).cast<std::string>();
  } catch (py::error_already_set& e) {
    throw std::runtime_error(e.what());  // the reason, for both ranks' errors
  }
}

// A CUDA array as a device message's Buffer: the core never reads it.
Buffer device_buffer(std::uintptr_t address, std::size_t count, int dtype, int device) {
  Buffer b = make_buffer(address, count, dtype);
  b.device = Device{DeviceKind::kCuda, device};
  return b;
}

// The call's answer from here, or the Python layer's for other arrays.
template <typename Run, typename... Args>
py::object here_or_dispatch(bool here, Run run, py::handle owner, const char* name, Args... args) {
  if (here) return run();
  return owner.attr("_dispatch")(name, args...);
}

}  // namespace

void bind_calls(CommunicatorClass& c) {
  // Arguments in the order of the Python methods', then the owner.
  c.def("allreduce_call",
        [](Communicator& c, py::handle x, py::handle op, py::handle out, py::handle algo, py::handle async_op,
           py::handle owner) {
          return here_or_dispatch(
              host_arrays(x, out), [&] { return allreduce(c, x, op, out, algo, async_op, owner); }, owner, "allreduce",
              x, op, out, algo, async_op);
        })
      .def("broadcast_call",
           [](Communicator& c, py::handle x, py::handle root, py::handle algo, py::handle async_op, py::handle owner) {
             return here_or_dispatch(
                 ndarray(x), [&] { return broadcast(c, x, root, algo, async_op, owner); }, owner, "broadcast", x, root,
                 algo, async_op);
           })
      .def("reduce_call",
           [](Communicator& c, py::handle x, py::handle op, py::handle root, py::handle out, py::handle async_op,
              py::handle owner) {
             return here_or_dispatch(
                 host_arrays(x, out), [&] { return reduce(c, x, op, root, out, async_op, owner); }, owner, "reduce", x,
                 op, root, out, async_op);
           })
      .def("allgather_call",
           [](Communicator& c, py::handle x, py::handle out, py::handle async_op, py::handle owner) {
             return here_or_dispatch(
                 host_arrays(x, out), [&] { return allgather(c, x, out, async_op, owner); }, owner, "allgather", x, out,
                 async_op);
           })
      .def("reduce_scatter_call",
           [](Communicator& c, py::handle x, py::handle op, py::handle out, py::handle async_op, py::handle owner) {
             return here_or_dispatch(
                 host_arrays(x, out), [&] { return reduce_scatter(c, x, op, out, async_op, owner); }, owner,
                 "reduce_scatter", x, op, out, async_op);
           })
      .def("send_call",
           [](Communicator& c, py::handle x, py::handle dst, py::handle tag, py::handle owner) {
             return here_or_dispatch(ndarray(x), [&] { return p2p(c, true, x, dst, tag); }, owner, "send", x, dst, tag);
           })
      .def("recv_call",
           [](Communicator& c, py::handle x, py::handle src, py::handle tag, py::handle owner) {
             return here_or_dispatch(
                 ndarray(x), [&] { return p2p(c, false, x, src, tag); }, owner, "recv", x, src, tag);
           })
      // Arrays whose memory peers will read step after step (a reducer's
      // gradients): moved onto shared pages now (bindings/sharing.h).
      .def("share_pages_of",
           [](Communicator& c, const py::list& arrays) {
             release_moved_pages();
             for (py::handle a : arrays) {
               if (ndarray(a)) offer_pages(c, a, true);
             }
           })
      .def("send",
           [](Communicator& c, std::uintptr_t buf, std::size_t n, int dtype, const py::tuple& shape, int dst, int tag,
              bool async) {
             const MessageShape m = shape_of(shape);
             py::gil_scoped_release release;
             return post_p2p(c, true, make_buffer(buf, n, dtype), m, dst, tag, async);
           })
      .def("recv",
           [](Communicator& c, std::uintptr_t buf, std::size_t n, int dtype, const py::tuple& shape, int src, int tag,
              bool async) {
             const MessageShape m = shape_of(shape);
             py::gil_scoped_release release;
             return post_p2p(c, false, make_buffer(buf, n, dtype), m, src, tag, async);
           })
      // A CUDA array's send or receive between ranks of one node (collex/cuda/p2p.py),
      // posted (its Work is waited for there): the send's message carries
      // `descriptor`; the receive's deliver (deliver_matched) queues the copy and
      // returns the reply that the send's Work gives back (device_reply).
      .def("send_device",
           [](Communicator& c, std::uintptr_t buf, std::size_t n, int dtype, int device, const py::tuple& shape,
              int dst, int tag, const py::bytes& descriptor) {
             const MessageShape m = shape_of(shape);
             auto end = std::make_shared<DeviceEnd>();
             end->descriptor = descriptor;
             py::gil_scoped_release release;
             return c.send_device(device_buffer(buf, n, dtype, device), m, dst, tag, std::move(end));
           })
      .def("recv_device", [](Communicator& c, std::uintptr_t buf, std::size_t n, int dtype, int device,
                             const py::tuple& shape, int src, int tag, std::uint64_t deliver_key) {
        const MessageShape m = shape_of(shape);
        auto end = std::make_shared<DeviceEnd>();
        end->deliver = [deliver_key](const std::string& descriptor) {
          return deliver_matched(deliver_key, descriptor);
        };
        py::gil_scoped_release release;
        return c.recv_device(device_buffer(buf, n, dtype, device), m, src, tag, std::move(end));
      });
}

}  // namespace collex::bindings
