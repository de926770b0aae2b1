// upfirdn2d: zero-insertion up-sampling, padding (negative = cropping), 2-D FIR filter, down-sampling.
// One thread per output pixel; only the filter taps that meet a non-zero (inserted) sample are visited.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ int floor_mod(int a, int b) {
  const int r = a % b;
  return r < 0 ? r + b : r;
}

// f holds the filter in correlation order with the gain applied:
// out[oy, ox] = sum_{ky, kx} f[ky, kx] * padded_upsampled_x[oy * down + ky, ox * down + kx].
template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ out, int64_t total, int in_h, int in_w, int out_h,
                                 int out_w, int fh, int fw, int upx, int upy, int downx, int downy, int px0,
                                 int py0) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int ox = static_cast<int>(idx % out_w);
    const int oy = static_cast<int>((idx / out_w) % out_h);
    const int64_t plane = idx / (int64_t(out_w) * out_h);
    const scalar_t* x_plane = x + plane * int64_t(in_h) * in_w;
    const int uy0 = oy * downy - py0;  // position of filter tap 0 in the up-sampled input
    const int ux0 = ox * downx - px0;
    acc_t acc = acc_t(0);
    for (int ky = floor_mod(-uy0, upy); ky < fh; ky += upy) {
      const int iy = (uy0 + ky) / upy;  // exact: uy0 + ky is a multiple of upy
      if (iy < 0) continue;
      if (iy >= in_h) break;
      for (int kx = floor_mod(-ux0, upx); kx < fw; kx += upx) {
        const int ix = (ux0 + kx) / upx;
        if (ix < 0) continue;
        if (ix >= in_w) break;
        acc += static_cast<acc_t>(x_plane[int64_t(iy) * in_w + ix]) * static_cast<acc_t>(f[ky * fw + kx]);
      }
    }
    out[idx] = static_cast<scalar_t>(acc);
  }
}

}  // namespace

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy,
                             int64_t downx, int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
  const at::cuda::OptionalCUDAGuard device_guard(x.device());
  const int64_t in_h = x.size(2), in_w = x.size(3), fh = f.size(0), fw = f.size(1);
  const int64_t out_h = (in_h * upy + py0 + py1 - fh) / downy + 1;
  const int64_t out_w = (in_w * upx + px0 + px1 - fw) / downx + 1;
  TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d: the output would be empty");
  auto out = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 20);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d", [&] {
    upfirdn2d_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), f.data_ptr<float>(), out.data_ptr<scalar_t>(), total, static_cast<int>(in_h),
        static_cast<int>(in_w), static_cast<int>(out_h), static_cast<int>(out_w), static_cast<int>(fh),
        static_cast<int>(fw), static_cast<int>(upx), static_cast<int>(upy), static_cast<int>(downx),
        static_cast<int>(downy), static_cast<int>(px0), static_cast<int>(py0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}
