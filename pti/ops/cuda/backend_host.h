// The host side of the kernel headers: CUDA's kernel qualifiers and built-in index variables, and a launch that runs
// every thread of every block one after another. Exact for kernels without shared memory or __syncthreads (ours).
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>

#define __global__
#define __device__
#define __forceinline__ inline

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

// CUDA's built-in variables. thread_local: two host threads (e.g. the autograd engine's) may launch at once.
inline thread_local dim3 gridDim, blockDim, blockIdx, threadIdx;

namespace pti_ops {

// CUDA's limits: at most 1024 threads per block, 2^31 - 1 blocks in x.
template <typename Kernel, typename... Args>
void emulate_launch(Kernel kernel, int64_t grid, int64_t block, Args... args) {
  TORCH_CHECK(grid >= 1 && grid <= (int64_t(1) << 31) - 1, "emulated launch: invalid grid size ", grid);
  TORCH_CHECK(block >= 1 && block <= 1024, "emulated launch: invalid block size ", block);
  gridDim = dim3{static_cast<unsigned int>(grid), 1, 1};
  blockDim = dim3{static_cast<unsigned int>(block), 1, 1};
  for (int64_t b = 0; b < grid; ++b) {
    for (int64_t t = 0; t < block; ++t) {
      blockIdx = dim3{static_cast<unsigned int>(b), 0, 0};
      threadIdx = dim3{static_cast<unsigned int>(t), 0, 0};
      kernel(args...);
    }
  }
}

}  // namespace pti_ops

#define PTI_DEVICE_GUARD(tensor) static_cast<void>(tensor)
#define PTI_LAUNCH(kernel, grid, block, ...) pti_ops::emulate_launch(kernel, (grid), (block), __VA_ARGS__)
