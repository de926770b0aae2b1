"""Gradio's cache of returned images: the stock in-place rewrite that cuts downloads, and the atomic workaround.

The tests marked `upstream` show Gradio's own behaviour: when one fails after a Gradio upgrade, Gradio has fixed it
and `pti.serving.gradio_cache` (with its version range) can go (docs/upstream/gradio-save-pil-to-cache.md).
"""
from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from app_process import free_port
from fetched_files import Fetched, fetch_image
from gradio import processing_utils
from gradio_client import Client
from PIL import Image

from pti.serving import gradio_cache

# Captured at collection, before any app installs the workaround.
STOCK = {name: getattr(processing_utils, name) for name in ("save_pil_to_cache", "save_bytes_to_cache")}
CLIENTS, CALLS = 10, 10  # the same image returned to ten clients at once, ten times each


@pytest.fixture()
def stock(monkeypatch):
    """Gradio's own functions in place for this test (whatever an earlier test installed comes back after it)."""
    for name, function in STOCK.items():
        assert function.__module__ == "gradio.processing_utils", "captured after the workaround was installed"
        monkeypatch.setattr(processing_utils, name, function)


@pytest.fixture()
def picture() -> Image.Image:
    """Noise, so that its PNG is large (~200 kB) and takes a while to write."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))


def rewrite_twice(save, cache: Path, picture: Image.Image) -> tuple[Path, int, int]:
    """Save `picture`, spoil the file in place (same length), save it again: (path, inode before, inode after)."""
    path = Path(save(picture, str(cache), format="png"))
    spoiled = b"\0" * path.stat().st_size
    with path.open("r+b") as file:
        file.write(spoiled)
    before = path.stat().st_ino
    again = Path(save(picture, str(cache), format="png"))
    assert again == path
    return path, before, path.stat().st_ino


def same_pixels(path: Path, picture: Image.Image) -> bool:
    with Image.open(path) as saved:
        return np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(picture))


@pytest.mark.upstream
def test_stock_gradio_rewrites_an_existing_cached_image_in_place(stock, picture, tmp_path):
    path, before, after = rewrite_twice(processing_utils.save_pil_to_cache, tmp_path, picture)
    assert after == before and same_pixels(path, picture)  # the same file, written again: truncated, then filled
    data = b"same bytes from two sessions"
    first = Path(processing_utils.save_bytes_to_cache(data, "clip.wav", str(tmp_path)))
    inode = first.stat().st_ino
    processing_utils.save_bytes_to_cache(data, "clip.wav", str(tmp_path))
    assert first.stat().st_ino == inode and first.read_bytes() == data


def test_the_atomic_versions_replace_the_file_whole_at_the_same_path(stock, picture, tmp_path):
    path, before, after = rewrite_twice(gradio_cache.save_pil_to_cache, tmp_path / "atomic", picture)
    assert after != before and same_pixels(path, picture)  # a new file renamed into place; a spoilt one healed
    stock_path = processing_utils.save_pil_to_cache(picture, str(tmp_path / "stock"), format="png")
    assert path.relative_to(tmp_path / "atomic") == Path(stock_path).relative_to(tmp_path / "stock")
    data = b"same bytes from two sessions"
    atomic = gradio_cache.save_bytes_to_cache(data, "clip", str(tmp_path / "atomic"))
    assert Path(atomic).relative_to(tmp_path / "atomic") == Path(
        processing_utils.save_bytes_to_cache(data, "clip", str(tmp_path / "stock"))).relative_to(tmp_path / "stock")
    assert Path(atomic).read_bytes() == data
    assert sorted(p.name for p in Path(path).parent.iterdir()) == ["image.png"]  # no temporary file left


def test_installed_for_every_component_that_caches_images(stock, picture, tmp_path, monkeypatch):
    assert gradio_cache.install_atomic_cache_writes()
    # No module holds Gradio's own functions under another name.
    stale = [name for name, module in list(sys.modules.items()) if name.startswith("gradio")
             for value in vars(module).values() if any(value is function for function in STOCK.values())]
    assert stale == []
    # And the components the app uses go through the atomic versions (a spoilt file comes back as a new file).
    image, gallery = gr.Image(format="png"), gr.Gallery(format="png")
    for postprocess in (lambda: image.postprocess(picture).path, lambda: image.postprocess(np.asarray(picture)).path,
                        lambda: gallery.postprocess([picture]).root[0].image.path):
        path = Path(postprocess())
        with path.open("r+b") as file:
            file.write(b"\0" * 64)
        inode = path.stat().st_ino
        assert Path(postprocess()) == path and path.stat().st_ino != inode and same_pixels(path, picture)


def test_outside_the_checked_versions_nothing_is_installed(stock, monkeypatch, caplog):
    monkeypatch.setattr(gr, "__version__", "7.0.0")
    with caplog.at_level(logging.INFO, logger=gradio_cache.__name__):
        assert not gradio_cache.install_atomic_cache_writes()
    assert processing_utils.save_pil_to_cache is STOCK["save_pil_to_cache"]
    assert "gradio 7.0.0: atomic cache writes not installed" in caplog.text


def one_image_to_many(picture: Image.Image) -> list[Fetched]:
    """A one-button Blocks returning `picture` to `gr.Image`, on a free local port; CLIENTS clients at once, each
    calling it CALLS times and fetching every returned file."""
    with gr.Blocks(analytics_enabled=False) as demo:
        shown = gr.Image(format="png")
        gr.Button().click(lambda: picture, None, shown, api_name="show", concurrency_limit=None)
    for attempt in range(5):  # a port taken between free_port() and the launch: another one
        port = free_port()
        try:
            demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
            break
        except OSError:
            if attempt == 4:
                raise
    fetched: list[Fetched] = []

    def client() -> None:
        api = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        try:
            with httpx.Client() as http:
                for _ in range(CALLS):
                    fetched.append(fetch_image(http, api.predict(api_name="/show")["url"]))
        finally:
            api.close()

    try:
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        demo.close()
    assert len(fetched) == CLIENTS * CALLS
    return fetched


@pytest.mark.upstream
@pytest.mark.slow
def test_stock_gradio_cuts_downloads_of_one_image_returned_to_many_clients(stock, picture):
    cut = [f for f in one_image_to_many(picture) if f.cut]
    assert cut, "no download cut: has Gradio fixed save_pil_to_cache? (see the module docstring)"


@pytest.mark.slow
def test_with_atomic_cache_writes_no_download_is_cut(stock, picture):
    assert gradio_cache.install_atomic_cache_writes()
    assert [f for f in one_image_to_many(picture) if f.cut] == []
