// The kernels compiled for the host and launched as serial loops over blocks and threads (CPU tests of the CUDA code).
#include "backend_host.h"
#include "bias_act_kernels.h"
#include "upfirdn2d_kernels.h"
