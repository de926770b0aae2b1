// Python bindings and argument checks of the CUDA ops plugin (bias_act, upfirdn2d).
#include <torch/extension.h>

void bias_act_forward_cuda(const torch::Tensor& x, const torch::Tensor& bias, torch::Tensor& out,
                           int64_t bias_stride, int64_t bias_size, int64_t act, double alpha, double gain,
                           double clamp);
void bias_act_backward_cuda(const torch::Tensor& grad_y, const torch::Tensor& y, torch::Tensor& grad_x,
                            int64_t act, double alpha, double gain, double clamp);
torch::Tensor upfirdn2d_cuda(const torch::Tensor& x, const torch::Tensor& f, int64_t upx, int64_t upy,
                             int64_t downx, int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1);

namespace {

bool is_dense(const torch::Tensor& t) {
  return t.is_contiguous() || (t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast));
}

void check_same_layout(const torch::Tensor& a, const torch::Tensor& b, const char* name) {
  TORCH_CHECK(b.is_cuda() && b.device() == a.device(), name, " must be on the device of x");
  TORCH_CHECK(b.scalar_type() == a.scalar_type(), name, " must have the dtype of x");
  TORCH_CHECK(b.sizes() == a.sizes() && b.strides() == a.strides(), name, " must have the shape and strides of x");
}

void bias_act_forward(const torch::Tensor& x, const torch::Tensor& bias, torch::Tensor out, int64_t bias_stride,
                      int64_t bias_size, int64_t act, double alpha, double gain, double clamp) {
  TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
  TORCH_CHECK(is_dense(x), "bias_act: x must be contiguous or channels-last");
  check_same_layout(x, out, "bias_act: out");
  TORCH_CHECK(act >= 0 && act <= 2, "bias_act: unknown activation code ", act);
  if (bias.numel() > 0) {
    TORCH_CHECK(bias.is_cuda() && bias.device() == x.device(), "bias_act: bias must be on the device of x");
    TORCH_CHECK(bias.scalar_type() == x.scalar_type(), "bias_act: bias must have the dtype of x");
    TORCH_CHECK(bias.dim() == 1 && bias.is_contiguous() && bias.numel() == bias_size,
                "bias_act: bias must be a contiguous vector of length ", bias_size);
    TORCH_CHECK(bias_stride > 0, "bias_act: bias stride must be positive");
  }
  bias_act_forward_cuda(x, bias, out, bias_stride, bias_size, act, alpha, gain, clamp);
}

void bias_act_backward(const torch::Tensor& grad_y, const torch::Tensor& y, torch::Tensor grad_x, int64_t act,
                       double alpha, double gain, double clamp) {
  TORCH_CHECK(y.is_cuda(), "bias_act backward: y must be a CUDA tensor");
  TORCH_CHECK(is_dense(y), "bias_act backward: y must be contiguous or channels-last");
  check_same_layout(y, grad_y, "bias_act backward: grad_y");
  check_same_layout(y, grad_x, "bias_act backward: grad_x");
  TORCH_CHECK(act >= 0 && act <= 2, "bias_act backward: unknown activation code ", act);
  bias_act_backward_cuda(grad_y, y, grad_x, act, alpha, gain, clamp);
}

torch::Tensor upfirdn2d(const torch::Tensor& x, const torch::Tensor& f, int64_t upx, int64_t upy, int64_t downx,
                        int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4 && x.is_contiguous(), "upfirdn2d: x must be a contiguous 4-D CUDA tensor");
  TORCH_CHECK(f.is_cuda() && f.device() == x.device(), "upfirdn2d: f must be on the device of x");
  TORCH_CHECK(f.scalar_type() == torch::kFloat32 && f.dim() == 2 && f.is_contiguous(),
              "upfirdn2d: f must be a contiguous 2-D float32 tensor");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: factors must be >= 1");
  TORCH_CHECK(x.size(2) * upy + std::abs(py0) + std::abs(py1) < (int64_t(1) << 30) &&
                  x.size(3) * upx + std::abs(px0) + std::abs(px1) < (int64_t(1) << 30),
              "upfirdn2d: image too large");
  return upfirdn2d_cuda(x, f, upx, upy, downx, downy, px0, px1, py0, py1);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act_forward", &bias_act_forward, "bias + activation + gain + clamp (CUDA)");
  m.def("bias_act_backward", &bias_act_backward, "gradient of bias_act w.r.t. x, from its output (CUDA)");
  m.def("upfirdn2d", &upfirdn2d, "up-sample, FIR filter, down-sample (CUDA)");
}
