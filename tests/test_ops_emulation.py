"""The CUDA kernels' own source, compiled for the host and launched as serial loops over blocks and threads
(pti/ops/cuda/backend_host.h, grid capped at a few blocks so that the grid-stride loops run), against the reference
ops: values, gradients (first and second order), dtypes, layouts, odd shapes and strides."""
from __future__ import annotations

import pytest
import torch

from ops_helpers import DEFAULTS, UPFIRDN_CASES, away_from_kinks, emulated_kernels, explicit_bias_act
from pti.ops import bias_act, setup_filter, upfirdn2d
from pti.ops.build import EMULATION_MAX_BLOCKS

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
TOLERANCE = {  # kernels (one rounding) against the reference in the same dtype (a rounding per pass)
    torch.float64: {"atol": 1e-12, "rtol": 1e-12},
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 5e-3, "rtol": 5e-3},
    torch.bfloat16: {"atol": 5e-2, "rtol": 3e-2},
}
# upfirdn2d's filter is float32 on both paths and scaled by the gain in float32 (the kernels as a 2-D product, the
# reference per axis): in float64 the two agree to float32's precision.
UPFIRDN_TOLERANCE = {**TOLERANCE, torch.float64: {"atol": 1e-6, "rtol": 1e-6}}
SHAPE = [3, 17, 9, 11]  # odd sizes, more values than the emulation's grid covers in one stride
assert torch.Size(SHAPE).numel() > EMULATION_MAX_BLOCKS * 256


@pytest.fixture(scope="module")
def kernels():
    """The host-emulated kernels (built once per session)."""
    return emulated_kernels()


def in_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """`x` (a non-leaf or a plain tensor) stored contiguous, channels-last, or as a view with gaps between values."""
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        wide = x.new_zeros([*x.shape[:-1], 2 * x.shape[-1]])
        wide[..., ::2] = x
        return wide[..., ::2]
    return x.contiguous()


def run_bias_act(impl, x, b, dy, layout, inplace, **kwargs):
    """bias_act on a non-leaf copy of `x` in `layout`: (result, source, grad x, grad b)."""
    leaf = x.clone().requires_grad_(True)
    bias = b.clone().requires_grad_(True) if b is not None else None
    source = in_layout(leaf * 1, layout)
    before = source.detach().clone()
    y = bias_act(source, bias, impl=impl, inplace=inplace, **kwargs)
    assert (y.data_ptr() == source.data_ptr()) == inplace
    if not inplace:
        torch.testing.assert_close(source.detach(), before, rtol=0, atol=0)
    grads = torch.autograd.grad(y, [leaf] + ([bias] if bias is not None else []), dy)
    return (y, source, *grads)


BIAS_ACT_CASES = [
    # (act, alpha, gain, clamp, dim, with_bias)
    ("linear", None, None, None, 1, True),
    ("linear", None, 2.0, 0.7, 1, False),
    ("relu", None, None, 0.5, 1, True),
    ("relu", None, 0.5, None, 3, False),
    ("lrelu", None, None, 1.0, 1, True),
    ("lrelu", 0.1, 0.7, None, 2, True),
    ("lrelu", None, 3.0, 0.25, 0, True),
]


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("act, alpha, gain, clamp, dim, with_bias", BIAS_ACT_CASES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_act_kernels_match_reference(kernels, dtype, layout, act, alpha, gain, clamp, dim, with_bias, inplace):
    """Same values, gradients, dtype (a float32 bias is cast to x's dtype) and layout as the reference."""
    generator = torch.Generator().manual_seed(11)
    alpha_value = DEFAULTS[act][0] if alpha is None else alpha
    gain_value = DEFAULTS[act][1] if gain is None else gain
    b = torch.randn([SHAPE[dim]], generator=generator) if with_bias else None
    v = away_from_kinks(torch.randn(SHAPE, generator=generator, dtype=torch.float64) * 1.5, act, alpha_value,
                        gain_value, clamp, margin=0.05)
    x = (v - (b.double().reshape([-1 if i == dim else 1 for i in range(4)]) if with_bias else 0)).to(dtype)
    dy = torch.randn(SHAPE, generator=generator).to(dtype)
    kwargs = {"dim": dim, "act": act, "alpha": alpha, "gain": gain, "clamp": clamp}
    got = run_bias_act(kernels, x, b, dy, layout, inplace, **kwargs)
    want = run_bias_act("ref", x, b, dy, layout, inplace, **kwargs)
    assert got[0].dtype == want[0].dtype == dtype
    if layout != "strided":
        assert got[0].stride() == want[0].stride() == got[1].stride()
    for name, g, w in zip(("values", "source", "x gradient", "bias gradient"), got, want):
        assert g.dtype == w.dtype, name
        torch.testing.assert_close(g, w, **TOLERANCE[dtype], msg=name)


@pytest.mark.parametrize("impl", ["ref", "kernels"])
def test_bias_act_size_one_dimension_with_stride_one(kernels, impl):
    """A dense (1, 512) tensor with strides (1, 1), and the gradient of `(y * v.t()).sum()`, whose incoming gradient
    has such strides too (ops.cpp once compared the strides of size-1 dimensions and refused both)."""
    generator = torch.Generator().manual_seed(12)
    leaf = torch.randn([512], dtype=torch.float64, generator=generator, requires_grad=True)
    b = torch.randn([512], dtype=torch.float64, generator=generator)
    v = torch.randn([512, 1], dtype=torch.float64, generator=generator)
    x = leaf.as_strided((1, 512), (1, 1))
    y = bias_act(x, b, act="lrelu", clamp=1.0, impl=kernels if impl == "kernels" else "ref")
    (grad,) = torch.autograd.grad((y * v.t()).sum(), leaf)
    expected_y = explicit_bias_act(x, b, 1, "lrelu", 0.2, 2**0.5, 1.0)
    (expected_grad,) = torch.autograd.grad((expected_y * v.t()).sum(), leaf)
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("shape, strides, dim", [
    ((4, 1, 5), (5, 7, 1), 1),  # the bias runs along a size-1 dimension with an unusual stride
    ((4, 1, 5), (5, 0, 1), 0),
    ((2, 6, 1, 1), (6, 1, 6, 6), 1),  # channels-last and contiguous at once
    ((1, 1, 1, 1), (1, 1, 1, 1), 1),
    ((3, 4, 1, 5), (20, 1, 20, 4), 1),  # channels-last with a size-1 height
    ((0, 3), (3, 1), 1),
])
def test_bias_act_odd_shapes_and_strides(kernels, shape, strides, dim):
    generator = torch.Generator().manual_seed(13)
    storage = torch.randn([64], dtype=torch.float64, generator=generator)
    b = torch.randn([shape[dim]], dtype=torch.float64, generator=generator)
    results = {}
    for impl in ("ref", "kernels"):
        leaf = storage.clone().requires_grad_(True)
        x = leaf.as_strided(shape, strides)
        y = bias_act(x, b, dim=dim, act="lrelu", clamp=0.9, impl=kernels if impl == "kernels" else "ref")
        dy = torch.arange(y.numel(), dtype=torch.float64).reshape(shape) / 7 - 2
        results[impl] = (y, *torch.autograd.grad(y, leaf, dy))
    expected = explicit_bias_act(storage.as_strided(shape, strides), b, dim, "lrelu", 0.2, 2**0.5, 0.9)
    torch.testing.assert_close(results["kernels"][0], expected)
    for got, want in zip(results["kernels"], results["ref"]):
        torch.testing.assert_close(got, want)


def test_layout_check_allows_size_one_strides_and_refuses_other_layouts(kernels):
    """ops.cpp's own check, called directly: strides may differ only along size-1 dimensions."""
    x = torch.randn([512]).as_strided((1, 512), (1, 1))
    out = torch.empty([1, 512])  # strides (512, 1): the same memory offsets
    kernels.module.bias_act_forward(x, x.new_empty([0]), out, 1, 512, 0, 0.0, 1.0, -1.0)
    torch.testing.assert_close(out, x)
    x4 = torch.randn([2, 3, 4, 5])
    with pytest.raises(RuntimeError, match="shape and layout of x"):
        kernels.module.bias_act_forward(x4, x4.new_empty([0]), torch.empty_like(x4, memory_format=torch.channels_last),
                                        1, 3, 0, 0.0, 1.0, -1.0)


def test_half_x_with_float32_bias_gives_half_on_both_paths(kernels):
    x, b = torch.randn([2, 3, 4], dtype=torch.float16), torch.randn([3])
    expected = (x.double() + b.half().double().reshape(1, 3, 1)).to(torch.float16)
    for impl in ("ref", kernels):
        y = bias_act(x, b, impl=impl)
        assert y.dtype == torch.float16
        torch.testing.assert_close(y, expected, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("act, clamp", [("linear", None), ("linear", 0.8), ("relu", 0.8), ("lrelu", None),
                                        ("lrelu", 0.8)])
@pytest.mark.parametrize("impl", ["ref", "kernels"])
def test_bias_act_gradcheck_and_gradgradcheck(kernels, impl, act, clamp):
    """First and second derivatives against finite differences (float64), away from the kinks."""
    generator = torch.Generator().manual_seed(14)
    alpha, gain = DEFAULTS[act]
    b = torch.randn([3], dtype=torch.float64, generator=generator)
    v = away_from_kinks(torch.randn([2, 3, 4, 5], dtype=torch.float64, generator=generator), act, alpha, gain, clamp,
                        margin=0.05)
    x = (v - b.reshape(1, 3, 1, 1)).requires_grad_(True)
    b.requires_grad_(True)

    def op(x, b):
        return bias_act(x, b, act=act, clamp=clamp, impl=kernels if impl == "kernels" else "ref")

    assert torch.autograd.gradcheck(op, (x, b))
    assert torch.autograd.gradgradcheck(op, (x, b))


def run_upfirdn2d(impl, x, f, layout, dy_seed, **kwargs):
    """upfirdn2d on `x` in `layout`: (result, gradient w.r.t. x for a seeded random output gradient)."""
    leaf = x.clone().requires_grad_(True)
    y = upfirdn2d(in_layout(leaf * 1, layout), f, impl=impl, **kwargs)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(dy_seed)).to(x.dtype)
    return (y, *torch.autograd.grad(y, leaf, dy))


@pytest.mark.parametrize("up, down, padding, taps, flip_filter, gain", UPFIRDN_CASES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_upfirdn2d_kernels_match_reference(kernels, dtype, layout, up, down, padding, taps, flip_filter, gain):
    """Same values, gradient, dtype and memory format (channels-last in, channels-last out) as the reference."""
    f = setup_filter(taps)
    x = torch.randn([2, 5, 13, 10], generator=torch.Generator().manual_seed(15)).to(dtype)
    kwargs = {"up": up, "down": down, "padding": padding, "flip_filter": flip_filter, "gain": gain}
    got = run_upfirdn2d(kernels, x, f, layout, 16, **kwargs)
    want = run_upfirdn2d("ref", x, f, layout, 16, **kwargs)
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for name, g, w in zip(("values", "gradient"), got, want):
        assert g.dtype == w.dtype == dtype, name
        assert g.shape == w.shape, name
        torch.testing.assert_close(g, w, **UPFIRDN_TOLERANCE[dtype], msg=name)
    assert got[0].is_contiguous(memory_format=memory_format)
    assert want[0].is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 1, 4), (2, 1, 3, 1)])
def test_upfirdn2d_tiny_images(kernels, shape):
    """Fewer output values than one block; size-1 dimensions, channels-last with their ambiguous strides."""
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(17))
    for layout in ("contiguous", "channels_last"):
        got = run_upfirdn2d(kernels, x, f, layout, 18, up=2, padding=(2, 1, 2, 1))
        want = run_upfirdn2d("ref", x, f, layout, 18, up=2, padding=(2, 1, 2, 1))
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **UPFIRDN_TOLERANCE[torch.float64])


@pytest.mark.parametrize("up, down, padding, taps, flip_filter, gain", UPFIRDN_CASES[1:6])
@pytest.mark.parametrize("impl", ["ref", "kernels"])
def test_upfirdn2d_gradcheck_and_gradgradcheck(kernels, impl, up, down, padding, taps, flip_filter, gain):
    f = setup_filter(taps)
    x = torch.randn([1, 2, 6, 7], dtype=torch.float64, generator=torch.Generator().manual_seed(19),
                    requires_grad=True)

    def op(x):
        return upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain,
                         impl=kernels if impl == "kernels" else "ref")

    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradgradcheck(op, (x,))
