// Python bindings and argument checks of the ops plugin (bias_act, upfirdn2d). The same file binds the CUDA build and,
// compiled with -DPTI_OPS_HOST_EMULATION, the host emulation of the kernels that the CPU tests run.
#include <torch/extension.h>

#include "launchers.h"

namespace {

#ifdef PTI_OPS_HOST_EMULATION
constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;
#else
constexpr c10::DeviceType kDevice = c10::DeviceType::CUDA;
#endif

bool is_dense(const torch::Tensor& t) {
  return t.is_contiguous() || (t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast));
}

// Same shape, and the same memory offset for every index: strides may differ only where a dimension has size 1.
bool same_layout(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

void check_like_x(const torch::Tensor& x, const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == x.device(), name, " must be on the device of x");
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), name, " must have the dtype of x");
  TORCH_CHECK(same_layout(x, t), name, " must have the shape and layout of x");
}

void check_activation(int64_t act) {
  TORCH_CHECK(act >= 0 && act <= 2, "bias_act: unknown activation code ", act);
}

void bias_act_forward(const torch::Tensor& x, const torch::Tensor& bias, const torch::Tensor& out,
                      int64_t bias_stride, int64_t bias_size, int64_t act, double alpha, double gain, double clamp) {
  TORCH_CHECK(x.device().type() == kDevice, "bias_act: x must be a ", kDevice, " tensor");
  TORCH_CHECK(is_dense(x), "bias_act: x must be contiguous or channels-last");
  check_like_x(x, out, "bias_act: out");
  check_activation(act);
  if (bias.numel() > 0) {
    TORCH_CHECK(bias.device() == x.device(), "bias_act: bias must be on the device of x");
    TORCH_CHECK(bias.scalar_type() == x.scalar_type(), "bias_act: bias must have the dtype of x");
    TORCH_CHECK(bias.dim() == 1 && bias.is_contiguous() && bias.numel() == bias_size,
                "bias_act: bias must be a contiguous vector of length ", bias_size);
    TORCH_CHECK(bias_stride > 0, "bias_act: bias stride must be positive");
  }
  pti_ops::bias_act_forward_launch(x, bias, out, bias_stride, bias_size, act, alpha, gain, clamp);
}

void bias_act_backward(const torch::Tensor& grad_y, const torch::Tensor& y, const torch::Tensor& grad_x, int64_t act,
                       double alpha, double gain, double clamp) {
  TORCH_CHECK(y.device().type() == kDevice, "bias_act backward: y must be a ", kDevice, " tensor");
  TORCH_CHECK(is_dense(y), "bias_act backward: y must be contiguous or channels-last");
  check_like_x(y, grad_y, "bias_act backward: grad_y");
  check_like_x(y, grad_x, "bias_act backward: grad_x");
  check_activation(act);
  pti_ops::bias_act_backward_launch(grad_y, y, grad_x, act, alpha, gain, clamp);
}

torch::Tensor upfirdn2d(const torch::Tensor& x, const torch::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                        int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1, bool channels_last) {
  TORCH_CHECK(x.device().type() == kDevice && x.dim() == 4, "upfirdn2d: x must be a 4-D ", kDevice, " tensor");
  TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on the device of x");
  TORCH_CHECK(f.scalar_type() == torch::kFloat32 && f.dim() == 2 && f.is_contiguous(),
              "upfirdn2d: f must be a contiguous 2-D float32 tensor");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: factors must be >= 1");
  TORCH_CHECK(x.size(1) < (int64_t(1) << 30) &&
                  x.size(2) * upy + std::abs(py0) + std::abs(py1) < (int64_t(1) << 30) &&
                  x.size(3) * upx + std::abs(px0) + std::abs(px1) < (int64_t(1) << 30),
              "upfirdn2d: image too large");
  return pti_ops::upfirdn2d_launch(x, f, upx, upy, downx, downy, px0, px1, py0, py1, channels_last);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act_forward", &bias_act_forward, "bias + activation + gain + clamp");
  m.def("bias_act_backward", &bias_act_backward, "gradient of bias_act w.r.t. x, from its output");
  m.def("upfirdn2d", &upfirdn2d, "up-sample, FIR filter, down-sample");
}
