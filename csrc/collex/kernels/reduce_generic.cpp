// The reduction loops built for the generic instruction set (flags in CMakeLists.txt).
#define COLLEX_KERNEL_ISA generic
#include "collex/kernels/reduce_loops.h"
