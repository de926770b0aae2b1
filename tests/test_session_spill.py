"""Editing sessions parked on disk and read back: the same weights bit for bit, atomic folders, nothing left over."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pti.editor import EditingSession, FaceEditor, InversionSettings
from pti.session_spill import SessionSpiller
from pti.session_store import SessionStore, estimate_nbytes

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
QUICK = InversionSettings(projection_steps=2, tuning_steps=2, locality=False)


@pytest.fixture(scope="module")
def editor(landmarks_model_path):
    return FaceEditor("tiny", landmarks_path=landmarks_model_path, lpips_pretrained=False)


@pytest.fixture(scope="module")
def session(editor, tmp_path_factory) -> EditingSession:
    photo = editor.align((EXAMPLES / "astronaut.png").read_bytes())
    inversion = editor.invert(photo.aligned, QUICK)
    edits = (editor.parse_edit("interfacegan:age", 2.0),)
    start = EditingSession(photo=photo, inversion=inversion)
    files = editor.write_inversion_files(start, tmp_path_factory.mktemp("downloads"))
    return EditingSession(photo=photo, inversion=inversion, edits=edits, step_images=editor.render_chain(start, edits),
                          files=files)


def test_a_parked_session_comes_back_with_the_same_weights(tmp_path, editor, session):
    spiller = SessionSpiller(tmp_path)
    parked = spiller.park("someone", session)
    assert [p.name for p in tmp_path.iterdir()] == [parked.directory.name]  # one complete folder, nothing else
    assert "someone" not in parked.directory.name
    assert parked.disk_bytes == sum(p.stat().st_size for p in parked.directory.iterdir()) > 0
    assert parked.memory_bytes < estimate_nbytes(session)  # the weights left memory
    back = spiller.unpark(parked)
    original, restored = session.inversion.tuned.generator.state_dict(), back.inversion.tuned.generator.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[name], restored[name]) for name in original)
    assert back.edits == session.edits and back.inversion.tuned.steps_run == session.inversion.tuned.steps_run
    assert back.files is session.files
    again = editor.render_chain(back, back.edits)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(again, session.step_images))
    spiller.discard(parked)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_no_folder(tmp_path, session, monkeypatch):
    spiller = SessionSpiller(tmp_path)

    def save_then_fail(self, directory):
        Path(directory).mkdir(parents=True)
        (Path(directory) / "tuned.safetensors").write_bytes(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(type(session.inversion.tuned), "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        spiller.park("someone", session)
    assert list(tmp_path.iterdir()) == []


def test_the_store_parks_real_sessions_and_gives_them_back(tmp_path, session):
    spiller = SessionSpiller(tmp_path)
    store = SessionStore(max_sessions=1, max_bytes=10 ** 9, spiller=spiller, max_disk_bytes=10 ** 9)
    store.put("alice", session)
    store.put("bob", session)  # alice's tuned generator goes to disk
    assert store.parked_sessions == 1 and len(list(tmp_path.iterdir())) == 1
    alice = store.get("alice")  # transparently back; bob's goes to disk
    assert alice is not session and alice.step_images == session.step_images
    store.clear()
    assert list(tmp_path.iterdir()) == []
