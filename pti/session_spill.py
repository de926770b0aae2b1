"""Editing sessions parked on disk: the tuned generator and its pivot in a folder, the rest (images, chain) in memory.

`SessionSpiller` is the `pti.session_store.Spiller` of the app's sessions. A parked session's folder holds what
`TunedGenerator.save` writes (the whole generator in float32 safetensors, about 120 MB at 1024 px, and the pivot),
written under a temporary name and renamed, so a folder is complete or absent. Reading it back gives the same
weights bit for bit (no float16: nothing is lost).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from editing_directions.edit import Edit
from pti.editor import EditingSession, Inversion, InversionFiles, InversionSettings, Photo, Reconstruction
from pti.projector import Pivot
from pti.serving.durations import InversionTimings
from pti.session_store import estimate_nbytes
from pti.tuning import TunedGenerator


@dataclass(frozen=True, eq=False)
class ParkedSession:
    """An `EditingSession` whose tuned generator waits in `directory`; everything else is here."""

    photo: Photo
    pivot: Pivot
    pivot_render: Reconstruction
    tuned_render: Reconstruction
    settings: InversionSettings
    seconds: float
    timings: InversionTimings
    steps_run: int
    edits: tuple[Edit, ...]
    step_images: tuple[Image.Image, ...]
    files: InversionFiles | None  # the inversion's download files
    directory: Path  # the tuned generator's folder
    disk_bytes: int  # bytes of the files in `directory`

    @functools.cached_property
    def memory_bytes(self) -> int:
        """Bytes this parked session still holds in memory (images, the encoded photo, the pivot)."""
        return estimate_nbytes([getattr(self, field.name) for field in dataclasses.fields(self)])


class SessionSpiller:
    """Parks editing sessions in folders under `root` (which it owns) and reads them back."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def park(self, session_id: str, session: EditingSession) -> ParkedSession:
        """Write the session's tuned generator to a new folder (atomically); the rest stays in the handle."""
        name = uuid.uuid4().hex  # not the session id: folder names say nothing about who they belong to
        writing, directory = self.root / f".writing-{name}", self.root / name
        try:
            session.inversion.tuned.save(writing)
            os.rename(writing, directory)
        finally:
            shutil.rmtree(writing, ignore_errors=True)
        inversion = session.inversion
        return ParkedSession(
            photo=session.photo, pivot=inversion.pivot, pivot_render=inversion.pivot_render,
            tuned_render=inversion.tuned_render, settings=inversion.settings, seconds=inversion.seconds,
            timings=inversion.timings, steps_run=inversion.tuned.steps_run, edits=session.edits,
            step_images=session.step_images, files=session.files, directory=directory,
            disk_bytes=sum(path.stat().st_size for path in directory.iterdir()))

    def unpark(self, parked: ParkedSession) -> EditingSession:
        """The session again, its tuned generator read back from its folder (on the CPU)."""
        tuned = dataclasses.replace(TunedGenerator.load(parked.directory), steps_run=parked.steps_run)
        inversion = Inversion(tuned=tuned, pivot=parked.pivot, pivot_render=parked.pivot_render,
                              tuned_render=parked.tuned_render, settings=parked.settings, seconds=parked.seconds,
                              timings=parked.timings)
        return EditingSession(photo=parked.photo, inversion=inversion, edits=parked.edits,
                              step_images=parked.step_images, files=parked.files)

    def discard(self, parked: ParkedSession) -> None:
        """Delete a parked session's folder."""
        shutil.rmtree(parked.directory, ignore_errors=True)
