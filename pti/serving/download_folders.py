"""Download folders of the app's sessions: every file handed to Gradio is written once and never changed after.

Gradio copies a file returned by an event into its cache after the handler returns (it hashes the file, then copies
it), so rewriting a file in place could cache one event's bytes under another's hash, and deleting it too early could
fail an event. Hence: each version of a session's files goes into a new folder, and a folder is deleted only when a
newer one of its kind replaced it (or the session ended) and no running event still returns it (`hold` / `release`).

A new folder gets a fresh unique name (`tempfile.mkdtemp`) and nobody can know that name before the handler returns
it, so filling it in place is as atomic as a temporary name and a rename: Gradio only ever reads complete files; a
folder whose filling failed is never returned and goes with its session.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterable


class DownloadFolders:
    """Folders under `root`, one per version of a session's files of one kind (e.g. 'inversion', 'edits')."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._current: dict[tuple[str, str], Path] = {}  # (session, kind) -> its newest folder
        self._holds: dict[Path, int] = {}  # every folder not yet deleted -> running events that return it

    def new_folder(self, session_id: str, kind: str) -> Path:
        """A new empty folder, now the session's current one of `kind` (replacing the previous one); held once by
        the caller, who releases it when its event has ended."""
        tag = hashlib.sha256(session_id.encode()).hexdigest()[:20]
        folder = Path(tempfile.mkdtemp(dir=self.root, prefix=f"{tag}-{kind}-"))
        with self._lock:
            self._holds[folder] = 1
            previous = self._current.get((session_id, kind))
            self._current[(session_id, kind)] = folder
            if previous is not None:
                self._delete_if_unused(previous)
        return folder

    def hold(self, folder: Path) -> bool:
        """Hold an existing folder for an event that returns its files; False if it was deleted already."""
        with self._lock:
            if folder not in self._holds:
                return False
            self._holds[folder] += 1
            return True

    def release(self, folders: Iterable[Path]) -> None:
        """An event that held `folders` has ended: delete those that were replaced and are held by no other."""
        with self._lock:
            for folder in folders:
                self._holds[folder] -= 1
                self._delete_if_unused(folder)

    def forget(self, session_id: str) -> None:
        """The session ended: its folders are deleted as soon as no running event holds them."""
        with self._lock:
            ended = [key for key in self._current if key[0] == session_id]
            for key in ended:
                self._delete_if_unused(self._current.pop(key))

    def _delete_if_unused(self, folder: Path) -> None:
        """Delete `folder` if it is no session's current one and no event holds it (call with the lock held)."""
        if self._holds.get(folder) == 0 and folder not in self._current.values():
            del self._holds[folder]
            shutil.rmtree(folder, ignore_errors=True)
