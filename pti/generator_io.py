"""Our generator file format: the state dict (reference names) as safetensors, constructor arguments in the header.

Header metadata: `{"format": "pti-stylegan2", "init_kwargs": "<JSON of Generator.init_kwargs>", ...caller's}`.
Loading builds `pti.networks.Generator(**init_kwargs)` and copies the tensors in with a strict check that
names every missing key, unexpected key and shape mismatch. Nothing in the file is executed.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

if TYPE_CHECKING:
    from pti.networks import Generator

FORMAT = "pti-stylegan2"  # value of the "format" metadata entry of our generator files
_RESERVED_METADATA = ("format", "init_kwargs")
_LISTED = 5  # how many offending keys an error message names before summarising


class GeneratorFileError(ValueError):
    """A generator file or state dict is missing, unreadable, or does not fit the generator architecture."""


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown if len(names) <= _LISTED else f"{shown} and {len(names) - _LISTED} more"


def check_state_dict(G: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Raise `GeneratorFileError` naming every missing key, unexpected key and shape mismatch of `state_dict`."""
    expected = G.state_dict()
    missing = [name for name in expected if name not in state_dict]
    unexpected = [name for name in state_dict if name not in expected]
    mismatched = [
        f"{name} {tuple(state_dict[name].shape)} (the generator needs {tuple(tensor.shape)})"
        for name, tensor in expected.items()
        if name in state_dict and state_dict[name].shape != tensor.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_listing(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
    if problems:
        raise GeneratorFileError(f"{source} does not fit the generator {G.init_kwargs}: " + "; ".join(problems))


def build_generator(
    init_kwargs: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    device: torch.device | str = "cpu",
) -> Generator:
    """`Generator(**init_kwargs)` with `state_dict` loaded strictly; eval mode, float32, requires_grad off."""
    from pti.networks import Generator

    try:
        G = Generator(**init_kwargs)
    except (TypeError, ValueError) as error:
        raise GeneratorFileError(f"{source}: the generator cannot be built from {dict(init_kwargs)}: {error}") from None
    check_state_dict(G, state_dict, source=source)
    G.load_state_dict(state_dict, strict=True)
    return G.to(device=device, dtype=torch.float32).eval().requires_grad_(False)


def save_generator(G: Generator, path: str | os.PathLike[str], *, metadata: dict[str, str] | None = None) -> Path:
    """Write `G.state_dict()` as safetensors with its `init_kwargs` (and `metadata`) in the header; atomic."""
    from safetensors.torch import save

    extra = dict(metadata or {})
    reserved = [key for key in _RESERVED_METADATA if key in extra]
    if reserved:
        raise ValueError(f"metadata keys {reserved} are reserved for the file format")
    not_text = [key for key, value in extra.items() if not isinstance(key, str) or not isinstance(value, str)]
    if not_text:
        raise ValueError(f"metadata keys and values must be strings; these are not: {not_text}")
    header = {"format": FORMAT, "init_kwargs": json.dumps(G.init_kwargs, sort_keys=True), **extra}
    tensors = {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in G.state_dict().items()}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")  # same folder: os.replace is atomic
    try:
        temporary.write_bytes(save(tensors, metadata=header))  # a file of ours: permissions follow the umask
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata in a safetensors file's header (empty if it has none)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise GeneratorFileError(f"generator file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as file:
            return dict(file.metadata() or {})
    except Exception as error:  # safetensors raises its own error type for a malformed header
        raise GeneratorFileError(f"{path} is not a safetensors file: {error}") from None


def load_generator_file(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    init_kwargs: Mapping[str, Any] | None = None,
) -> Generator:
    """Load a generator written by `save_generator` (or a plain reference-named safetensors, given `init_kwargs`)."""
    from safetensors.torch import load_file

    path = Path(path)
    metadata = read_metadata(path)
    if init_kwargs is None:
        if metadata.get("format") != FORMAT or "init_kwargs" not in metadata:
            raise GeneratorFileError(
                f"{path} is not a '{FORMAT}' file (its header has format={metadata.get('format')!r}); pass "
                "init_kwargs=... to load a plain state dict with the reference parameter names"
            )
        try:
            init_kwargs = json.loads(metadata["init_kwargs"])
        except json.JSONDecodeError as error:
            raise GeneratorFileError(f"{path}: the init_kwargs in its header are not valid JSON: {error}") from None
        if not isinstance(init_kwargs, dict):
            raise GeneratorFileError(f"{path}: the init_kwargs in its header are not a JSON object")
    try:
        state_dict = load_file(str(path), device="cpu")
    except Exception as error:  # truncated data section, unsupported dtype
        raise GeneratorFileError(f"{path}: the tensors cannot be read: {error}") from None
    return build_generator(init_kwargs, state_dict, source=str(path), device=device)
