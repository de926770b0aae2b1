"""Tests of pti.networks: the generator reproduces the reference StyleGAN2-ADA implementation's outputs."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_DIR

import torch.nn.functional as F

from pti.networks import Generator, GeneratorConfigError, GeneratorInputError, SynthesisLayer, modulated_conv2d
from pti.ops.upfirdn2d import setup_filter

TOLERANCE = 1e-4  # max abs diff against the reference implementation's float32 outputs


@pytest.fixture(scope="module")
def reference():
    """Outputs of the reference implementation on the tiny fixture generator."""
    return torch.load(TINY_DIR / "reference_outputs.pt", weights_only=True)


@pytest.fixture(scope="module")
def reference_state_dict():
    """The tiny fixture generator's state dict in the reference parameter names."""
    return torch.load(TINY_DIR / "G_ema_state_dict.pt", weights_only=True)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of two same-shaped tensors."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_state_dict_has_exactly_the_reference_names(tiny_init_kwargs, reference_state_dict):
    G = Generator(**tiny_init_kwargs)
    ours = G.state_dict()
    assert list(ours) == list(reference_state_dict)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in reference_state_dict.items()}
    G.load_state_dict(reference_state_dict, strict=True)
    incomplete = dict(reference_state_dict)
    del incomplete["synthesis.b8.conv0.noise_const"]
    with pytest.raises(RuntimeError, match="noise_const"):
        G.load_state_dict(incomplete, strict=True)


def test_attributes(tiny_generator, tiny_init_kwargs):
    G = tiny_generator
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels) == (32, 0, 32, 32, 3)
    assert G.num_ws == 8 == G.mapping.num_ws == G.synthesis.num_ws
    assert G.mapping.w_avg.shape == (32,)
    assert G.init_kwargs == tiny_init_kwargs


@pytest.mark.parametrize("key, psi, cutoff", [
    ("ws_psi1", 1, None), ("ws_psi07", 0.7, None), ("ws_psi05_cutoff4", 0.5, 4),
])
def test_mapping_matches_reference(tiny_generator, reference, key, psi, cutoff):
    ws = tiny_generator.mapping(reference["z"], None, truncation_psi=psi, truncation_cutoff=cutoff)
    assert max_abs_diff(ws, reference[key]) < TOLERANCE


def test_truncation_cutoff_leaves_later_layers(tiny_generator, reference):
    ws = tiny_generator.mapping(reference["z"], None, truncation_psi=0.5, truncation_cutoff=4)
    torch.testing.assert_close(ws[:, 4:], reference["ws_psi1"][:, 4:], atol=TOLERANCE, rtol=0)
    assert max_abs_diff(ws[:, :4], reference["ws_psi1"][:, :4]) > 0.01


@pytest.mark.parametrize("ws_key, noise_mode, out_key", [
    ("ws_psi1", "const", "img_const"),
    ("ws_psi1", "none", "img_none"),
    ("wplus", "const", "img_wplus_const"),
])
def test_synthesis_matches_reference(tiny_generator, reference, ws_key, noise_mode, out_key):
    img = tiny_generator.synthesis(reference[ws_key], noise_mode=noise_mode, force_fp32=True)
    assert img.dtype == torch.float32
    assert max_abs_diff(img, reference[out_key]) < TOLERANCE


def test_batch_of_one_matches_reference(tiny_generator, reference):
    img = tiny_generator.synthesis(reference["wplus"][:1], noise_mode="const")
    assert max_abs_diff(img, reference["img_b1_const"]) < TOLERANCE


def test_gradient_matches_reference(tiny_generator, reference):
    wplus = reference["wplus"][:1].clone().requires_grad_(True)
    img = tiny_generator.synthesis(wplus, noise_mode="const")
    (img * reference["grad_weights"]).sum().backward()
    assert max_abs_diff(wplus.grad, reference["grad_wplus_b1"]) < TOLERANCE


def test_generator_forward_is_mapping_then_synthesis(tiny_generator, reference):
    img = tiny_generator(reference["z"], None, truncation_psi=1, noise_mode="const")
    assert max_abs_diff(img, reference["img_const"]) < TOLERANCE


def test_batch_one_equals_batch_many(tiny_generator, reference):
    wplus = reference["wplus"]
    batched = tiny_generator.synthesis(wplus, noise_mode="const")
    for i in range(wplus.shape[0]):
        single = tiny_generator.synthesis(wplus[i : i + 1], noise_mode="const")
        assert max_abs_diff(single, batched[i : i + 1]) < 1e-5
    ws = tiny_generator.mapping(reference["z"], None)
    assert max_abs_diff(tiny_generator.mapping(reference["z"][1:2], None), ws[1:2]) < 1e-6


@pytest.mark.parametrize("batch", [1, 3])
def test_fused_and_per_sample_modulation_agree(tiny_generator, reference, batch):
    ws = torch.cat([reference["wplus"], reference["ws_psi1"]])[:batch].clone()
    outputs, grads = [], []
    for fused in (True, False):
        w = ws.clone().requires_grad_(True)
        img = tiny_generator.synthesis(w, noise_mode="const", fused_modconv=fused)
        (img.square().sum()).backward()
        outputs.append(img.detach())
        grads.append(w.grad)
    assert max_abs_diff(outputs[0], outputs[1]) < 1e-5
    assert max_abs_diff(grads[0], grads[1]) < 1e-5 * grads[0].abs().max()


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_modulated_conv_matches_a_per_sample_conv_in_both_memory_formats(kernel, batch, memory_format):
    """The modulated conv (1x1 as a matrix product, 3x3 as a convolution) against an explicit per-sample conv:
    values, and gradients w.r.t. the input, the weight (incl. through the demodulation norms) and the styles."""
    torch.manual_seed(0)
    inputs = [torch.randn(batch, 5, 6, 6), torch.randn(4, 5, kernel, kernel), torch.randn(batch, 5), torch.randn(4)]
    probe = torch.randn(batch, 4, 6, 6)

    def values_and_gradients(function):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        y = function(*leaves)
        return [y.detach(), *torch.autograd.grad(y, leaves, probe)]

    for demodulate in (True, False):
        def explicit(x, weight, styles, bias):
            outputs = []
            for i in range(batch):
                w = weight * styles[i].reshape(1, -1, 1, 1)
                if demodulate:
                    w = w / w.square().sum(dim=[1, 2, 3], keepdim=True).add(1e-8).sqrt()
                outputs.append(F.conv2d(x[i : i + 1], w, bias, padding=kernel // 2))
            return torch.cat(outputs)

        expected = values_and_gradients(explicit)
        for fused in (True, False):
            got = values_and_gradients(lambda x, weight, styles, bias: modulated_conv2d(
                x.contiguous(memory_format=memory_format), weight, styles, bias=bias, padding=kernel // 2,
                demodulate=demodulate, fused_modconv=fused))
            for name, g, e in zip(("output", "x", "weight", "styles", "bias"), got, expected):
                assert max_abs_diff(g, e) < 1e-4 * max(1.0, e.abs().max().item()), (name, demodulate, fused)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_upsampling_conv_weight_stored_in_out_order_gives_the_same_values_and_gradients(batch, memory_format):
    """Up-sampling layers keep their weight as (in, out, k, k) in memory (what the transposed convolution reads):
    values and every gradient equal those of the same weight stored contiguously."""
    torch.manual_seed(0)
    x, styles, noise = torch.randn(batch, 6, 5, 5), torch.randn(batch, 6), torch.randn(1, 1, 10, 10)
    weight = torch.randn(4, 6, 3, 3)
    probe = torch.randn(batch, 4, 10, 10)
    stored = {"contiguous": weight, "in-out": weight.transpose(0, 1).contiguous().transpose(0, 1)}
    assert stored["in-out"].transpose(0, 1).is_contiguous() and torch.equal(stored["in-out"], weight)

    for fused in (True, False):
        results = {}
        for name, w in stored.items():
            leaves = [x.clone().requires_grad_(True), w.clone(memory_format=torch.preserve_format).requires_grad_(True),
                      styles.clone().requires_grad_(True)]
            y = modulated_conv2d(leaves[0].contiguous(memory_format=memory_format), leaves[1], leaves[2], noise=noise,
                                 up=2, padding=1, resample_filter=setup_filter([1, 3, 3, 1]), flip_weight=False,
                                 fused_modconv=fused)
            results[name] = [y.detach(), *torch.autograd.grad(y, leaves, probe)]
        for what, a, b in zip(("output", "x", "weight", "styles"), results["contiguous"], results["in-out"]):
            assert max_abs_diff(a, b) < 1e-5 * max(1.0, a.abs().max().item()), (what, fused)


def test_upsampling_weights_keep_their_in_out_storage_through_state_dict_loading(tiny_generator, tiny_init_kwargs):
    G = Generator(**tiny_init_kwargs)
    G.load_state_dict(tiny_generator.state_dict())
    layers = [m for m in G.synthesis.modules() if isinstance(m, SynthesisLayer)]
    assert any(layer.up == 2 for layer in layers) and any(layer.up == 1 for layer in layers)
    for layer, reference_layer in zip(layers, [m for m in tiny_generator.synthesis.modules()
                                               if isinstance(m, SynthesisLayer)]):
        assert torch.equal(layer.weight, reference_layer.weight)
        assert layer.weight.transpose(0, 1).is_contiguous() if layer.up == 2 else layer.weight.is_contiguous()


def test_train_mode_uses_per_sample_path_with_same_result(tiny_generator, reference):
    G = tiny_generator
    evaluated = G.synthesis(reference["wplus"], noise_mode="const")
    G.train()
    trained = G.synthesis(reference["wplus"], noise_mode="const")
    G.eval()
    assert max_abs_diff(evaluated, trained) < 1e-5


def test_noise_const_buffers_are_used_directly_and_optimisable(tiny_generator, reference):
    G = tiny_generator
    noise_bufs = {name: buf for name, buf in G.synthesis.named_buffers() if "noise_const" in name}
    assert len(noise_bufs) == 2 * 4 - 1  # conv1 at 4x4, conv0 + conv1 at 8, 16, 32
    for buf in noise_bufs.values():
        buf.requires_grad_(True)
    img = G.synthesis(reference["wplus"][:1], noise_mode="const")
    img.square().sum().backward()
    for name, buf in noise_bufs.items():
        assert buf.grad is not None and buf.grad.abs().sum() > 0, name
        buf.requires_grad_(False)
    with torch.no_grad():
        G.synthesis.b16.conv0.noise_const.add_(1.0)
    changed = G.synthesis(reference["wplus"][:1], noise_mode="const")
    assert max_abs_diff(changed, img.detach()) > 1e-3


def test_noise_modes(tiny_generator, reference):
    G, ws = tiny_generator, reference["ws_psi1"][:1]
    torch.manual_seed(0)
    first = G.synthesis(ws)  # default noise_mode is 'random'
    torch.manual_seed(0)
    again = G.synthesis(ws, noise_mode="random")
    other = G.synthesis(ws, noise_mode="random")
    torch.testing.assert_close(first, again)
    assert max_abs_diff(first, other) > 1e-4
    assert max_abs_diff(G.synthesis(ws, noise_mode="none"), G.synthesis(ws, noise_mode="const")) > 1e-4


def test_cpu_is_always_float32(tiny_generator, reference):
    img = tiny_generator.synthesis(reference["wplus"], noise_mode="const", force_fp32=False)
    assert img.dtype == torch.float32
    assert max_abs_diff(img, reference["img_wplus_const"]) < TOLERANCE


def test_init_kwargs_rebuild_an_equal_generator(tiny_generator, reference):
    kwargs = json.loads(json.dumps(tiny_generator.init_kwargs))
    copy = Generator(**kwargs).eval()
    copy.load_state_dict(tiny_generator.state_dict(), strict=True)
    torch.testing.assert_close(copy.synthesis(reference["wplus"], noise_mode="const"),
                               tiny_generator.synthesis(reference["wplus"], noise_mode="const"))


def test_init_kwargs_are_not_shared_with_the_caller(tiny_init_kwargs):
    kwargs = json.loads(json.dumps(tiny_init_kwargs))
    G = Generator(**kwargs)
    kwargs["synthesis_kwargs"]["channel_max"] = 7
    assert G.init_kwargs["synthesis_kwargs"]["channel_max"] == 32


def test_conditional_generator():
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=3, w_dim=8, img_resolution=8, img_channels=3,
                  mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 64, "channel_max": 8}).eval()
    assert "mapping.embed.weight" in G.state_dict()
    z, c = torch.randn([2, 8]), torch.eye(3)[:2]
    img = G(z, c, noise_mode="const")
    assert img.shape == (2, 3, 8, 8)
    assert max_abs_diff(G(z, torch.eye(3)[1:3], noise_mode="const"), img) > 1e-4
    with pytest.raises(GeneratorInputError, match=r"c must have shape \(N, 3\)"):
        G(z, None)


def test_ffhq_configurations_have_the_known_number_of_ws():
    ffhq = {"channel_base": 32768, "channel_max": 512, "num_fp16_res": 4, "conv_clamp": 256}
    with torch.device("meta"):
        G1024 = Generator(512, 0, 512, 1024, 3, mapping_kwargs={"num_layers": 8}, synthesis_kwargs=ffhq)
        G512 = Generator(512, 0, 512, 512, 3, mapping_kwargs={"num_layers": 8}, synthesis_kwargs=ffhq)
    assert (G1024.num_ws, G512.num_ws) == (18, 16)
    assert G1024.synthesis.b1024.conv1.weight.shape == (32, 32, 3, 3)
    assert G1024.synthesis.b64.conv0.weight.shape == (512, 512, 3, 3)
    fp16_blocks = [res for res in G1024.synthesis.block_resolutions if getattr(G1024.synthesis, f"b{res}").use_fp16]
    assert fp16_blocks == [128, 256, 512, 1024]


def test_bad_inputs_give_clear_errors(tiny_generator, reference):
    G = tiny_generator
    with pytest.raises(GeneratorInputError, match=r"ws must have shape \(N, 8, 32\), got \(2, 7, 32\)"):
        G.synthesis(reference["wplus"][:, :7])
    with pytest.raises(GeneratorInputError, match="noise_mode must be one of"):
        G.synthesis(reference["wplus"], noise_mode="fixed")
    with pytest.raises(GeneratorInputError, match=r"z must have shape \(N, 32\)"):
        G.mapping(torch.zeros([2, 31]), None)
    with pytest.raises(GeneratorConfigError, match="'skip'"):
        Generator(32, 0, 32, 32, 3, synthesis_kwargs={"architecture": "resnet"})
    with pytest.raises(GeneratorConfigError, match="channel_bas"):
        Generator(32, 0, 32, 32, 3, synthesis_kwargs={"channel_bas": 512})
    with pytest.raises(GeneratorConfigError, match="power of two"):
        Generator(32, 0, 32, 48, 3)


# ---------------------------------------------------------------- CUDA (GPU only)


@pytest.fixture()
def no_tf32(monkeypatch):
    """TF32 off in cuDNN convolutions and CUDA matrix products, so float32 results compare with the CPU's."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.gpu
def test_cuda_generator_matches_cpu_reference(tiny_generator, reference, no_tf32):
    G = tiny_generator.to("cuda")
    img32 = G.synthesis(reference["wplus"].cuda(), noise_mode="const", force_fp32=True).cpu()
    assert max_abs_diff(img32, reference["img_wplus_const"]) < TOLERANCE
    img16 = G.synthesis(reference["wplus"].cuda(), noise_mode="const").cpu()  # b16, b32 in float16
    assert img16.dtype == torch.float32
    assert max_abs_diff(img16, reference["img_wplus_const"]) < 5e-2
    w = reference["wplus"][:1].cuda().requires_grad_(True)
    (G.synthesis(w, noise_mode="const", force_fp32=True) * reference["grad_weights"].cuda()).sum().backward()
    assert max_abs_diff(w.grad.cpu(), reference["grad_wplus_b1"]) < 1e-4 * reference["grad_wplus_b1"].abs().max()


@pytest.mark.gpu
@pytest.mark.parametrize("force_fp32", [True, False])
def test_cuda_ops_and_reference_ops_agree_in_the_generator(tiny_generator, reference, monkeypatch, no_tf32,
                                                           force_fp32):
    from pti.ops.cuda_plugin import IMPL_ENV_VAR, load_cuda_extension

    G = tiny_generator.to("cuda")
    results = {}
    for impl in ("ref", "auto"):
        if impl == "ref":
            monkeypatch.setenv(IMPL_ENV_VAR, "ref")
        else:
            monkeypatch.delenv(IMPL_ENV_VAR, raising=False)
            assert load_cuda_extension() is not None, "the CUDA ops plugin did not build"
        w = reference["wplus"].cuda().requires_grad_(True)
        img = G.synthesis(w, noise_mode="const", force_fp32=force_fp32)
        (img * reference["grad_weights"].cuda()).sum().backward()
        results[impl] = (img.detach().cpu(), w.grad.cpu())
    (img_ref, grad_ref), (img_cuda, grad_cuda) = results["ref"], results["auto"]
    image_tolerance = 1e-4 if force_fp32 else 5e-2
    assert max_abs_diff(img_cuda, img_ref) < image_tolerance
    assert max_abs_diff(grad_cuda, grad_ref) < (1e-4 if force_fp32 else 2e-2) * grad_ref.abs().max()


@pytest.mark.gpu
def test_channels_last_fp16_blocks_match(tiny_generator, reference, no_tf32):
    G = tiny_generator.to("cuda")
    plain = G.synthesis(reference["wplus"].cuda(), noise_mode="const")
    for block in G.synthesis.children():
        block.channels_last = block.use_fp16
    channels_last = G.synthesis(reference["wplus"].cuda(), noise_mode="const")
    assert max_abs_diff(channels_last.cpu(), plain.cpu()) < 5e-2
