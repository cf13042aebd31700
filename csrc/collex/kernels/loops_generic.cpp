// The reduction and conversion loops built for the generic instruction set (flags in CMakeLists.txt).
#define COLLEX_KERNEL_ISA generic
#include "collex/kernels/convert_loops.h"
#include "collex/kernels/reduce_loops.h"
