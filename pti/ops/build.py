"""Building the ops plugin with torch's ninja-based cpp_extension: the CUDA kernels, and their host emulation.

The CUDA toolkit is found without a system install: $CUDA_HOME, else the pip wheels that match torch's CUDA version
(`pip install "$(python -m pti.ops.build --toolkit-requirement)"` puts them in <site-packages>/nvidia/cu<major>),
else the nvcc on PATH. CI runs `python -m pti.ops.build --check`: the CUDA build into a fresh directory, warnings from
our sources as errors, imported once.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

SOURCES_DIR = Path(__file__).parent / "cuda"
CUDA_SOURCES = ("ops.cpp", "bias_act.cu", "upfirdn2d.cu")
EMULATION_SOURCES = ("ops.cpp", "host_emulation.cpp")
CUDA_EXTENSION_NAME = "pti_ops_cuda_v2"
EMULATION_EXTENSION_NAME = "pti_ops_host_emulation_v1"
CI_ARCH_LIST = "7.5;8.0;9.0"
"""CI's compile check: Turing (T4), Ampere (A100; its sm_80 code also runs on sm_86/89: A10G, L4, L40S), Hopper
(H100/H200). A GPU machine builds for its own GPU only."""
EMULATION_MAX_BLOCKS = 5
"""Grid cap of the emulated launches: small, so that the CPU tests run the kernels' grid-stride loops."""

_STRICT_CFLAGS = ["-Wall", "-Wextra", "-Werror"]
_STRICT_CUDA_CFLAGS = ["-Werror", "all-warnings", "-Xcompiler", ",".join(_STRICT_CFLAGS)]
_CPP_EXTENSION_LOCK = threading.Lock()  # cpp_extension.CUDA_HOME is process-wide: one build at a time sets it


class CudaToolkitError(RuntimeError):
    """No CUDA toolkit (nvcc) to build the plugin with."""


@dataclass(frozen=True)
class BuildOptions:
    """How to build the CUDA plugin."""

    build_dir: Path | None = None  # None: a per-torch-version folder in torch's extensions cache, reused by ninja
    arch_list: str | None = None  # TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0"; None: the visible GPUs' architectures
    strict: bool = False  # warnings from our sources are errors (CI)
    verbose: bool = False  # print the compiler command lines


def toolkit_requirement() -> str:
    """The pip requirement of the CUDA toolkit wheels that match the installed torch (e.g. cuda-toolkit...==13.0.*)."""
    if not torch.version.cuda:
        raise CudaToolkitError(f"torch {torch.__version__} is a CPU-only build: there is no CUDA version to match")
    return f"cuda-toolkit[nvcc,cccl,cudart,crt]=={torch.version.cuda}.*"


def _pip_toolkit_home() -> Path | None:
    """<site-packages>/nvidia/cu<major> of the toolkit wheels matching torch's CUDA version, when they hold nvcc."""
    spec = importlib.util.find_spec("nvidia")
    if not torch.version.cuda or spec is None or not spec.submodule_search_locations:
        return None
    major = torch.version.cuda.split(".")[0]
    for location in spec.submodule_search_locations:
        home = Path(location) / f"cu{major}"
        if (home / "bin" / "nvcc").is_file():
            return home
    return None


def find_cuda_home() -> Path:
    """The CUDA toolkit to build with: $CUDA_HOME, else the matching pip wheels, else the nvcc on PATH."""
    if os.environ.get("CUDA_HOME"):
        return Path(os.environ["CUDA_HOME"])
    home = _pip_toolkit_home()
    if home is not None:
        return home
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        return Path(nvcc).resolve().parent.parent
    raise CudaToolkitError(f"no CUDA toolkit found: set CUDA_HOME, or pip install \"{toolkit_requirement()}\"")


def _default_build_dir(name: str) -> Path:
    """A per-extension, per-torch-version folder in torch's extensions cache."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    return Path(root) / f"{name}-torch{torch.__version__}"


def _cudart_link_dir(cuda_home: Path, build_dir: Path) -> Path:
    """A folder with `libcudart.so` for the linker's -lcudart (the wheels ship only libcudart.so.<major>)."""
    link_dir = build_dir / "cudart"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "libcudart.so"
    candidates = sorted((cuda_home / "lib64").glob("libcudart.so*")) + sorted((cuda_home / "lib").glob("libcudart.so*"))
    if candidates and not link.is_symlink():
        link.symlink_to(candidates[0])
    return link_dir


def build_cuda_plugin(options: BuildOptions) -> ModuleType:
    """Compile (ninja; only what changed) and import the CUDA plugin; raises on a compile or import error."""
    from torch.utils import cpp_extension

    cuda_home = find_cuda_home()
    if not (cuda_home / "bin" / "nvcc").is_file():
        raise CudaToolkitError(f"CUDA_HOME={cuda_home} has no bin/nvcc")
    build_dir = options.build_dir or _default_build_dir(CUDA_EXTENSION_NAME)
    build_dir.mkdir(parents=True, exist_ok=True)
    cflags = ["-O3", *(_STRICT_CFLAGS if options.strict else [])]
    cuda_cflags = ["-O3", "--use_fast_math", *(_STRICT_CUDA_CFLAGS if options.strict else [])]
    with _CPP_EXTENSION_LOCK:
        saved_home, saved_arch = cpp_extension.CUDA_HOME, os.environ.get("TORCH_CUDA_ARCH_LIST")
        # cpp_extension reads its CUDA_HOME once, at import; point it at the toolkit found here for this build.
        cpp_extension.CUDA_HOME = str(cuda_home)
        if options.arch_list is not None:
            os.environ["TORCH_CUDA_ARCH_LIST"] = options.arch_list
        try:
            return cpp_extension.load(
                name=CUDA_EXTENSION_NAME,
                sources=[str(SOURCES_DIR / name) for name in CUDA_SOURCES],
                build_directory=str(build_dir),
                extra_cflags=cflags,
                extra_cuda_cflags=cuda_cflags,
                extra_ldflags=[f"-L{_cudart_link_dir(cuda_home, build_dir)}"],
                verbose=options.verbose,
            )
        finally:
            cpp_extension.CUDA_HOME = saved_home
            if saved_arch is None:
                os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
            else:
                os.environ["TORCH_CUDA_ARCH_LIST"] = saved_arch


def build_host_emulation(build_dir: Path | None = None, verbose: bool = False) -> ModuleType:
    """Compile (ninja) and import the kernels' host emulation: a CPU extension with the plugin's functions."""
    from torch.utils import cpp_extension

    build_dir = build_dir or _default_build_dir(EMULATION_EXTENSION_NAME)
    build_dir.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(
        name=EMULATION_EXTENSION_NAME,
        sources=[str(SOURCES_DIR / name) for name in EMULATION_SOURCES],
        build_directory=str(build_dir),
        extra_cflags=["-O2", "-DPTI_OPS_HOST_EMULATION", f"-DPTI_OPS_MAX_BLOCKS={EMULATION_MAX_BLOCKS}",
                      *_STRICT_CFLAGS],
        verbose=verbose,
    )


def _check(arch_list: str, verbose: bool) -> None:
    """CI's build step: the CUDA plugin from scratch, strict, imported; prints where the toolkit was and the time.
    (The host emulation is built, just as strictly, by the tests that use it.)"""
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); CUDA_HOME={find_cuda_home()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pti-ops-build-") as scratch:
        started = time.monotonic()
        options = BuildOptions(build_dir=Path(scratch), arch_list=arch_list, strict=True, verbose=verbose)
        module = build_cuda_plugin(options)
        print(f"CUDA plugin for {arch_list}: built and imported {module.__name__} in {time.monotonic() - started:.0f} s",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command line: `--check` (CI's build step) or `--toolkit-requirement`."""
    parser = argparse.ArgumentParser(prog="python -m pti.ops.build", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="build the CUDA plugin from scratch; fail on any warning")
    group.add_argument("--toolkit-requirement", action="store_true", help="print the pip requirement of the toolkit")
    parser.add_argument("--arch-list", default=CI_ARCH_LIST, help=f"TORCH_CUDA_ARCH_LIST (default {CI_ARCH_LIST})")
    parser.add_argument("--verbose", action="store_true", help="print the compiler command lines")
    args = parser.parse_args(argv)
    if args.toolkit_requirement:
        print(toolkit_requirement())
    else:
        _check(args.arch_list, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
