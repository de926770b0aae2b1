"""Editing sessions parked on disk: the tuned generator and its pivots in a folder, the rest (images, chains) in memory.

`SessionSpiller` is the `pti.session_store.Spiller` of the app's sessions, one face (`EditingSession`) or a group
photo's faces (`GroupSession`, whose faces share one tuned generator, written once). A parked session's folder holds
what `TunedGenerator.save` writes (the whole generator in float32 safetensors, about 120 MB at 1024 px, and the
pivots), written under a temporary name and renamed, so a folder is complete or absent. Reading it back gives the same
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

from pti.editor import EditingSession, GroupSession, Session
from pti.session_store import estimate_nbytes
from pti.tuning import TunedGenerator


def _with_tuned(session: Session, tuned: TunedGenerator | None) -> Session:
    """`session` with every face's inversion holding `tuned` (None: taken out, while parked)."""
    def face(one: EditingSession) -> EditingSession:
        return dataclasses.replace(one, inversion=dataclasses.replace(one.inversion, tuned=tuned))

    if isinstance(session, GroupSession):
        return dataclasses.replace(session, faces=tuple(face(one) for one in session.faces))
    return face(session)


def _tuned_of(session: Session) -> TunedGenerator:
    """The session's tuned generator (a group's faces share one)."""
    return session.tuned if isinstance(session, GroupSession) else session.inversion.tuned


@dataclass(frozen=True, eq=False)
class ParkedSession:
    """A session whose tuned generator waits in `directory`; everything else is here."""

    session: Session  # every `Inversion.tuned` set to None while parked
    steps_run: int  # the tuned generator's optimiser updates (not in its files)
    directory: Path  # the tuned generator's folder
    disk_bytes: int  # bytes of the files in `directory`

    @functools.cached_property
    def memory_bytes(self) -> int:
        """Bytes this parked session still holds in memory (images, the encoded photo, the pivots)."""
        return estimate_nbytes(self.session)


class SessionSpiller:
    """Parks editing sessions in folders under `root` (which it owns) and reads them back."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def park(self, session_id: str, session: Session) -> ParkedSession:
        """Write the session's tuned generator to a new folder (atomically); the rest stays in the handle."""
        name = uuid.uuid4().hex  # not the session id: folder names say nothing about who they belong to
        writing, directory = self.root / f".writing-{name}", self.root / name
        tuned = _tuned_of(session)
        try:
            tuned.save(writing)
            os.rename(writing, directory)
        finally:
            shutil.rmtree(writing, ignore_errors=True)
        return ParkedSession(session=_with_tuned(session, None), steps_run=tuned.steps_run, directory=directory,
                             disk_bytes=sum(path.stat().st_size for path in directory.iterdir()))

    def unpark(self, parked: ParkedSession) -> Session:
        """The session again, its tuned generator read back from its folder (on the CPU)."""
        tuned = dataclasses.replace(TunedGenerator.load(parked.directory), steps_run=parked.steps_run)
        return _with_tuned(parked.session, tuned)

    def discard(self, parked: ParkedSession) -> None:
        """Delete a parked session's folder."""
        shutil.rmtree(parked.directory, ignore_errors=True)
