// The reduction, conversion and copy loops built for the generic instruction set (flags in CMakeLists.txt).
#define COLLEX_KERNEL_ISA generic
#include "collex/kernels/convert_loops.h"
#include "collex/kernels/copy_loops.h"
#include "collex/kernels/reduce_loops.h"
