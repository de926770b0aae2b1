"""Safe loading of StyleGAN2-ADA training snapshots (`.pkl`) without executing anything from the file.

A snapshot is a Python pickle whose networks are stored through
`torch_utils.persistence._reconstruct_persistent_obj(meta)`, where `meta['module_src']` is the source
code of the module that defined the network class. The original loader executes that source; this one
never does. A restricted unpickler resolves only an allow-list of globals, each replaced by a small
function of ours that builds plain data: persistent objects become `_PersistentObject(class_name, state)`,
tensor storages are read with `torch.load(..., weights_only=True)`. The module tree is then flattened into
a state dict with the reference parameter names (`mapping.fc0.weight`, `synthesis.b4.const`, ...).
"""
from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np
import torch


class SnapshotError(ValueError):
    """A StyleGAN2-ADA snapshot could not be loaded."""


class UnsafePickleError(SnapshotError):
    """The pickle asks for something outside the allow-list (a global, a persistent id, a mutation)."""


class SnapshotFormatError(SnapshotError):
    """The file is not a (complete) StyleGAN2-ADA snapshot: truncated, not a pickle, or unexpected content."""


@dataclass(frozen=True)
class Snapshot:
    """One network of a snapshot: its constructor arguments and its state dict in reference names."""

    init_kwargs: dict[str, Any]  # JSON-serialisable constructor arguments (`_init_kwargs` of the network)
    state_dict: dict[str, torch.Tensor]  # parameters and persistent buffers, CPU tensors, reference names
    class_name: str  # the network's class name as recorded in the snapshot, e.g. 'Generator'


@dataclass(frozen=True)
class _PersistentObject:
    """Plain-data stand-in for a persistent network object: its class name and its `__dict__`."""

    class_name: str
    state: dict[str, Any]


class _AllowedGlobal:
    """An allow-listed callable handed to the unpickler; immutable, so a pickle's BUILD cannot alter it."""

    __slots__ = ("_name", "_function")

    def __init__(self, name: str, function: Callable[..., Any]):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_function", function)

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)

    def __setattr__(self, attribute: str, value: Any) -> None:
        raise UnsafePickleError(f"the pickle tries to modify the allowed global '{self._name}'")


def _reconstruct_persistent_obj(meta: Any) -> _PersistentObject:
    """Keep a persistent object's class name and state; its embedded `module_src` is dropped, never run."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise SnapshotFormatError("a persistent object record is not a {'type': 'class', ...} dictionary")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise SnapshotFormatError("a persistent object record lacks a string 'class_name' or a dict 'state'")
    return _PersistentObject(class_name=class_name, state=state)


def _load_storage_from_bytes(data: Any) -> torch.storage.TypedStorage:
    """Read one tensor storage (a legacy `torch.save` of a storage) with `weights_only=True`."""
    if not isinstance(data, bytes):
        raise SnapshotFormatError(f"a tensor storage is given as {type(data).__name__}, not bytes")
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafePickleError(f"a tensor storage was refused by torch.load(weights_only=True): {error}") from None
    except Exception as error:
        raise SnapshotFormatError(f"a tensor storage could not be read: {error}") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise SnapshotFormatError(f"a tensor storage decodes to {type(storage).__name__}, not a storage")
    return storage


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(type(item) is int and item >= 0 for item in value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """Plain tensor view of a storage (`torch._utils._rebuild_tensor_v2`), refusing hooks."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise SnapshotFormatError(f"a tensor is built on {type(storage).__name__}, not a storage")
    if type(storage_offset) is not int or storage_offset < 0 or not _is_int_tuple(size) or not _is_int_tuple(stride):
        raise SnapshotFormatError("a tensor has an invalid storage offset, size or stride")
    if backward_hooks:
        raise UnsafePickleError("a tensor carries backward hooks")
    if metadata:
        raise SnapshotFormatError("a tensor carries extra metadata, which StyleGAN2-ADA snapshots never do")
    try:
        return torch.empty((0,), dtype=storage.dtype).set_(storage, storage_offset, size, stride)
    except RuntimeError as error:
        raise SnapshotFormatError(f"a tensor does not fit its storage: {error}") from None


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> torch.Tensor:
    """Plain tensor for a `torch.nn.Parameter` (`torch._utils._rebuild_parameter`), refusing hooks."""
    if type(data) is not torch.Tensor:
        raise SnapshotFormatError(f"a parameter wraps {type(data).__name__}, not a tensor")
    if backward_hooks:
        raise UnsafePickleError("a parameter carries backward hooks")
    return data


def _numpy_scalar(dtype: Any, data: Any = None) -> np.generic:
    """A NumPy scalar from its dtype and raw bytes (`numpy.core.multiarray.scalar`); object dtypes refused."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError("a NumPy scalar has an object (or non-dtype) type")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise SnapshotFormatError("a NumPy scalar's data does not match its dtype")
    return np.frombuffer(data, dtype=dtype)[0].copy()


# Every global a StyleGAN2-ADA snapshot refers to (checked on the fixture with pickletools, and listed for
# the published FFHQ snapshots), mapped to what the restricted unpickler hands out instead.
_ALLOWED_GLOBALS: Mapping[str, Any] = MappingProxyType({
    "torch_utils.persistence._reconstruct_persistent_obj":
        _AllowedGlobal("torch_utils.persistence._reconstruct_persistent_obj", _reconstruct_persistent_obj),
    "torch._utils._rebuild_tensor_v2": _AllowedGlobal("torch._utils._rebuild_tensor_v2", _rebuild_tensor),
    "torch._utils._rebuild_parameter": _AllowedGlobal("torch._utils._rebuild_parameter", _rebuild_parameter),
    "torch.storage._load_from_bytes": _AllowedGlobal("torch.storage._load_from_bytes", _load_storage_from_bytes),
    "numpy.core.multiarray.scalar": _AllowedGlobal("numpy.core.multiarray.scalar", _numpy_scalar),
    "numpy._core.multiarray.scalar": _AllowedGlobal("numpy._core.multiarray.scalar", _numpy_scalar),
    # Types are handed out as themselves: built-in, immutable, and they only build data.
    "collections.OrderedDict": dict,
    "builtins.set": set,
    "dnnlib.util.EasyDict": dict,
    "numpy.dtype": np.dtype,
})


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals and refuses persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get(f"{module}.{name}")
        if target is None:
            raise UnsafePickleError(
                f"the pickle refers to the global '{module}.{name}', which is not on the allow-list of "
                "StyleGAN2-ADA snapshot contents; refusing to load it"
            )
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("the pickle uses persistent ids, which StyleGAN2-ADA snapshots never do")


def _unpickle(file: BinaryIO, source: str) -> Any:
    start = file.read(2)
    if len(start) < 2 or start[0] != pickle.PROTO[0] or not 2 <= start[1] <= pickle.HIGHEST_PROTOCOL:
        raise SnapshotFormatError(f"{source} is not a pickle of protocol 2 or later (it starts with {start!r}), "
                                  "so it is not a StyleGAN2-ADA snapshot")
    file.seek(-len(start), io.SEEK_CUR)
    try:
        return _RestrictedUnpickler(file).load()
    except SnapshotError as error:
        raise type(error)(f"{source}: {error}") from None
    except Exception as error:  # anything else a malformed stream raises inside the unpickler
        raise SnapshotFormatError(
            f"{source} is not a readable StyleGAN2-ADA snapshot pickle (truncated or damaged): "
            f"{type(error).__name__}: {error}"
        ) from None


def _plain_json(value: Any, where: str) -> Any:
    """`value` as JSON-compatible Python data (NumPy scalars to numbers), or a format error."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and not isinstance(value, np.object_):
        return value.item()
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise SnapshotFormatError(f"{where} has non-string keys")
        return {key: _plain_json(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise SnapshotFormatError(f"{where} holds a {type(value).__name__}, which is not plain data")


def _flatten_module(module: _PersistentObject, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Add a module's parameters and persistent buffers, then its submodules', in `state_dict` order."""
    state = module.state
    parameters, buffers, submodules = state.get("_parameters"), state.get("_buffers"), state.get("_modules")
    non_persistent = state.get("_non_persistent_buffers_set", set())
    if not isinstance(parameters, dict) or not isinstance(buffers, dict) or not isinstance(submodules, dict):
        raise SnapshotFormatError(f"module '{prefix or module.class_name}' lacks _parameters/_buffers/_modules")
    if not isinstance(non_persistent, set):
        raise SnapshotFormatError(f"module '{prefix or module.class_name}' has an invalid non-persistent buffer set")
    named = [*parameters.items(), *((name, buffer) for name, buffer in buffers.items() if name not in non_persistent)]
    for name, tensor in named:
        if tensor is None:
            continue
        if type(tensor) is not torch.Tensor:
            raise SnapshotFormatError(f"'{prefix}{name}' is a {type(tensor).__name__}, not a tensor")
        out[f"{prefix}{name}"] = tensor.detach()
    for name, child in submodules.items():
        if child is None:
            continue
        if not isinstance(child, _PersistentObject):
            raise SnapshotFormatError(f"submodule '{prefix}{name}' is a {type(child).__name__}, not a network record")
        _flatten_module(child, f"{prefix}{name}.", out)


def _network_init_kwargs(network: _PersistentObject, key: str) -> dict[str, Any]:
    init_args, init_kwargs = network.state.get("_init_args", ()), network.state.get("_init_kwargs")
    if init_args:
        raise SnapshotFormatError(f"'{key}' was constructed with positional arguments; only keyword arguments "
                                  "(as StyleGAN2-ADA training writes them) are supported")
    if not isinstance(init_kwargs, dict):
        raise SnapshotFormatError(f"'{key}' has no recorded constructor arguments (_init_kwargs)")
    return _plain_json(init_kwargs, f"{key}._init_kwargs")


def load_snapshot(path_or_file: str | os.PathLike[str] | BinaryIO, key: str = "G_ema") -> Snapshot:
    """Load one network (default `G_ema`) of a StyleGAN2-ADA snapshot (a path or a seekable binary file)."""
    if isinstance(path_or_file, (str, os.PathLike)):
        path = Path(path_or_file)
        if not path.is_file():
            raise SnapshotFormatError(f"snapshot file not found: {path}")
        source = str(path)
        with path.open("rb") as file:
            contents = _unpickle(file, source)
    else:
        source = str(getattr(path_or_file, "name", "the given file"))
        contents = _unpickle(path_or_file, source)
    if not isinstance(contents, dict):
        raise SnapshotFormatError(f"{source} holds a {type(contents).__name__}, not a snapshot dictionary")
    if key not in contents:
        raise SnapshotFormatError(f"{source} has no network '{key}' (it has: {', '.join(map(str, contents))})")
    network = contents[key]
    if not isinstance(network, _PersistentObject):
        raise SnapshotFormatError(f"'{key}' in {source} is a {type(network).__name__}, not a persistent network")
    state_dict: dict[str, torch.Tensor] = {}
    _flatten_module(network, "", state_dict)
    return Snapshot(init_kwargs=_network_init_kwargs(network, key), state_dict=state_dict, class_name=network.class_name)
