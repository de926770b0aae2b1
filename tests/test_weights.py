"""The registry, `resolve` (local override, Hub download through a loopback Hub, cache, sha256), `load_generator`."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from huggingface_hub import constants as hf_constants
import pytest
import torch

from conftest import TINY_DIR
from hub_server import COMMIT, FakeHub, HubFile
from pti import weights
from pti.generator_io import GeneratorFileError, read_metadata
from pti.legacy_pickle import Snapshot
from pti.weights import (
    REGISTRY,
    WeightFile,
    WeightsError,
    file_sha256,
    go_offline,
    hub_offline,
    hub_reachable,
    load_generator,
    resolve,
    resolve_file,
)

REPO_ROOT = Path(__file__).parent.parent
SNAPSHOT = TINY_DIR / "stylegan2_ada_tiny_snapshot.pkl"
MODEL_FILE = HubFile("tester/weights", "checkpoints/model.bin", b"model weights " * 1000)
SPACE_FILE = HubFile("tester/demo", "PTI/editings/direction.pt", b"a direction", repo_type="space")


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Our cache in a temporary folder, no weights folder, the Hub client online (it only reaches loopback)."""
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path / "pti-cache"))
    monkeypatch.delenv("PTI_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


def _entry(hub_file: HubFile, *, sha256: str | None = "real", size: int | None = None, key: str = "test-file"):
    return WeightFile(key, hub_file.repo_id, hub_file.filename, hub_file.repo_type,
                      sha256=hub_file.sha256 if sha256 == "real" else sha256, size=size,
                      licence="test only", description="a small file served by the loopback Hub")


def _expected_hashes_of_reference_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(TINY_DIR / "G_ema_state_dict.pt", weights_only=True)


def _assert_is_tiny_fixture(G: torch.nn.Module) -> None:
    reference = _expected_hashes_of_reference_state_dict()
    state = G.state_dict()
    assert list(state) == list(reference)
    assert all(torch.equal(state[name], tensor) for name, tensor in reference.items())
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert all(t.dtype == torch.float32 for t in state.values())


# ---------------------------------------------------------------------------------------------------------
# Registry


def test_registry_has_every_pretrained_file_and_is_read_only():
    required = {"stylegan2-ffhq-1024", "stylegan2-ffhq-512", "dlib-landmarks-68", "interfacegan-age",
                "interfacegan-smile", "interfacegan-rotation", "ganspace-ffhq-pca", "e4e-ffhq-encode",
                "lpips-vgg16", "lpips-alexnet"}
    hairstyles = {f"styleclip-{s}-hairstyle" for s in
                  ("afro", "bob", "bowl", "buzz", "caesar", "crew", "pixie", "straight", "undercut", "wavy")}
    assert required | hairstyles <= set(REGISTRY)
    for key, entry in REGISTRY.items():
        assert entry.key == key and entry.licence and entry.description
    with pytest.raises(TypeError):
        REGISTRY["stylegan2-ffhq-1024"] = REGISTRY["stylegan2-ffhq-512"]  # type: ignore[index]
    for alias, key in weights.GENERATOR_ALIASES.items():
        assert REGISTRY[key].filename.endswith(".pkl"), alias


@pytest.mark.parametrize("bad", [dict(sha256="ABC"), dict(sha256="G" * 64), dict(repo_type="bucket"), dict(size=0)])
def test_weight_file_refuses_invalid_fields(bad):
    fields = dict(key="k", repo_id="a/b", filename="f.bin", licence="l", description="d") | bad
    with pytest.raises(ValueError):
        WeightFile(**fields)


def test_registry_sha256_of_the_dlib_model_matches_the_offline_copy(landmarks_model_path):
    """The registry's hash is checked against the real 99 MB file shipped by face-recognition-models."""
    path = resolve("dlib-landmarks-68", local=landmarks_model_path)
    assert path == landmarks_model_path
    assert file_sha256(path) == REGISTRY["dlib-landmarks-68"].sha256


def test_unknown_key_lists_the_known_ones():
    with pytest.raises(WeightsError, match="unknown pretrained file 'stylegan3'.*stylegan2-ffhq-1024"):
        resolve("stylegan3")


# ---------------------------------------------------------------------------------------------------------
# Local overrides and the hash cache


def test_local_file_or_folder_overrides_and_is_verified(tmp_path):
    entry = _entry(SPACE_FILE)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "direction.pt").write_bytes(SPACE_FILE.content)
    nested = tmp_path / "nested" / "PTI" / "editings"
    nested.mkdir(parents=True)
    (nested / "direction.pt").write_bytes(SPACE_FILE.content)

    assert resolve(entry, local=flat / "direction.pt") == flat / "direction.pt"
    assert resolve(entry, local=flat) == flat / "direction.pt"
    assert resolve(entry, local=tmp_path / "nested") == nested / "direction.pt"
    with pytest.raises(WeightsError, match="neither the file nor a folder holding direction.pt"):
        resolve(entry, local=tmp_path / "empty-or-missing")

    (flat / "direction.pt").write_bytes(b"something else")
    with pytest.raises(WeightsError, match=f"but {SPACE_FILE.sha256} was expected, so it was rejected"):
        resolve(entry, local=flat)


def test_size_mismatch_is_rejected_before_hashing(tmp_path, monkeypatch):
    (tmp_path / "model.bin").write_bytes(b"short")
    monkeypatch.setattr(weights, "_hash_file", lambda path: pytest.fail("hashed a file of the wrong size"))
    with pytest.raises(WeightsError, match=f"has 5 bytes but {len(MODEL_FILE.content)} were expected"):
        resolve(_entry(MODEL_FILE, size=len(MODEL_FILE.content)), local=tmp_path)


def test_weights_dir_environment_variable_is_used_before_the_hub(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.bin").write_bytes(MODEL_FILE.content)
    monkeypatch.setenv("PTI_WEIGHTS_DIR", os.pathsep.join([str(tmp_path / "absent"), str(folder)]))
    with FakeHub(MODEL_FILE) as hub:
        assert resolve(_entry(MODEL_FILE), cache_dir=tmp_path / "hf", endpoint=hub.url) == folder / "model.bin"
    assert hub.requests == []


def test_file_sha256_is_hashed_once_per_size_and_mtime(tmp_path, monkeypatch):
    path = tmp_path / "data.bin"
    path.write_bytes(b"first contents")
    assert file_sha256(path) == hashlib.sha256(b"first contents").hexdigest()
    monkeypatch.setattr(weights, "_hash_file", lambda p: pytest.fail("re-hashed an unchanged file"))
    assert file_sha256(path) == hashlib.sha256(b"first contents").hexdigest()
    monkeypatch.undo()
    monkeypatch.setenv("PTI_CACHE_DIR", str(tmp_path / "pti-cache"))
    path.write_bytes(b"other contents, longer")
    assert file_sha256(path) == hashlib.sha256(b"other contents, longer").hexdigest()


def test_a_damaged_hash_cache_is_ignored(tmp_path):
    cache_file = tmp_path / "pti-cache" / "sha256-cache.json"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text("{not json")
    path = tmp_path / "data.bin"
    path.write_bytes(b"contents")
    assert file_sha256(path) == hashlib.sha256(b"contents").hexdigest()
    assert json.loads(cache_file.read_text())[os.path.realpath(path)][2] == hashlib.sha256(b"contents").hexdigest()


def test_resolve_file_checks_existence_and_hash(tmp_path):
    path = tmp_path / "mine.pt"
    path.write_bytes(b"user file")
    assert resolve_file(path) == path
    assert resolve_file(path, sha256=hashlib.sha256(b"user file").hexdigest().upper()) == path
    with pytest.raises(WeightsError, match="rejected"):
        resolve_file(path, sha256="0" * 64)
    with pytest.raises(WeightsError, match="not found"):
        resolve_file(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------------------------------------
# The Hub, through the real huggingface_hub client and a loopback server


def test_download_then_cache_hit_with_the_server_stopped_and_offline(tmp_path):
    cache = tmp_path / "hf"
    with FakeHub(MODEL_FILE, SPACE_FILE) as hub:
        model_path = resolve(_entry(MODEL_FILE), cache_dir=cache, endpoint=hub.url, progress=False)
        space_path = resolve(_entry(SPACE_FILE), cache_dir=cache, endpoint=hub.url, progress=False)
    assert model_path.read_bytes() == MODEL_FILE.content and space_path.read_bytes() == SPACE_FILE.content
    assert model_path == cache / "models--tester--weights" / "snapshots" / COMMIT / "checkpoints" / "model.bin"
    assert space_path == cache / "spaces--tester--demo" / "snapshots" / COMMIT / "PTI" / "editings" / "direction.pt"
    assert hub.requests == [
        ("HEAD", "/tester/weights/resolve/main/checkpoints/model.bin"),
        ("GET", "/tester/weights/resolve/main/checkpoints/model.bin"),
        ("HEAD", "/spaces/tester/demo/resolve/main/PTI/editings/direction.pt"),
        ("GET", "/spaces/tester/demo/resolve/main/PTI/editings/direction.pt"),
    ]
    # The server is gone: the client cannot reach it and falls back to its cache.
    assert resolve(_entry(MODEL_FILE), cache_dir=cache, endpoint=hub.url) == model_path
    with pytest.MonkeyPatch.context() as offline:
        offline.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        assert resolve(_entry(SPACE_FILE), cache_dir=cache, endpoint=hub.url) == space_path


def test_download_with_wrong_sha256_is_rejected(tmp_path):
    entry = _entry(MODEL_FILE, sha256=hashlib.sha256(b"the file we expected").hexdigest())
    with FakeHub(MODEL_FILE) as hub:
        for _ in range(2):  # rejected on download and again from the cache: never handed out
            with pytest.raises(WeightsError) as raised:
                resolve(entry, cache_dir=tmp_path / "hf", endpoint=hub.url, progress=False)
            message = str(raised.value)
            assert MODEL_FILE.sha256 in message and entry.sha256 in message and "rejected (not used)" in message


def test_missing_file_and_missing_repo_are_one_clear_sentence(tmp_path):
    missing_file = WeightFile("test-missing", MODEL_FILE.repo_id, "checkpoints/absent.bin", licence="t", description="t")
    missing_repo = WeightFile("test-norepo", "tester/absent", "absent.pt", "space", licence="t", description="t")
    with FakeHub(MODEL_FILE) as hub:
        with pytest.raises(WeightsError) as no_file:
            resolve(missing_file, cache_dir=tmp_path / "hf", endpoint=hub.url)
        with pytest.raises(WeightsError) as no_repo:
            resolve(missing_repo, cache_dir=tmp_path / "hf", endpoint=hub.url)
    assert "test-missing: cannot get checkpoints/absent.bin from the Hugging Face model repo tester/weights" in str(
        no_file.value)
    assert "no such file (HTTP 404)" in str(no_file.value)
    assert "PTI_WEIGHTS_DIR" in str(no_file.value) and "hf download tester/weights checkpoints/absent.bin" in str(
        no_file.value)
    assert "does not exist or is private" in str(no_repo.value) and "--repo-type space" in str(no_repo.value)
    for error in (no_file.value, no_repo.value):
        assert "\n" not in str(error) and str(error).count(". ") == 0


def test_offline_with_an_empty_cache_says_how_to_provide_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("PTI_WEIGHTS_DIR", str(tmp_path / "my-weights"))
    with FakeHub(MODEL_FILE) as hub:
        with pytest.raises(WeightsError) as raised:
            resolve(_entry(MODEL_FILE), cache_dir=tmp_path / "hf", endpoint=hub.url)
    message = str(raised.value)
    assert "HF_HUB_OFFLINE is set and the file is not in the cache" in message
    assert str(tmp_path / "hf") in message and str(tmp_path / "my-weights") in message
    assert "local=" in message and "hf download tester/weights checkpoints/model.bin" in message
    assert hub.requests == []


def test_hub_reachable_tries_one_connection(tmp_path):
    with FakeHub(MODEL_FILE) as hub:
        assert hub_reachable(hub.url)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there any more: refused at once
    start = time.perf_counter()
    assert not hub_reachable(f"http://127.0.0.1:{port}")
    assert time.perf_counter() - start < 2
    assert not hub_reachable("not a url")


def test_go_offline_makes_a_missing_file_fail_at_once_without_contacting_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # both restored after the test
    assert not hub_offline()
    go_offline()
    assert hub_offline() and os.environ["HF_HUB_OFFLINE"] == "1"
    with FakeHub(MODEL_FILE) as hub:
        with pytest.raises(WeightsError, match="HF_HUB_OFFLINE is set and the file is not in the cache"):
            resolve(_entry(MODEL_FILE), cache_dir=tmp_path / "hf", endpoint=hub.url)
    assert hub.requests == []


def test_a_server_that_is_not_the_hub_is_a_clear_error(tmp_path):
    with FakeHub(MODEL_FILE, hub_like=False) as hub:
        with pytest.raises(WeightsError, match="could not be reached or did not answer like the Hub.*X-Repo-Commit"):
            resolve(_entry(MODEL_FILE), cache_dir=tmp_path / "hf", endpoint=hub.url)


def test_progress_bar_only_when_asked(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub: draw bars even when stderr is not a terminal
    with FakeHub(MODEL_FILE) as hub:
        resolve(_entry(MODEL_FILE), cache_dir=tmp_path / "quiet", endpoint=hub.url, progress=False)
        assert "100%" not in capfd.readouterr().err
        resolve(_entry(MODEL_FILE), cache_dir=tmp_path / "loud", endpoint=hub.url, progress=True)
        assert "100%" in capfd.readouterr().err


_RESOLVE_IN_A_FRESH_PROCESS = """
import json, sys
from pti.weights import WeightFile, WeightsError, resolve
try:
    print(json.dumps({"path": str(resolve(WeightFile(**json.loads(sys.argv[1])), progress=False))}))
except WeightsError as error:
    print(json.dumps({"error": str(error)}))
"""


def _resolve_in_a_fresh_process(entry: WeightFile, env: dict[str, str]) -> dict[str, str]:
    fields = {name: getattr(entry, name) for name in
              ("key", "repo_id", "filename", "repo_type", "revision", "sha256", "size", "licence", "description")}
    done = subprocess.run([sys.executable, "-c", _RESOLVE_IN_A_FRESH_PROCESS, json.dumps(fields)], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_environment_variables_hf_home_endpoint_and_offline_are_honoured(tmp_path):
    """HF_HOME / HF_ENDPOINT / HF_HUB_OFFLINE are read by huggingface_hub at import: check them in a fresh process."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("HF_", "HUGGINGFACE_", "PTI_")) and name != "TRANSFORMERS_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf-home"), PTI_CACHE_DIR=str(tmp_path / "pti-cache"), PYTHONPATH=str(REPO_ROOT),
               OMP_NUM_THREADS="1")
    entry = _entry(SPACE_FILE)
    with FakeHub(SPACE_FILE) as hub:
        downloaded = _resolve_in_a_fresh_process(entry, env | {"HF_ENDPOINT": hub.url})
    expected = tmp_path / "hf-home" / "hub" / "spaces--tester--demo" / "snapshots" / COMMIT / "PTI/editings/direction.pt"
    assert downloaded == {"path": str(expected)}
    resolve_requests = [request for request in hub.requests if "/resolve/" in request[1]]
    assert resolve_requests == [("HEAD", "/spaces/tester/demo/resolve/main/PTI/editings/direction.pt"),
                                ("GET", "/spaces/tester/demo/resolve/main/PTI/editings/direction.pt")]
    offline = _resolve_in_a_fresh_process(entry, env | {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1"})
    assert offline == {"path": str(expected)}
    elsewhere = _resolve_in_a_fresh_process(
        entry, env | {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-home")})
    assert "HF_HUB_OFFLINE is set" in elsewhere["error"] and str(tmp_path / "empty-home") in elsewhere["error"]


# ---------------------------------------------------------------------------------------------------------
# load_generator


def test_tiny_generator_is_the_shipped_asset():
    _assert_is_tiny_fixture(load_generator("tiny"))


def test_snapshot_is_converted_once_and_later_loads_never_unpickle(tmp_path, monkeypatch):
    converted_dir = tmp_path / "converted"
    _assert_is_tiny_fixture(load_generator(SNAPSHOT, converted_dir=converted_dir))
    source_sha256 = hashlib.sha256(SNAPSHOT.read_bytes()).hexdigest()
    converted = converted_dir / f"{source_sha256}.safetensors"
    assert [p.name for p in converted_dir.iterdir()] == [converted.name]
    assert read_metadata(converted)["source_sha256"] == source_sha256

    monkeypatch.setattr("pti.legacy_pickle.load_snapshot", lambda *a, **k: pytest.fail("unpickled again"))
    _assert_is_tiny_fixture(load_generator(SNAPSHOT, converted_dir=converted_dir))
    _assert_is_tiny_fixture(load_generator(converted))  # our own .safetensors by path


def test_registry_generator_goes_through_resolve_and_the_default_conversion_folder(tmp_path):
    entry = WeightFile("test-tiny-snapshot", "tester/gan", SNAPSHOT.name,
                       sha256=hashlib.sha256(SNAPSHOT.read_bytes()).hexdigest(), licence="t", description="t")
    _assert_is_tiny_fixture(load_generator(entry, local=TINY_DIR))
    assert (tmp_path / "pti-cache" / "converted" / f"{entry.sha256}.safetensors").is_file()
    wrong = WeightFile("test-tiny-snapshot", "tester/gan", SNAPSHOT.name, sha256="0" * 64, licence="t", description="t")
    with pytest.raises(WeightsError, match="rejected"):
        load_generator(wrong, local=TINY_DIR)


def test_conversion_refuses_tensors_that_do_not_fit_and_writes_nothing(tmp_path, monkeypatch, tiny_init_kwargs):
    state = _expected_hashes_of_reference_state_dict()
    state["synthesis.b64.conv0.weight"] = torch.zeros(1)
    monkeypatch.setattr("pti.legacy_pickle.load_snapshot",
                        lambda path: Snapshot(init_kwargs=tiny_init_kwargs, state_dict=state, class_name="Generator"))
    with pytest.raises(GeneratorFileError, match=r"unexpected tensor\(s\): synthesis\.b64\.conv0\.weight"):
        load_generator(SNAPSHOT, converted_dir=tmp_path / "converted")
    assert not (tmp_path / "converted").exists() or not any((tmp_path / "converted").iterdir())


def test_short_names_map_to_the_registry_and_fail_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match="stylegan2-ffhq-1024: cannot get stylegan2-ffhq1024x1024.pkl from the "
                                           "Hugging Face model repo DragGan/DragGan-Models"):
        load_generator("ffhq-1024", cache_dir=tmp_path / "hf")
    with pytest.raises(WeightsError, match="stylegan2-ffhq-512x512.pkl"):
        load_generator("ffhq-512", cache_dir=tmp_path / "hf")


def test_unknown_names_and_non_generators_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="neither a known generator .*tiny.*ffhq-1024.*nor an existing file"):
        load_generator("ffhq-2048")
    with pytest.raises(WeightsError, match="not a generator snapshot"):
        load_generator("dlib-landmarks-68")


@pytest.mark.gpu
def test_tiny_generator_on_cuda():
    G = load_generator("tiny", device="cuda")
    assert all(t.is_cuda for t in G.state_dict().values())
