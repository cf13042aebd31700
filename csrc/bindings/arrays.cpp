#include "bindings/arrays.h"

#include <cstring>

#include "collex/common/errors.h"

namespace collex::bindings {

int bfloat16_type_num = -1;

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

py::object inspect_array(py::handle obj, bool writable) {
  Plain p;
  if (!plain_array(obj, writable, &p)) return py::none();
  return py::make_tuple(p.address, p.count, p.code);
}

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

bool exact_long(py::handle h, long* value) {
  if (!PyLong_CheckExact(h.ptr())) return false;
  int overflow = 0;
  *value = PyLong_AsLongAndOverflow(h.ptr(), &overflow);
  return overflow == 0;
}

}  // namespace collex::bindings
