"""The app's download folders: each version in a new folder, deleted only when replaced and held by no event."""
from __future__ import annotations

from pti.serving.download_folders import DownloadFolders


def test_each_version_is_a_new_folder_and_the_previous_goes_once_released(tmp_path):
    folders = DownloadFolders(tmp_path)
    first = folders.new_folder("session", "edits")
    (first / "final.png").write_bytes(b"first")
    second = folders.new_folder("session", "edits")
    assert second != first and second.parent == first.parent == tmp_path
    assert (first / "final.png").read_bytes() == b"first"  # replaced, but its event still holds it
    folders.release([first])
    assert not first.exists()
    folders.release([second])
    assert second.exists()  # the current version stays for the next event that returns it


def test_a_folder_held_by_another_event_outlives_its_replacement(tmp_path):
    folders = DownloadFolders(tmp_path)
    inversion = folders.new_folder("session", "inversion")
    folders.release([inversion])
    assert folders.hold(inversion)  # an edit event returns the inversion's files
    folders.new_folder("session", "inversion")  # a new inversion replaces them meanwhile
    assert inversion.exists()
    folders.release([inversion])
    assert not inversion.exists()
    assert not folders.hold(inversion)  # too late: an event can tell


def test_kinds_and_sessions_are_apart_and_a_forgotten_session_goes_when_unheld(tmp_path):
    folders = DownloadFolders(tmp_path)
    inversion = folders.new_folder("a", "inversion")
    edits = folders.new_folder("a", "edits")
    other = folders.new_folder("b", "edits")
    folders.release([inversion, other])
    folders.forget("a")
    assert not inversion.exists() and edits.exists()  # `edits` is still held by its event
    folders.release([edits])
    assert not edits.exists() and other.exists()
