// The CUDA side of the kernel headers: device guard and kernel launch on the current stream.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#define PTI_DEVICE_GUARD(tensor) const at::cuda::OptionalCUDAGuard pti_device_guard((tensor).device())

#define PTI_LAUNCH(kernel, grid, block, ...)                                              \
  do {                                                                                    \
    kernel<<<(grid), (block), 0, c10::cuda::getCurrentCUDAStream()>>>(__VA_ARGS__);       \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                       \
  } while (false)
