#include "bindings/arrays.h"

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

Buffer make_buffer(const Plain& p) { return make_buffer(p.address, p.count, p.code); }

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

int dtype_code(const py::dtype& dt) {
  if (dt.byteorder() == '>') return -1;
  if (dt.num() == bfloat16_type_num) return static_cast<int>(DType::kBFloat16);
  // NumPy's kind and size name a type whatever its type number (int64 has two).
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
  else
    return -1;
  return static_cast<int>(t);
}

}  // namespace collex::bindings
