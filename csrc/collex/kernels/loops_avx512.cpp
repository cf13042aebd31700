// The reduction, conversion and copy loops built for the avx512 instruction set (flags in CMakeLists.txt).
#define COLLEX_KERNEL_ISA avx512
#include "collex/kernels/convert_loops.h"
#include "collex/kernels/copy_loops.h"
#include "collex/kernels/reduce_loops.h"
