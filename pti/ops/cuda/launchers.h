// The kernel launchers that ops.cpp binds: defined by the kernel headers, compiled by nvcc or by the host emulation.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace pti_ops {

// out = clamp(act(x + bias) * gain); x and out dense with the same layout (out may be x).
void bias_act_forward_launch(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& out, int64_t bias_stride,
                             int64_t bias_size, int64_t act, double alpha, double gain, double clamp);

// grad_x = d bias_act / dx * grad_y, from the output y; all three dense with the same layout.
void bias_act_backward_launch(const at::Tensor& grad_y, const at::Tensor& y, const at::Tensor& grad_x, int64_t act,
                              double alpha, double gain, double clamp);

// upfirdn2d of x (any strides) with the correlation-ordered float32 filter f; a dense result, channels-last on request.
at::Tensor upfirdn2d_launch(const at::Tensor& x, const at::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                            int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool channels_last);

}  // namespace pti_ops
