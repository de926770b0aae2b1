// bias + activation (linear / relu / leaky relu) + gain + clamp, and its gradient from the output: kernels and launches.
// Included once per build: by bias_act.cu (nvcc) or by host_emulation.cpp (the CPU test build).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "launch_config.h"
#include "launchers.h"

namespace pti_ops {

// Activation codes (pti.ops.bias_act.ACTIVATIONS): 0 linear, 1 relu, 2 leaky relu.
constexpr int kRelu = 1;
constexpr int kLeakyRelu = 2;

// x and out may be the same buffer (in-place use): no __restrict__ on them.
template <typename scalar_t>
__global__ void bias_act_forward_kernel(const scalar_t* x, const scalar_t* __restrict__ bias, scalar_t* out,
                                        int64_t numel, int64_t bias_stride, int64_t bias_size, int act,
                                        at::opmath_type<scalar_t> alpha, at::opmath_type<scalar_t> gain,
                                        at::opmath_type<scalar_t> clamp) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < numel;
       i += int64_t(blockDim.x) * gridDim.x) {
    acc_t v = static_cast<acc_t>(x[i]);
    if (bias != nullptr) v += static_cast<acc_t>(bias[(i / bias_stride) % bias_size]);
    if (act == kRelu) {
      v = v > acc_t(0) ? v : acc_t(0);
    } else if (act == kLeakyRelu) {
      v = v > acc_t(0) ? v : v * alpha;
    }
    v *= gain;
    if (clamp >= acc_t(0)) v = v > clamp ? clamp : (v < -clamp ? -clamp : v);
    out[i] = static_cast<scalar_t>(v);
  }
}

// The derivative is recovered from the output y (gain > 0 keeps the sign of the activation's input).
template <typename scalar_t>
__global__ void bias_act_backward_kernel(const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ y,
                                         scalar_t* __restrict__ grad_x, int64_t numel, int act,
                                         at::opmath_type<scalar_t> alpha, at::opmath_type<scalar_t> gain,
                                         at::opmath_type<scalar_t> clamp) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < numel;
       i += int64_t(blockDim.x) * gridDim.x) {
    const acc_t yv = static_cast<acc_t>(y[i]);
    acc_t g = static_cast<acc_t>(grad_y[i]) * gain;
    if (act == kRelu && !(yv > acc_t(0))) {
      g = acc_t(0);
    } else if (act == kLeakyRelu && !(yv > acc_t(0))) {
      g *= alpha;
    }
    if (clamp >= acc_t(0) && (yv >= clamp || yv <= -clamp)) g = acc_t(0);
    grad_x[i] = static_cast<scalar_t>(g);
  }
}

void bias_act_forward_launch(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& out, int64_t bias_stride,
                             int64_t bias_size, int64_t act, double alpha, double gain, double clamp) {
  PTI_DEVICE_GUARD(x);
  const int64_t numel = x.numel();
  if (numel == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(),
                                  "bias_act_forward", [&] {
    PTI_LAUNCH(bias_act_forward_kernel<scalar_t>, num_blocks(numel), kThreads, x.const_data_ptr<scalar_t>(),
               bias.numel() > 0 ? bias.const_data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), numel,
               bias_stride, std::max<int64_t>(bias_size, 1), static_cast<int>(act),
               static_cast<at::opmath_type<scalar_t>>(alpha), static_cast<at::opmath_type<scalar_t>>(gain),
               static_cast<at::opmath_type<scalar_t>>(clamp));
  });
}

void bias_act_backward_launch(const at::Tensor& grad_y, const at::Tensor& y, const at::Tensor& grad_x, int64_t act,
                              double alpha, double gain, double clamp) {
  PTI_DEVICE_GUARD(y);
  const int64_t numel = y.numel();
  if (numel == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, y.scalar_type(),
                                  "bias_act_backward", [&] {
    PTI_LAUNCH(bias_act_backward_kernel<scalar_t>, num_blocks(numel), kThreads, grad_y.const_data_ptr<scalar_t>(),
               y.const_data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(), numel, static_cast<int>(act),
               static_cast<at::opmath_type<scalar_t>>(alpha), static_cast<at::opmath_type<scalar_t>>(gain),
               static_cast<at::opmath_type<scalar_t>>(clamp));
  });
}

}  // namespace pti_ops
