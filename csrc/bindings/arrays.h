// What the bindings share: turning Python objects into the core's arguments.
// A checked array (bindings/checks.h) becomes a Buffer; codes and names become
// DType, ReduceOp and Algo by the core's own tables (common/names.cpp).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "collex/common/buffer.h"
#include "collex/common/collective.h"
#include "collex/common/reduce_op.h"

namespace collex::bindings {

namespace py = pybind11;
using Guard = py::call_guard<py::gil_scoped_release>;

// A checked array (bindings/checks.h): its address, element count and dtype code.
struct Plain {
  std::uintptr_t address = 0;
  std::size_t count = 0;
  int code = -1;
};

Buffer make_buffer(std::uintptr_t address, std::size_t count, int dtype_code);
Buffer make_buffer(const Plain& p);
ReduceOp make_op(int code);
Algo make_algo(const std::string& name);

// ml_dtypes registers bfloat16 at run time; its NumPy type number is set once
// from Python (collex/_dtypes.py).
extern int bfloat16_type_num;

// The core's code of a NumPy dtype, or -1 for one collex does not handle
// (other kinds and sizes, and non-native byte order).
int dtype_code(const py::dtype& dt);

}  // namespace collex::bindings
