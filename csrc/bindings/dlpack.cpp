// DLPack, the array exchange protocol of PyTorch, JAX and CuPy: what a capsule
// from `__dlpack__` describes, for CUDA arrays that do not expose
// `__cuda_array_interface__` (host ones NumPy reads itself, numpy.from_dlpack).
// The structs follow the DLPack specification's layout (legacy and versioned).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bindings/bindings.h"

namespace collex::bindings {

namespace py = pybind11;

namespace {

struct DlDevice {
  std::int32_t device_type;
  std::int32_t device_id;
};
struct DlDataType {
  std::uint8_t code;  // 0 int, 1 uint, 2 float, 4 bfloat
  std::uint8_t bits;
  std::uint16_t lanes;
};
struct DlTensor {
  void* data;
  DlDevice device;
  std::int32_t ndim;
  DlDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;  // in elements; null: C-contiguous
  std::uint64_t byte_offset;
};
struct DlManagedTensor {  // capsule "dltensor"
  DlTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DlManagedTensor*);
};
struct DlManagedTensorVersioned {  // capsule "dltensor_versioned" (DLPack 1.x)
  std::uint32_t major;
  std::uint32_t minor;
  void* manager_ctx;
  void (*deleter)(DlManagedTensorVersioned*);
  std::uint64_t flags;  // bit 0: read-only
  DlTensor dl_tensor;
};

// The NumPy type string of a DLPack dtype ("<f4"), or "" for one NumPy has no
// name for (bfloat16 among them, which __cuda_array_interface__ cannot carry either).
std::string typestr(const DlDataType& t) {
  if (t.lanes != 1 || t.bits % 8 != 0) return "";
  const char kind = t.code == 0 ? 'i' : t.code == 1 ? 'u' : t.code == 2 ? 'f' : '\0';
  if (kind == '\0') return "";
  return std::string(t.bits == 8 ? "|" : "<") + kind + std::to_string(t.bits / 8);
}

// (data address, device type, device id, shape, strides in bytes or None,
// typestr, read-only) of the tensor in a capsule from __dlpack__. The capsule
// keeps the producer's memory alive; the caller keeps the capsule.
py::tuple describe(const py::capsule& capsule) {
  const std::string name = capsule.name() ? capsule.name() : "";
  const DlTensor* t = nullptr;
  bool read_only = false;
  if (name == "dltensor") {
    t = &static_cast<DlManagedTensor*>(capsule.get_pointer())->dl_tensor;
  } else if (name == "dltensor_versioned") {
    auto* v = static_cast<DlManagedTensorVersioned*>(capsule.get_pointer());
    if (v->major != 1) throw py::type_error("DLPack: version " + std::to_string(v->major) + " is not understood");
    t = &v->dl_tensor;
    read_only = (v->flags & 1u) != 0;
  } else {
    throw py::type_error("DLPack: expected a \"dltensor\" capsule, got \"" + name + "\" (already consumed?)");
  }
  py::tuple shape(t->ndim);
  for (int i = 0; i < t->ndim; ++i) shape[i] = t->shape[i];
  py::object strides = py::none();
  if (t->strides != nullptr) {
    py::tuple s(t->ndim);
    for (int i = 0; i < t->ndim; ++i) s[i] = t->strides[i] * (t->dtype.bits / 8);
    strides = s;
  }
  const auto address = reinterpret_cast<std::uintptr_t>(t->data) + t->byte_offset;
  return py::make_tuple(address, t->device.device_type, t->device.device_id, shape, strides, typestr(t->dtype),
                        read_only);
}

}  // namespace

void bind_dlpack(py::module_& m) { m.def("_dlpack_describe", &describe, py::arg("capsule")); }

}  // namespace collex::bindings
