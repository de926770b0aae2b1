// upfirdn2d: zero-insertion up-sampling, padding (negative = cropping), 2-D FIR filter, down-sampling: kernel and launch.
// One thread per output pixel; only the filter taps that meet a non-zero (inserted) sample are visited.
// Included once per build: by upfirdn2d.cu (nvcc) or by host_emulation.cpp (the CPU test build).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "launch_config.h"
#include "launchers.h"

namespace pti_ops {

struct Upfirdn2dGeometry {
  int64_t total;                          // number of output values
  int64_t sx_n, sx_c, sx_h, sx_w;         // strides of x (any layout)
  int channels, in_h, in_w, out_h, out_w;
  int fh, fw, upx, upy, downx, downy, px0, py0;
  bool channels_last;                     // output order: (n, y, x, c) instead of (n, c, y, x)
};

__device__ __forceinline__ int floor_mod(int a, int b) {
  const int r = a % b;
  return r < 0 ? r + b : r;
}

// f holds the filter in correlation order with the gain applied:
// out[oy, ox] = sum_{ky, kx} f[ky, kx] * padded_upsampled_x[oy * down + ky, ox * down + kx].
// Threads walk the output in its memory order, so neighbouring threads write neighbouring values.
template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ out, Upfirdn2dGeometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < g.total;
       idx += int64_t(blockDim.x) * gridDim.x) {
    int64_t rest = idx;
    int c = 0;
    if (g.channels_last) {
      c = static_cast<int>(rest % g.channels);
      rest /= g.channels;
    }
    const int ox = static_cast<int>(rest % g.out_w);
    rest /= g.out_w;
    const int oy = static_cast<int>(rest % g.out_h);
    rest /= g.out_h;
    if (!g.channels_last) {
      c = static_cast<int>(rest % g.channels);
      rest /= g.channels;
    }
    const scalar_t* x_plane = x + rest * g.sx_n + c * g.sx_c;
    const int uy0 = oy * g.downy - g.py0;  // position of filter tap 0 in the up-sampled input
    const int ux0 = ox * g.downx - g.px0;
    acc_t acc = acc_t(0);
    for (int ky = floor_mod(-uy0, g.upy); ky < g.fh; ky += g.upy) {
      const int iy = (uy0 + ky) / g.upy;  // exact: uy0 + ky is a multiple of upy
      if (iy < 0) continue;
      if (iy >= g.in_h) break;
      for (int kx = floor_mod(-ux0, g.upx); kx < g.fw; kx += g.upx) {
        const int ix = (ux0 + kx) / g.upx;
        if (ix < 0) continue;
        if (ix >= g.in_w) break;
        acc += static_cast<acc_t>(x_plane[iy * g.sx_h + ix * g.sx_w]) * static_cast<acc_t>(f[ky * g.fw + kx]);
      }
    }
    out[idx] = static_cast<scalar_t>(acc);
  }
}

at::Tensor upfirdn2d_launch(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                            int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool channels_last) {
  PTI_DEVICE_GUARD(x);
  const int64_t in_h = x.size(2), in_w = x.size(3), fh = f.size(0), fw = f.size(1);
  const int64_t out_h = (in_h * upy + py0 + py1 - fh) / downy + 1;
  const int64_t out_w = (in_w * upx + px0 + px1 - fw) / downx + 1;
  TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d: the output would be empty");
  const auto memory_format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto out = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(memory_format));
  const int64_t total = out.numel();
  if (total == 0) return out;
  const Upfirdn2dGeometry geometry{total, x.stride(0), x.stride(1), x.stride(2), x.stride(3),
                                   static_cast<int>(x.size(1)), static_cast<int>(in_h), static_cast<int>(in_w),
                                   static_cast<int>(out_h), static_cast<int>(out_w), static_cast<int>(fh),
                                   static_cast<int>(fw), static_cast<int>(upx), static_cast<int>(upy),
                                   static_cast<int>(downx), static_cast<int>(downy), static_cast<int>(px0),
                                   static_cast<int>(py0), channels_last};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d", [&] {
    PTI_LAUNCH(upfirdn2d_kernel<scalar_t>, num_blocks(total), kThreads, x.const_data_ptr<scalar_t>(),
               f.const_data_ptr<float>(), out.data_ptr<scalar_t>(), geometry);
  });
  return out;
}

}  // namespace pti_ops
