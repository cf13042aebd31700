// The checks of every argument a collective or send/recv receives from Python,
// and their messages: the one place they are written. A bad argument raises
// TypeError or ValueError before anything touches the wire, in one shape:
//   collex.<op> [rank r]: <argument>: expected ..., got ...
// A message is built only when its check fails, so a good call pays a few
// comparisons. Arrays arrive here as numpy.ndarray: the Python layer makes one
// of any other host array first (collex/_arrays.py), and CUDA arrays go their
// own way (collex/cuda/).
#pragma once

#include <pybind11/pybind11.h>

#include <vector>

#include "bindings/arrays.h"
#include "collex/common/collective.h"
#include "collex/common/dtype.h"
#include "collex/common/reduce_op.h"

namespace collex::bindings {

// Who is checking: the operation as the caller named it ("allreduce",
// "batch_p2p ops[2]") and this rank. `op` must outlive the check.
struct Where {
  const char* op;
  int rank;
};

// x: C-contiguous, of a supported dtype in native byte order, and writable when
// the result lands in it.
Plain checked_array(py::handle x, const char* arg, const Where& w, bool writable);
// out: a writable array of `shape` and x's dtype that is x or does not overlap it.
Plain checked_out(py::handle out, const std::vector<py::ssize_t>& shape, const Plain& x, const Where& w);
// The output shape of an all-gather of x (size, *x.shape) and of a
// reduce-scatter ((x.shape[0] / size, *x.shape[1:]); x.shape[0] must divide).
std::vector<py::ssize_t> gathered_shape(py::handle x, int size);
std::vector<py::ssize_t> scattered_shape(const std::vector<py::ssize_t>& x_shape, int size, const Where& w);
// A reduction operator by name; avg only for floating-point dtypes.
ReduceOp checked_op(py::handle op, int dtype_code, const Where& w);
// An algorithm a caller may name (algo=).
Algo checked_algo(py::handle algo, const Where& w);
// A rank of a communicator of `size` (root, dst, src, peer): an int, not a bool.
int checked_rank(py::handle value, const char* name, int size, const Where& w);
// A message tag in [0, max_tag].
int checked_tag(py::handle tag, int max_tag, const Where& w);

// The same checks for the Python layer's adapters (CUDA arrays, the gradient
// reducer, batch_p2p): check_array, check_op, check_rank, check_tag.
void bind_checks(py::module_& m);

}  // namespace collex::bindings
