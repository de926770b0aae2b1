// Launch configuration shared by the kernels: threads per block and the grid size of grid-stride loops.
#pragma once

#include <algorithm>
#include <cstdint>

namespace pti_ops {

constexpr int kThreads = 256;

// Grid-stride loops cover any size; the host emulation lowers the cap (-DPTI_OPS_MAX_BLOCKS=...) so that its tests
// run the striding on small tensors.
#ifndef PTI_OPS_MAX_BLOCKS
#define PTI_OPS_MAX_BLOCKS (int64_t(1) << 20)
#endif

inline int64_t num_blocks(int64_t numel) {
  return std::min<int64_t>((numel + kThreads - 1) / kThreads, PTI_OPS_MAX_BLOCKS);
}

}  // namespace pti_ops
