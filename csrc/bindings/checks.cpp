#include "bindings/checks.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace collex::bindings {
namespace {

std::string prefix(const Where& w) {
  return std::string("collex.") + w.op + " [rank " + std::to_string(w.rank) + "]: ";
}

[[noreturn]] void type_error(const Where& w, const std::string& text) { throw py::type_error(prefix(w) + text); }
[[noreturn]] void value_error(const Where& w, const std::string& text) { throw py::value_error(prefix(w) + text); }

std::string text_of(py::handle h) { return py::str(h).cast<std::string>(); }
std::string repr_of(py::handle h) { return py::repr(h).cast<std::string>(); }

std::string describe(const py::array& a) {
  return "shape=" + text_of(a.attr("shape")) + " strides=" + text_of(a.attr("strides")) +
         " dtype=" + text_of(a.dtype());
}

std::string shape_text(const std::vector<py::ssize_t>& shape) {
  py::tuple t(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) t[i] = shape[i];
  return text_of(t);
}

std::string supported_dtypes() {
  std::string names;
  for (int code = 0; code < kNumDTypes; ++code) {
    names += (code ? ", " : "") + std::string(dtype_name(static_cast<DType>(code)));
  }
  return names;
}

template <typename Enum, typename Name>
std::string quoted_names(const Enum* values, std::size_t n, Name name) {
  std::string names;
  for (std::size_t i = 0; i < n; ++i) names += (i ? ", '" : "'") + std::string(name(values[i])) + "'";
  return names;
}

// An int (Python's or NumPy's, not a bool) as a long long; false when it does
// not fit one, which no rank or tag can be.
bool integer(py::handle h, long long* value, bool* fits) {
  if (PyBool_Check(h.ptr()) || !PyIndex_Check(h.ptr())) return false;
  py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(h.ptr()));
  if (!i) {  // an __index__ that refuses (NumPy's bool): not an int either
    PyErr_Clear();
    return false;
  }
  int overflow = 0;
  *value = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
  *fits = overflow == 0;
  return true;
}

// One array as the checks see it, from a NumPy array or from a CUDA array's
// interface; the texts of its dtype and of the whole array are made only for a
// message.
struct Facts {
  int code = -1;  // -1: a dtype collex does not handle
  bool contiguous = true;
  bool read_only = false;
  std::uintptr_t address = 0;
  std::size_t count = 0;
};

template <typename DtypeText, typename Describe>
Plain checked_facts(const Facts& f, const char* arg, const Where& w, bool writable, DtypeText dtype_text,
                    Describe describe) {
  if (f.code < 0) {
    type_error(
        w, std::string(arg) + ": expected one of " + supported_dtypes() + ", got unsupported dtype " + dtype_text());
  }
  if (!f.contiguous) value_error(w, std::string(arg) + ": expected a C-contiguous array, got " + describe());
  if (writable && f.read_only) {
    value_error(w, std::string(arg) +
                       ": expected a writable array (the result is written into it), got a read-only one (" +
                       describe() + ")");
  }
  Plain p;
  p.address = f.address;
  p.count = f.count;
  p.code = f.code;
  return p;
}

// out (checked as an array already) against the shape and dtype the operation
// produces, and apart from x unless it is x.
template <typename GotText>
void checked_fit(bool shape_fits, const Plain& o, const std::vector<py::ssize_t>& shape, const Plain& x, const Where& w,
                 GotText got) {
  if (!shape_fits || o.code != x.code) {
    value_error(w, "out: expected shape=" + shape_text(shape) + " dtype=" + dtype_name(static_cast<DType>(x.code)) +
                       ", got " + got());
  }
  // Both are contiguous, so they overlap exactly when their byte ranges do.
  const std::size_t size = dtype_size(static_cast<DType>(x.code));
  const std::uintptr_t o_end = o.address + o.count * size, x_end = x.address + x.count * size;
  const bool same = o.address == x.address && o.count == x.count;
  if (!same && o.address < x_end && x.address < o_end) {
    value_error(
        w, "out: expected x itself or an array apart from it, got one that overlaps x; pass out=None for in place");
  }
}

std::vector<py::ssize_t> dims_of(const py::tuple& t) {
  std::vector<py::ssize_t> dims;
  for (py::handle d : t) dims.push_back(d.cast<py::ssize_t>());
  return dims;
}

// A CUDA array's interface fields as Facts: strides None or C order (any
// strides for at most one element).
Facts device_facts(const std::vector<py::ssize_t>& shape, py::handle strides, py::handle dtype, std::uintptr_t pointer,
                   bool read_only) {
  Facts f;
  f.code = dtype.is_none() ? -1 : dtype_code(py::reinterpret_borrow<py::dtype>(dtype));
  f.count = 1;
  for (py::ssize_t d : shape) f.count *= static_cast<std::size_t>(d);
  if (!strides.is_none() && f.code >= 0 && f.count > 1) {
    const std::vector<py::ssize_t> got = dims_of(py::reinterpret_borrow<py::tuple>(strides));
    py::ssize_t step = static_cast<py::ssize_t>(dtype_size(static_cast<DType>(f.code)));
    f.contiguous = got.size() == shape.size();
    for (std::size_t i = shape.size(); f.contiguous && i-- > 0;) {
      f.contiguous = got[i] == step;
      step *= std::max<py::ssize_t>(shape[i], 1);
    }
  }
  f.read_only = read_only;
  f.address = pointer;
  return f;
}

}  // namespace

Plain checked_array(py::handle x, const char* arg, const Where& w, bool writable) {
  auto a = py::reinterpret_borrow<py::array>(x);
  Facts f;
  f.code = dtype_code(a.dtype());
  f.contiguous = (a.flags() & py::array::c_style) != 0;
  f.read_only = !a.writeable();
  f.address = reinterpret_cast<std::uintptr_t>(a.data());
  f.count = static_cast<std::size_t>(a.size());
  return checked_facts(f, arg, w, writable, [&] { return text_of(a.dtype()); }, [&] { return describe(a); });
}

Plain checked_out(py::handle out, const std::vector<py::ssize_t>& shape, const Plain& x, const Where& w) {
  const Plain o = checked_array(out, "out", w, true);
  auto a = py::reinterpret_borrow<py::array>(out);
  bool fits = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (std::size_t i = 0; fits && i < shape.size(); ++i) fits = a.shape(static_cast<py::ssize_t>(i)) == shape[i];
  checked_fit(fits, o, shape, x, w,
              [&] { return "shape=" + text_of(a.attr("shape")) + " dtype=" + text_of(a.dtype()); });
  return o;
}

std::vector<py::ssize_t> gathered_shape(py::handle x, int size) {
  auto a = py::reinterpret_borrow<py::array>(x);
  std::vector<py::ssize_t> shape{size};
  for (py::ssize_t i = 0; i < a.ndim(); ++i) shape.push_back(a.shape(i));
  return shape;
}

std::vector<py::ssize_t> scattered_shape(const std::vector<py::ssize_t>& x_shape, int size, const Where& w) {
  if (x_shape.empty() || x_shape[0] % size != 0) {
    value_error(w, "x: expected x.shape[0] divisible by the communicator size " + std::to_string(size) +
                       ", got shape=" + shape_text(x_shape));
  }
  std::vector<py::ssize_t> shape(x_shape);
  shape[0] /= size;
  return shape;
}

ReduceOp checked_op(py::handle op, int dtype_code, const Where& w) {
  const char* name = PyUnicode_Check(op.ptr()) ? PyUnicode_AsUTF8(op.ptr()) : nullptr;
  for (ReduceOp o : kReduceOps) {
    if (name == nullptr || std::strcmp(name, reduce_op_name(o)) != 0) continue;
    if (o == ReduceOp::kAvg && !dtype_is_float(static_cast<DType>(dtype_code))) {
      value_error(w, std::string("op='avg': expected a floating-point dtype, got ") +
                         dtype_name(static_cast<DType>(dtype_code)) + "; use op='sum' and divide");
    }
    return o;
  }
  if (name == nullptr) PyErr_Clear();  // a str that is not UTF-8 is an unknown op too
  value_error(w, "op: expected one of " + quoted_names(kReduceOps, std::size(kReduceOps), reduce_op_name) +
                     ", got op=" + repr_of(op));
}

Algo checked_algo(py::handle algo, const Where& w) {
  Algo a;
  const char* name = PyUnicode_Check(algo.ptr()) ? PyUnicode_AsUTF8(algo.ptr()) : nullptr;
  if (name != nullptr && algo_from_string(name, &a)) return a;
  if (name == nullptr) PyErr_Clear();
  value_error(w, "algo: expected one of " + quoted_names(kNamedAlgos, std::size(kNamedAlgos), algo_name) +
                     ", got algo=" + repr_of(algo));
}

int checked_rank(py::handle value, const char* name, int size, const Where& w) {
  long long r = 0;
  bool fits = false;
  if (!integer(value, &r, &fits)) {
    type_error(
        w, std::string(name) + ": expected an int, got " + py::type::of(value).attr("__name__").cast<std::string>());
  }
  if (!fits || r < 0 || r >= size) {
    value_error(w, std::string(name) + ": expected 0 <= " + name + " < " + std::to_string(size) + ", got " + name +
                       "=" + text_of(value) + " (out of range)");
  }
  return static_cast<int>(r);
}

int checked_tag(py::handle tag, int max_tag, const Where& w) {
  long long t = 0;
  bool fits = false;
  if (!integer(tag, &t, &fits) || !fits || t < 0 || t > max_tag) {
    value_error(w, "tag: expected an int in [0, " + std::to_string(max_tag) + "], got tag=" + repr_of(tag));
  }
  return static_cast<int>(t);
}

void bind_checks(py::module_& m) {
  // Each returns what the check found, or raises its message.
  m.def(
      "check_array",
      [](py::array x, const std::string& arg, const std::string& op, int rank, bool writable) {
        const Plain p = checked_array(x, arg.c_str(), Where{op.c_str(), rank}, writable);
        return py::make_tuple(p.address, p.count, p.code);
      },
      py::arg("x"), py::arg("arg"), py::arg("op"), py::arg("rank"), py::arg("writable"));
  m.def(
      "check_op",
      [](py::handle op, int dtype_code, const std::string& where, int rank) {
        return static_cast<int>(checked_op(op, dtype_code, Where{where.c_str(), rank}));
      },
      py::arg("op"), py::arg("dtype_code"), py::arg("where"), py::arg("rank"));
  m.def(
      "check_rank",
      [](py::handle value, const std::string& name, int size, const std::string& op, int rank) {
        return checked_rank(value, name.c_str(), size, Where{op.c_str(), rank});
      },
      py::arg("value"), py::arg("name"), py::arg("size"), py::arg("op"), py::arg("rank"));
  m.def(
      "check_tag",
      [](py::handle tag, int max_tag, const std::string& op, int rank) {
        return checked_tag(tag, max_tag, Where{op.c_str(), rank});
      },
      py::arg("tag"), py::arg("max_tag"), py::arg("op"), py::arg("rank"));
  // The output shape of a reduce-scatter of an array of `shape` (a tuple), or its message.
  m.def(
      "check_scattered_shape",
      [](const py::tuple& shape, int size, const std::string& op, int rank) {
        const std::vector<py::ssize_t> out = scattered_shape(dims_of(shape), size, Where{op.c_str(), rank});
        py::tuple t(out.size());
        for (std::size_t i = 0; i < out.size(); ++i) t[i] = out[i];
        return t;
      },
      py::arg("shape"), py::arg("size"), py::arg("op"), py::arg("rank"));
  // A CUDA array from its __cuda_array_interface__ fields (dtype: NumPy's
  // reading of typestr, or None); returns (pointer, count, code).
  m.def(
      "check_device_array",
      [](const py::tuple& shape, py::handle strides, py::handle dtype, const std::string& typestr,
         std::uintptr_t pointer, bool read_only, const std::string& arg, const std::string& op, int rank,
         bool writable) {
        const std::vector<py::ssize_t> dims = dims_of(shape);
        const Facts f = device_facts(dims, strides, dtype, pointer, read_only);
        const Plain p = checked_facts(
            f, arg.c_str(), Where{op.c_str(), rank}, writable, [&] { return repr_of(py::str(typestr)); },
            [&] { return "shape=" + text_of(shape) + " strides=" + text_of(strides) + " dtype=" + text_of(dtype); });
        return py::make_tuple(p.address, p.count, p.code);
      },
      py::arg("shape"), py::arg("strides"), py::arg("dtype"), py::arg("typestr"), py::arg("pointer"),
      py::arg("read_only"), py::arg("arg"), py::arg("op"), py::arg("rank"), py::arg("writable"));
  // A checked CUDA out (pointer, count, code, its shape) against the shape the
  // operation produces and the checked x (pointer, count, code).
  m.def(
      "check_device_out",
      [](const py::tuple& out, const py::tuple& out_shape, const py::tuple& shape, const py::tuple& x,
         const std::string& op, int rank) {
        auto plain = [](const py::tuple& t) {
          Plain p;
          p.address = t[0].cast<std::uintptr_t>();
          p.count = t[1].cast<std::size_t>();
          p.code = t[2].cast<int>();
          return p;
        };
        const std::vector<py::ssize_t> want = dims_of(shape);
        const Plain o = plain(out);
        checked_fit(dims_of(out_shape) == want, o, want, plain(x), Where{op.c_str(), rank},
                    [&] { return "shape=" + text_of(out_shape) + " dtype=" + dtype_name(static_cast<DType>(o.code)); });
      },
      py::arg("out"), py::arg("out_shape"), py::arg("shape"), py::arg("x"), py::arg("op"), py::arg("rank"));
}

}  // namespace collex::bindings
