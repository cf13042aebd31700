// What the bindings share: turning Python objects into the core's arguments.
// A plain array (C-contiguous NumPy array of a supported dtype in native byte
// order) becomes a Buffer; names become ReduceOp and Algo codes by the core's
// own tables (common/names.cpp).
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

Buffer make_buffer(std::uintptr_t address, std::size_t count, int dtype_code);
ReduceOp make_op(int code);
Algo make_algo(const std::string& name);

// ml_dtypes registers bfloat16 at run time; its NumPy type number is set once
// from Python (collex/_dtypes.py).
extern int bfloat16_type_num;

// A plain array's address, element count and dtype code.
struct Plain {
  std::uintptr_t address = 0;
  std::size_t count = 0;
  int code = -1;
};

// The fast path of the Python layer's array checks. False sends the call to the
// Python layer, whose full checks produce the error message; checking here in one
// step instead of several attribute look-ups keeps small collectives cheap.
bool plain_array(py::handle obj, bool writable, Plain* out);
// For the Python layer: (address, element count, dtype code), or None.
py::object inspect_array(py::handle obj, bool writable);
bool same_shape(py::handle a, py::handle b);
// The code of an op name, or -1 (not a str, or no such op).
int op_code(py::handle op);
// An algorithm a caller may name (algo_from_string), from a str.
bool algo_code(py::handle algo, Algo* out);
// A Python int that fits a long, read without raising: an int too large for
// one is left to the Python layer's checks (which name it) like any bad value.
bool exact_long(py::handle h, long* value);

}  // namespace collex::bindings
