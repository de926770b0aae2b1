// The bias_act kernels compiled for the GPU.
#include "backend_cuda.cuh"
#include "bias_act_kernels.h"
