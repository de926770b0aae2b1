"""Tests of pti.ops: the reference ops against independent formulas (CPU), the CUDA kernels against the reference (GPU)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pti.ops import bias_act, downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d
from pti.ops.conv2d_resample import conv2d_resample
from pti.ops import cuda_plugin
from pti.ops.cuda_plugin import OpsImplError, load_cuda_extension, select_kernels
from pti.ops.upfirdn2d import transposed_upfirdn2d_args
from ops_helpers import DEFAULTS, UPFIRDN_CASES, away_from_kinks, explicit_bias_act, explicit_upfirdn2d


@pytest.mark.parametrize("up, down, padding, taps, flip_filter, gain", UPFIRDN_CASES)
def test_upfirdn2d_ref_matches_explicit_formula(up, down, padding, taps, flip_filter, gain):
    torch.manual_seed(0)
    x = torch.randn([2, 3, 7, 9], dtype=torch.float64)
    f = setup_filter(taps, normalize=False)
    f2d = torch.outer(f, f) if f.ndim == 1 else f
    y = upfirdn2d(x.float(), f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl="ref")
    expected = explicit_upfirdn2d(x, f2d.double(), up, down, padding, gain=gain, flip_filter=flip_filter)
    assert y.shape == expected.shape
    torch.testing.assert_close(y.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("up, down, padding, taps, flip_filter, gain", UPFIRDN_CASES)
def test_transposed_upfirdn2d_is_the_gradient(up, down, padding, taps, flip_filter, gain):
    """The transposed op (what both backwards run) and the reference op's own gradient, against autograd's gradient
    of the explicit formula; and the gradient of the gradient, against the explicit formula applied twice."""
    torch.manual_seed(1)
    f = setup_filter(taps, normalize=False)
    f2d = (torch.outer(f, f) if f.ndim == 1 else f).double()
    x = torch.randn([1, 2, 9, 11], dtype=torch.float64, requires_grad=True)
    expected_y = explicit_upfirdn2d(x, f2d, up, down, padding, gain=gain, flip_filter=flip_filter)
    dy = torch.randn_like(expected_y)
    (expected_grad,) = torch.autograd.grad(expected_y, x, dy)
    t_up, t_down, t_pad = transposed_upfirdn2d_args(x.shape, expected_y.shape, f, up, down, padding)
    grad_transposed = upfirdn2d(dy.float(), f, up=t_up, down=t_down, padding=t_pad, flip_filter=not flip_filter,
                                gain=gain, impl="ref")
    torch.testing.assert_close(grad_transposed.double(), expected_grad, atol=1e-5, rtol=1e-5)

    x_float = x.detach().float().requires_grad_(True)
    y = upfirdn2d(x_float, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl="ref")
    dy_float = dy.float().requires_grad_(True)
    (grad_ref,) = torch.autograd.grad(y, x_float, dy_float, create_graph=True)
    torch.testing.assert_close(grad_ref.double(), expected_grad, atol=1e-5, rtol=1e-5)
    # The gradient is linear in dy: its gradient w.r.t. dy, for a probe v, is the op applied to v.
    v = torch.randn_like(x_float)
    (grad_of_grad,) = torch.autograd.grad(grad_ref, dy_float, v)
    expected_ggrad = explicit_upfirdn2d(v.double(), f2d, up, down, padding, gain=gain, flip_filter=flip_filter)
    torch.testing.assert_close(grad_of_grad.double(), expected_ggrad, atol=1e-5, rtol=1e-5)


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert setup_filter([1] * 8).shape == (8,)  # 8 taps or more: kept separable
    torch.testing.assert_close(setup_filter([1, 2], gain=4).sum(), torch.tensor(4.0))
    torch.testing.assert_close(setup_filter([1, 2], flip_filter=True), setup_filter([2, 1]))
    torch.testing.assert_close(setup_filter([2.0, 6.0], normalize=False), torch.tensor([[4.0, 12], [12, 36]]))
    with pytest.raises(ValueError, match="filter"):
        setup_filter(torch.ones([2, 2, 2]))


def test_resampling_helpers_sizes_and_constants():
    f = setup_filter([1, 3, 3, 1])
    x = torch.full([1, 2, 8, 8], 3.0)
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 3.0))  # DC gain 1
    same = filter2d(x, f)
    assert same.shape == x.shape
    torch.testing.assert_close(same[:, :, 2:-2, 2:-2], torch.full_like(same[:, :, 2:-2, 2:-2], 3.0))
    down = downsample2d(x, f)
    assert down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.full_like(down[:, :, 1:-1, 1:-1], 3.0))


def test_upsample2d_matches_explicit_formula():
    torch.manual_seed(2)
    x = torch.randn([1, 3, 5, 6])
    f = setup_filter([1, 3, 3, 1])
    expected = explicit_upfirdn2d(x.double(), f.double(), (2, 2), (1, 1), (2, 1, 2, 1), gain=4.0)
    torch.testing.assert_close(upsample2d(x, f).double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("flip_weight", [True, False])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_upsampling_conv2d_resample_matches_explicit_formula(groups, flip_weight, memory_format):
    """up=2 (on the CPU: a matrix product and `fold` for contiguous input, oneDNN's transposed convolution
    otherwise) against zero insertion, explicit FIR filtering and a plain convolution: values and the gradients
    w.r.t. input, weight and bias."""
    torch.manual_seed(3)
    f = setup_filter([1, 3, 3, 1])
    x, w, bias = torch.randn([2, 4, 5, 6]), torch.randn([6, 4 // groups, 3, 3]), torch.randn([6])
    leaves = [x.contiguous(memory_format=memory_format).requires_grad_(True), w.requires_grad_(True),
              bias.requires_grad_(True)]
    y = conv2d_resample(leaves[0], leaves[1], f, up=2, padding=1, groups=groups, flip_weight=flip_weight,
                        bias=leaves[2])
    probe = torch.randn_like(y)
    got = [y, *torch.autograd.grad(y, leaves, probe)]

    explicit_leaves = [t.detach().double().requires_grad_(True) for t in (x, w, bias)]
    upsampled = explicit_upfirdn2d(explicit_leaves[0], f.double(), (2, 2), (1, 1), (3, 2, 3, 2), gain=4.0)
    kernel = explicit_leaves[1] if flip_weight else explicit_leaves[1].flip([2, 3])
    expected_y = F.conv2d(upsampled, kernel, explicit_leaves[2], groups=groups)
    expected = [expected_y, *torch.autograd.grad(expected_y, explicit_leaves, probe.double())]
    assert y.shape == (2, 6, 10, 12)
    for name, g, e in zip(("output", "x", "weight", "bias"), got, expected):
        torch.testing.assert_close(g.double(), e, atol=1e-4, rtol=1e-4, msg=name)


def test_upfirdn2d_rejects_bad_arguments():
    x = torch.zeros([1, 1, 4, 4])
    f = setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        upfirdn2d(torch.zeros([4, 4]), f)
    with pytest.raises(ValueError, match="up must be"):
        upfirdn2d(x, f, up=0)
    with pytest.raises(ValueError, match="padding"):
        upfirdn2d(x, f, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="empty"):
        upfirdn2d(x, f, padding=-3)


BIAS_ACT_CASES = [
    # (act, alpha, gain, clamp, dim)
    ("linear", None, None, None, 1),
    ("linear", None, 2.0, 0.7, 1),
    ("relu", None, None, 0.5, 1),
    ("lrelu", None, None, 1.0, 1),
    ("lrelu", 0.1, 0.7, None, 2),
    ("lrelu", None, 3.0, 0.25, 0),
    ("lrelu", None, None, 100.0, 1),  # a clamp no value reaches (the CPU path skips it)
]


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("act, alpha, gain, clamp, dim", BIAS_ACT_CASES)
def test_bias_act_ref_matches_formula_values_and_gradients(act, alpha, gain, clamp, dim, inplace):
    torch.manual_seed(3)
    x0 = torch.randn([4, 5, 6], dtype=torch.float64)
    b0 = torch.randn([x0.shape[dim]], dtype=torch.float64)
    dy = torch.randn_like(x0)
    alpha_value = DEFAULTS[act][0] if alpha is None else alpha
    gain_value = DEFAULTS[act][1] if gain is None else gain

    x, b = x0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    expected = explicit_bias_act(x, b, dim, act, alpha_value, gain_value, clamp)
    expected_grads = torch.autograd.grad(expected, [x, b], dy)

    x, b = x0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    source = x * 1  # a non-leaf, so that the in-place variant is allowed
    y = bias_act(source, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="ref", inplace=inplace)
    grads = torch.autograd.grad(y, [x, b], dy)
    assert (y.data_ptr() == source.data_ptr()) == inplace
    torch.testing.assert_close(y, expected)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("act", ["linear", "lrelu"])
@pytest.mark.parametrize("clamp", [0.7, 256.0])  # 0.7 rounds down in float32; no value reaches 256
def test_bias_act_float32_gradient_is_zero_exactly_where_clamped(memory_format, act, clamp):
    """In float32 (the CPU backward checks whether any value reached the clamp, to skip its pass): the gradient is
    zero exactly at the values the forward clamped, also for a bound that float32 rounds down."""
    torch.manual_seed(5)
    x = (torch.randn([2, 4, 6, 6]) * 3).contiguous(memory_format=memory_format).requires_grad_(True)
    dy = torch.randn([2, 4, 6, 6])
    alpha, gain = DEFAULTS[act]
    y = bias_act(x * 1, act=act, clamp=clamp, impl="ref")
    (grad,) = torch.autograd.grad(y, x, dy)
    pre = x.detach()
    unclamped = pre * gain if act == "linear" else torch.where(pre > 0, pre, pre * alpha) * gain
    bound = torch.tensor(clamp, dtype=torch.float32)
    inside = (unclamped > -bound) & (unclamped < bound)
    assert (not inside.all()) if clamp < 1 else inside.all()
    slope = gain if act == "linear" else torch.where(pre > 0, 1.0, alpha) * gain
    torch.testing.assert_close(grad, dy * slope * inside)


@pytest.mark.parametrize("act, alpha, gain, clamp, dim", BIAS_ACT_CASES)
def test_bias_act_compile_formula_matches(act, alpha, gain, clamp, dim):
    """The out-of-place expression used under torch.compile computes the same values."""
    from pti.ops.bias_act import ACTIVATIONS, _bias_act_formula

    torch.manual_seed(4)
    x = torch.randn([3, 4, 5])
    b = torch.randn([x.shape[dim]])
    alpha_value = DEFAULTS[act][0] if alpha is None else alpha
    gain_value = DEFAULTS[act][1] if gain is None else gain
    got = _bias_act_formula(x, b, dim, ACTIVATIONS[act].code, alpha_value, gain_value, -1 if clamp is None else clamp)
    torch.testing.assert_close(got, explicit_bias_act(x, b, dim, act, alpha_value, gain_value, clamp))


def test_bias_act_leaves_input_alone_unless_inplace():
    x = torch.randn([2, 3])
    before = x.clone()
    bias_act(x, act="lrelu", clamp=0.1)
    torch.testing.assert_close(x, before)
    y = bias_act(x, act="lrelu", clamp=0.1, inplace=True)
    assert y.data_ptr() == x.data_ptr() and x.abs().max() <= 0.1


@pytest.mark.parametrize("act", ["linear", "relu", "lrelu"])
@pytest.mark.parametrize("clamp", [None, 0.5])
def test_bias_act_backward_leaves_the_incoming_gradient_alone(act, clamp):
    x = torch.randn([2, 3, 4, 4], requires_grad=True)
    grad_y = torch.randn([2, 3, 4, 4])
    before = grad_y.clone()
    bias_act(x, act=act, clamp=clamp, gain=1.7).backward(grad_y)
    torch.testing.assert_close(grad_y, before, rtol=0, atol=0)


def test_bias_act_without_bias_and_errors():
    x = torch.randn([2, 3])
    torch.testing.assert_close(bias_act(x, act="lrelu"), F.leaky_relu(x, 0.2) * 2**0.5)
    with pytest.raises(OpsImplError, match="unknown activation 'gelu'"):
        bias_act(x, act="gelu")
    with pytest.raises(ValueError, match="does not match"):
        bias_act(x, torch.zeros([4]))
    with pytest.raises(ValueError, match="positive gain"):
        bias_act(x, gain=-1.0)
    with pytest.raises(OpsImplError, match="impl must be"):
        bias_act(x, impl="triton")
    with pytest.raises(OpsImplError, match="needs a CUDA tensor"):
        bias_act(x, impl="cuda")


def test_env_var_forces_reference(monkeypatch):
    x = torch.zeros([1])
    monkeypatch.setenv(cuda_plugin.IMPL_ENV_VAR, "ref")
    assert select_kernels("cuda", x) is None
    assert select_kernels("auto", x) is None
    assert cuda_plugin.status().state == "reference-only" and "PTI_OPS_IMPL=ref" in cuda_plugin.status().detail
    monkeypatch.delenv(cuda_plugin.IMPL_ENV_VAR)
    assert select_kernels("auto", x) is None  # a CPU tensor never uses the plugin


@pytest.mark.parametrize("value", ["cuda", "reference", "1"])
def test_unknown_env_var_value_is_an_error_listing_the_valid_ones(monkeypatch, value):
    monkeypatch.setenv(cuda_plugin.IMPL_ENV_VAR, value)
    with pytest.raises(OpsImplError, match=rf"PTI_OPS_IMPL must be one of auto, ref \(or unset\), got '{value}'"):
        bias_act(torch.zeros([1, 2]))
    with pytest.raises(OpsImplError, match="PTI_OPS_IMPL must be one of"):
        upfirdn2d(torch.zeros([1, 1, 2, 2]), None)


def test_import_builds_nothing():
    code = (
        "import threading\n"
        "import pti.ops, pti.networks\n"
        "from pti.ops import cuda_plugin\n"
        "assert cuda_plugin._LOADER.status().state == 'reference-only'\n"
        "assert not [t for t in threading.enumerate() if t.name == 'pti-ops-build']\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------- CUDA kernels against the reference (GPU only)


@pytest.fixture()
def cuda_ops(monkeypatch):
    """The CUDA plugin, built (or loaded from the cache), with TF32 off so that float32 references are exact."""
    monkeypatch.delenv(cuda_plugin.IMPL_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    plugin = load_cuda_extension()
    assert plugin is not None, f"the CUDA ops are unavailable: {cuda_plugin.status().detail}"
    return plugin


def _tolerance(dtype):
    """Comparison tolerance of CUDA vs reference results in `dtype`."""
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 5e-2, "rtol": 1e-2}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("act, alpha, gain, clamp, dim, with_bias, layout", [
    ("linear", None, None, None, 1, True, "contiguous"),
    ("linear", None, None, 0.3, 1, False, "contiguous"),
    ("relu", None, None, None, 1, True, "contiguous"),
    ("lrelu", None, None, 1.0, 1, True, "contiguous"),
    ("lrelu", None, None, 1.0, 1, True, "channels_last"),
    ("lrelu", 0.1, 0.7, None, 3, True, "contiguous"),
    ("lrelu", None, 2.0, 0.5, 0, True, "channels_last"),
])
@pytest.mark.parametrize("inplace", [False, True])
def test_bias_act_cuda_matches_ref(cuda_ops, dtype, act, alpha, gain, clamp, dim, with_bias, layout, inplace):
    torch.manual_seed(4)
    alpha_value = DEFAULTS[act][0] if alpha is None else alpha
    gain_value = DEFAULTS[act][1] if gain is None else gain
    shape = [3, 17, 9, 11]
    b = torch.randn([shape[dim]], device="cuda") if with_bias else torch.zeros([shape[dim]], device="cuda")
    v = away_from_kinks(torch.randn(shape, device="cuda") * 1.5, act, alpha_value, gain_value, clamp)
    x = (v - b.reshape([-1 if i == dim else 1 for i in range(4)])).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    b = b.to(dtype) if with_bias else None
    dy = torch.randn(shape, device="cuda", dtype=dtype)
    results = {}
    for impl in ("ref", "cuda"):
        xi = x.clone().requires_grad_(True)
        bi = b.clone().requires_grad_(True) if b is not None else None
        source = xi * 1  # a non-leaf, so that the in-place variant is allowed
        y = bias_act(source, bi, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl, inplace=inplace)
        assert (y.data_ptr() == source.data_ptr()) == inplace
        inputs = [xi] + ([bi] if bi is not None else [])
        results[impl] = (y, *torch.autograd.grad(y, inputs, dy))
    for ref, cuda in zip(results["ref"], results["cuda"]):
        assert ref.shape == cuda.shape and ref.dtype == cuda.dtype
        torch.testing.assert_close(cuda.float(), ref.float(), **_tolerance(dtype))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("up, down, padding, taps, flip_filter, gain", UPFIRDN_CASES)
def test_upfirdn2d_cuda_matches_ref(cuda_ops, dtype, up, down, padding, taps, flip_filter, gain):
    torch.manual_seed(6)
    f = setup_filter(taps, normalize=True, device="cuda")
    x = torch.randn([2, 5, 13, 10], device="cuda", dtype=dtype)
    results = {}
    for impl in ("ref", "cuda"):
        xi = x.clone().requires_grad_(True)
        y = upfirdn2d(xi, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl=impl)
        dy = torch.randn(y.shape, generator=torch.Generator("cuda").manual_seed(7), device="cuda", dtype=dtype)
        results[impl] = (y, *torch.autograd.grad(y, xi, dy))
    for ref, cuda in zip(results["ref"], results["cuda"]):
        assert ref.shape == cuda.shape and ref.dtype == cuda.dtype
        torch.testing.assert_close(cuda, ref, **_tolerance(dtype))


@pytest.mark.gpu
def test_upfirdn2d_cuda_channels_last_input(cuda_ops):
    f = setup_filter([1, 3, 3, 1], device="cuda")
    x = torch.randn([2, 8, 16, 16], device="cuda").to(memory_format=torch.channels_last)
    torch.testing.assert_close(upsample2d(x, f, impl="cuda"), upsample2d(x, f, impl="ref"), atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_auto_picks_cuda_on_cuda_tensors(cuda_ops):
    assert select_kernels("auto", torch.zeros([1], device="cuda")) is not None
    assert cuda_plugin.status().state == "ready"
