"""The Space's configuration: README front matter, the torch pin of pre-requirements.txt, and .gitattributes."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from pti.weights import REGISTRY

REPO = Path(__file__).resolve().parent.parent
# From the ZeroGPU documentation (hub-docs spaces-zerogpu.md, August 2026): the Python and torch versions it runs.
ZEROGPU_PYTHONS = {"3.10", "3.12"}
ZEROGPU_TORCH = {"2.8.0", "2.9.1", "2.10.0", "2.11.0"}
# What the app loads at start on a Space (the e4e encoder when the e4e pivot is first used).
PRELOADED_KEYS = {"stylegan2-ffhq-1024", "dlib-landmarks-68", "lpips-vgg16", "lpips-alexnet", "e4e-ffhq-encode"}
# Registry files whose commit could not be looked up (the Hub is out of reach here): still on 'main'.
NOT_YET_PINNED = {"stylegan2-ffhq-1024", "dlib-landmarks-68", "styleclip-fs3-ffhq"}
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def front_matter() -> dict:
    """The YAML header of README.md."""
    text = (REPO / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def requirement(path: Path, name: str) -> Requirement:
    """The requirement on `name` in a requirements file."""
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and Requirement(line).name == name:
            return Requirement(line)
    raise AssertionError(f"{path.name} has no requirement on {name}")


def test_python_and_torch_are_ones_zerogpu_runs():
    assert front_matter()["python_version"] in ZEROGPU_PYTHONS
    pinned = requirement(REPO / "pre-requirements.txt", "torch")
    (spec,) = pinned.specifier
    assert spec.operator == "==" and spec.version in ZEROGPU_TORCH
    assert Version(spec.version) in requirement(REPO / "requirements.txt", "torch").specifier  # kept, not replaced


def test_the_files_loaded_at_start_are_preloaded_at_the_registry_revisions():
    preloaded = {}
    for line in front_matter()["preload_from_hub"]:
        repo, files, *revision = line.split()
        for filename in files.split(","):
            preloaded[(repo, filename)] = revision[0] if revision else "main"
    for key in PRELOADED_KEYS:
        entry = REGISTRY[key]
        assert preloaded.get((entry.repo_id, entry.filename)) == entry.revision, key


def test_every_hub_file_is_pinned_to_a_commit():
    unpinned = {key for key, entry in REGISTRY.items() if not COMMIT.match(entry.revision)}
    assert unpinned == NOT_YET_PINNED


def test_every_binary_file_goes_through_lfs():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    binary = [name for name in files.decode().split("\0") if name and b"\0" in (REPO / name).read_bytes()[:8192]]
    assert binary  # the examples and fixtures at least
    attributes = subprocess.run(["git", "check-attr", "filter", "--", *binary], cwd=REPO, capture_output=True,
                                check=True, text=True).stdout.splitlines()
    assert all(line.endswith(": filter: lfs") for line in attributes), attributes
