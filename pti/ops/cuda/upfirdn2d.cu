// The upfirdn2d kernel compiled for the GPU.
#include "backend_cuda.cuh"
#include "upfirdn2d_kernels.h"
