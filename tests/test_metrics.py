"""Metrics and LPIPS: MS-SSIM against scikit-image's SSIM, LPIPS against the lpips package, identity with dlib."""
from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import io
import pickle
import warnings

import lpips as lpips_package
import numpy as np
import pytest
import torch
from conftest import FACES_DIR, face_recognition_models_file
from PIL import Image
from safetensors.torch import save_file
from skimage.metrics import structural_similarity

from pti import weights
from pti.images import pil_to_tensor, tensor_to_pil
from pti.losses import build_lpips
from pti.metrics import (METRIC_NOTES, IdentityModel, cosine_similarity, default_identity_model_path, locality_metrics,
                         ms_ssim, ms_ssim_scales, reconstruction_metrics)


def random_images(count, size, seed):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_single_scale_ms_ssim_equals_scikit_image_ssim():
    a = random_images(2, 48, 0)
    b = (a + 0.3 * random_images(2, 48, 1)).clamp(-1, 1)
    ours = ms_ssim(a, b, scales=1)
    for i in range(2):
        reference = structural_similarity(
            ((a[i] + 1) / 2).permute(1, 2, 0).numpy(), ((b[i] + 1) / 2).permute(1, 2, 0).numpy(),
            data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(reference, abs=1e-5)


def test_ms_ssim_is_one_for_equal_images_and_falls_with_noise():
    a = torch.nn.functional.avg_pool2d(random_images(1, 260, 2), 5, stride=1)  # 256 px, some structure
    noise = random_images(1, 256, 3)
    values = [ms_ssim(a, (a + level * noise).clamp(-1, 1)).item() for level in (0.0, 0.05, 0.2, 0.8)]
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert values[0] > values[1] > values[2] > values[3]


def test_ms_ssim_scales_fit_the_image_size():
    assert ms_ssim_scales(1024) == 5 and ms_ssim_scales(176) == 5 and ms_ssim_scales(175) == 4
    assert ms_ssim_scales(32) == 2 and ms_ssim_scales(11) == 1
    with pytest.raises(ValueError, match="at least 11 px"):
        ms_ssim_scales(8)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_perceptual_loss_equals_the_lpips_package(net):
    ours = build_lpips(net, pretrained=False, seed=4)
    with torch.device("meta"), warnings.catch_warnings():  # skip the slow random initialisation; weights below
        warnings.simplefilter("ignore")
        reference = lpips_package.LPIPS(net=net, pnet_rand=True, verbose=False)
    reference = reference.to_empty(device="cpu")
    reference.load_state_dict(ours.network.state_dict())
    a, b = random_images(2, 32, 5), random_images(2, 32, 6)
    expected = reference(a, b).flatten()
    assert torch.allclose(ours(a, b), expected, atol=1e-6)
    features_b = ours.features(b[:1])  # a fixed image's features, computed once and reused against a batch
    assert torch.allclose(ours.distance_from_features(ours.features(a), features_b),
                          reference(a, b[:1].expand(2, -1, -1, -1)).flatten(), atol=1e-6)
    assert not any(p.requires_grad for p in ours.parameters())


def test_pretrained_backbone_is_read_from_the_resolved_file(monkeypatch, tmp_path):
    """torchvision-layout `features.<i>.*` tensors land in the right LPIPS layers (file found via pti.weights)."""
    source = build_lpips("alex", pretrained=False, seed=9)
    tensors = {f"features.{name.split('.', 2)[1]}.{name.split('.', 2)[2]}": p.detach().clone()
               for name, p in source.network.net.named_parameters()}
    tensors["classifier.1.weight"] = torch.zeros(2, 2)  # other tensors of the file are ignored
    path = tmp_path / "alexnet.safetensors"
    save_file(tensors, str(path))
    asked = []
    monkeypatch.setattr(weights, "resolve", lambda key, local=None: asked.append((key, local)) or path)
    loaded = build_lpips("alex", pretrained=True)
    assert asked == [("lpips-alexnet", None)]
    a, b = random_images(1, 64, 7), random_images(1, 64, 8)
    assert torch.equal(loaded(a, b), source(a, b))

    del tensors["features.3.weight"]
    save_file(tensors, str(path))
    with pytest.raises(weights.WeightsError, match="missing tensor 'features.3.weight'"):
        build_lpips("alex", pretrained=True)


def test_pretrained_backbone_from_a_torch_file_read_safely(monkeypatch, tmp_path):
    """A `.pt` / `.pth` state dict works as the safetensors file does; anything but a dict of tensors is refused, and
    a pickled object is never executed (weights_only); a tensor of the wrong shape is named."""
    source = build_lpips("alex", pretrained=False, seed=9)
    tensors = {f"features.{name.split('.', 2)[1]}.{name.split('.', 2)[2]}": p.detach().clone()
               for name, p in source.network.net.named_parameters()}
    path = tmp_path / "alexnet.pth"
    torch.save(tensors, path)
    monkeypatch.setattr(weights, "resolve", lambda key, local=None: path)
    a, b = random_images(1, 64, 7), random_images(1, 64, 8)
    assert torch.equal(build_lpips("alex", pretrained=True)(a, b), source(a, b))

    torch.save([tensors["features.0.weight"]], path)
    with pytest.raises(weights.WeightsError, match=r"alexnet\.pth: expected a state dict of tensors, found list"):
        build_lpips("alex", pretrained=True)
    path.write_bytes(pickle.dumps(ExecutedOnLoad(), protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        build_lpips("alex", pretrained=True)
    wrong = dict(tensors, **{"features.3.weight": torch.zeros(2, 2)})
    torch.save(wrong, path)
    with pytest.raises(weights.WeightsError, match=r"alexnet\.pth: tensor 'features\.3\.weight' has shape \(2, 2\), "
                                                   r"expected \(192, 64, 5, 5\)"):
        build_lpips("alex", pretrained=True)


def test_build_lpips_defaults_pretrained_vgg_seed_0_and_passes_the_local_file(monkeypatch, tmp_path):
    source = build_lpips("vgg", pretrained=False, seed=3)
    path = tmp_path / "vgg.safetensors"
    save_file({f"features.{name.split('.', 2)[1]}.{name.split('.', 2)[2]}": p.detach().clone()
               for name, p in source.network.net.named_parameters()}, str(path))
    asked = []
    monkeypatch.setattr(weights, "resolve", lambda key, local=None: asked.append((key, local)) or path)
    assert build_lpips().net_name == "vgg" and asked == [("lpips-vgg16", None)]
    build_lpips("vgg", backbone_path="my/vgg.safetensors")
    assert asked[-1] == ("lpips-vgg16", "my/vgg.safetensors")
    default, zero = build_lpips("alex", pretrained=False), build_lpips("alex", pretrained=False, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), zero.state_dict().values()))


class ExecutedOnLoad:
    """A pickled object whose loading would run code (it must be refused, not run)."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_unknown_lpips_network():
    with pytest.raises(ValueError, match="unknown LPIPS network 'squeeze'"):
        build_lpips("squeeze", pretrained=False)


def test_reconstruction_metrics_per_image():
    alex = build_lpips("alex", pretrained=False)
    images, targets = random_images(2, 32, 10), random_images(2, 32, 11)
    metrics = reconstruction_metrics(images, targets, lpips=alex)
    assert len(metrics) == 2
    for i, m in enumerate(metrics):
        assert m.mse == pytest.approx((images[i] - targets[i]).square().mean().item())
        assert m.lpips == pytest.approx(alex(images[i:i + 1], targets[i:i + 1]).item(), abs=1e-6)
        assert m.ms_ssim == pytest.approx(ms_ssim(images[i:i + 1], targets[i:i + 1]).item())
        assert m.identity_similarity is None and m.identity_distance is None


def test_cosine_similarity_of_known_descriptors():
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == pytest.approx(2 ** -0.5)
    assert cosine_similarity(np.array([3.0, 4.0]), np.array([0.6, 0.8])) == pytest.approx(1.0)  # scale-free
    assert cosine_similarity(np.array([1.0, 2.0]), np.array([-2.0, 1.0])) == pytest.approx(0.0)
    assert cosine_similarity(np.array([1.0, 2.0]), np.array([-1.0, -2.0])) == pytest.approx(-1.0)


def test_every_metric_says_its_scale_and_direction():
    assert set(METRIC_NOTES) == {"mse", "lpips", "ms_ssim", "identity_similarity", "identity_distance"}
    assert "[-1, 1]" in METRIC_NOTES["mse"] and "[0, 1]" in METRIC_NOTES["ms_ssim"]
    assert "dlib" in METRIC_NOTES["identity_similarity"] and "not the face-recognition network of the PTI paper" \
        in METRIC_NOTES["identity_similarity"]
    for name in ("mse", "lpips", "identity_distance"):
        assert "lower is better" in METRIC_NOTES[name]
    for name in ("ms_ssim", "identity_similarity"):
        assert "higher is better" in METRIC_NOTES[name]


def test_locality_metrics(tiny_generator):
    alex = build_lpips("alex", pretrained=False)
    same = locality_metrics(tiny_generator, tiny_generator, lpips=alex, num_latents=4)
    assert same.lpips == 0.0 and same.mse == 0.0 and same.num_latents == 4
    changed = copy.deepcopy(tiny_generator)
    with torch.no_grad():
        changed.synthesis.b32.conv1.weight.mul_(1.5)
    different = locality_metrics(tiny_generator, changed, lpips=alex, num_latents=4)
    assert different.lpips > 0 and different.mse > 0


def test_identity_distance_tells_people_apart(landmarks_model_path):
    model = IdentityModel(face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat"),
                          landmarks_model_path)
    astronaut = Image.open(FACES_DIR / "astronaut.png").convert("RGB")
    hopper = Image.open(FACES_DIR / "grace_hopper.jpg").convert("RGB")
    buffer = io.BytesIO()
    astronaut.resize((400, 400), Image.LANCZOS).save(buffer, format="JPEG", quality=60)
    astronaut_again = Image.open(buffer).convert("RGB")
    assert model.distance(astronaut, astronaut_again) < 0.6
    assert model.distance(astronaut, hopper) > 0.6
    assert model.distance(astronaut, Image.fromarray(np.full((200, 200, 3), 128, np.uint8))) is None


def test_identity_descriptor_of_any_image_mode(landmarks_model_path):
    """Grey, RGBA and palette images get the descriptor of their RGB conversion (dlib reads RGB only)."""
    model = IdentityModel(face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat"),
                          landmarks_model_path)
    face = Image.open(FACES_DIR / "astronaut.png").convert("RGB")
    for mode in ("L", "RGBA", "P"):
        other = face.convert(mode)
        np.testing.assert_array_equal(model.descriptor(other), model.descriptor(other.convert("RGB")))


def test_the_identity_model_path_comes_from_the_environment_or_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PTI_IDENTITY_MODEL", str(tmp_path / "mine.dat"))
    assert default_identity_model_path() == tmp_path / "mine.dat"
    monkeypatch.delenv("PTI_IDENTITY_MODEL")
    assert default_identity_model_path() == face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat")
    empty_package = importlib.machinery.ModuleSpec("face_recognition_models", None, is_package=True)
    empty_package.submodule_search_locations = [str(tmp_path)]  # installed, but without the model file
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: empty_package)
    assert default_identity_model_path() is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert default_identity_model_path() is None


def test_identity_similarity_is_the_cosine_of_the_descriptors(landmarks_model_path):
    """Both identity metrics of `reconstruction_metrics`, against numpy on the descriptors of the same images."""
    model = IdentityModel(face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat"),
                          landmarks_model_path)
    faces = [Image.open(FACES_DIR / name).convert("RGB") for name in ("astronaut.png", "grace_hopper.jpg")]
    images = torch.cat([pil_to_tensor(faces[0], 256), pil_to_tensor(faces[0], 256)])
    targets = torch.cat([pil_to_tensor(faces[0].resize((128, 128)), 256), pil_to_tensor(faces[1], 256)])
    metrics = reconstruction_metrics(images, targets, lpips=build_lpips("alex", pretrained=False), identity=model)
    similarities = []
    for i, (image, target) in enumerate(zip(tensor_to_pil(images), tensor_to_pil(targets))):
        a, b = model.descriptor(image), model.descriptor(target)
        expected = float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))
        assert metrics[i].identity_similarity == pytest.approx(expected, abs=1e-9)
        assert metrics[i].identity_distance == pytest.approx(float(np.sqrt(np.sum((a - b) ** 2))), abs=1e-9)
        similarities.append(expected)
    assert similarities[0] > similarities[1]  # the same person is more similar than another one


def structured_pair(size, seed, noise=0.3, channels=3):
    """An image with structure at several scales and a noisy, slightly darker copy of it, in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.avg_pool2d(torch.rand(2, channels, size + 4, size + 4, generator=generator), 5, stride=1)
    a = torch.nn.functional.interpolate(torch.rand(2, channels, size // 8, size // 8, generator=generator),
                                        size=(size, size), mode="bilinear") * 0.5 + a * 0.5
    b = (a * 0.9 + noise * torch.rand(2, channels, size, size, generator=generator)).clamp(0, 1)
    return a * 2 - 1, b * 2 - 1


def library_ms_ssim(images_a, images_b, scales):
    """MS-SSIM of Wang et al. 2003 from pytorch-msssim's per-scale SSIM and contrast-structure terms: cs at the
    first scales, full SSIM at the coarsest, exponents renormalised over the scales used, channels averaged per term."""
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    x, y = (images_a + 1) / 2, (images_b + 1) / 2
    window = _fspecial_gauss_1d(11, 1.5).repeat(x.shape[1], 1, 1, 1)
    weights = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333][:scales])
    weights = weights / weights.sum()
    value = torch.ones(x.shape[0])
    for scale in range(scales):
        ssim, cs = _ssim(x, y, data_range=1.0, win=window, K=(0.01, 0.03))
        term = (ssim if scale == scales - 1 else cs).mean(dim=1)
        value = value * torch.relu(term) ** weights[scale]
        x, y = torch.nn.functional.avg_pool2d(x, 2), torch.nn.functional.avg_pool2d(y, 2)
    return value


def test_ms_ssim_equals_pytorch_msssim_on_grey_images():
    """Grey images (one channel repeated): pytorch-msssim's own ms_ssim at its 5 scales, to float precision."""
    import pytorch_msssim

    a, b = structured_pair(192, 20, channels=1)
    weights = [w / 1.0001 for w in (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)]  # Wang et al.'s, which sum to 1.0001
    reference = pytorch_msssim.ms_ssim((a + 1) / 2, (b + 1) / 2, data_range=1.0, size_average=False, weights=weights)
    ours = ms_ssim(a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1))
    assert torch.allclose(ours, reference, atol=2e-6), (ours, reference)
    assert (ours < 0.95).all()  # the comparison is not between trivially equal images


def test_ms_ssim_on_very_dark_images_equals_pytorch_msssim():
    """Images in [0, 0.02] of the [0, 1] range: local means near 0, where SSIM's luminance constant C1 = (0.01)^2
    sets the luminance term (elsewhere it hardly matters)."""
    import pytorch_msssim

    a, b = structured_pair(192, 22, channels=1)
    a, b = (a + 1) * 0.01 - 1, (b + 1) * 0.01 - 1  # [-1, 1] -> [-1, -0.98], i.e. [0, 0.01] on the [0, 1] scale
    weights = [w / 1.0001 for w in (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)]
    reference = pytorch_msssim.ms_ssim((a + 1) / 2, (b + 1) / 2, data_range=1.0, size_average=False, weights=weights)
    ours = ms_ssim(a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1))
    assert torch.allclose(ours, reference, atol=2e-6), (ours, reference)


def test_ms_ssim_equals_pytorch_msssim_on_colour_images():
    import pytorch_msssim

    a, b = structured_pair(256, 21)
    reference = pytorch_msssim.ms_ssim((a + 1) / 2, (b + 1) / 2, data_range=1.0, size_average=False)
    ours = ms_ssim(a, b)
    # pytorch-msssim averages the channels' MS-SSIM; ours averages each scale's term over the channels first
    assert torch.allclose(ours, reference, atol=1e-3), (ours, reference)
    assert torch.allclose(ours, library_ms_ssim(a, b, 5), atol=2e-6)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_ms_ssim_with_fewer_scales_for_small_images(size):
    a, b = structured_pair(size, size)
    scales = ms_ssim_scales(size)
    assert torch.allclose(ms_ssim(a, b), library_ms_ssim(a, b, scales), atol=2e-6)
