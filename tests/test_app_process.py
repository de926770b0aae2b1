"""The app as a process: a SIGTERM stops it cleanly, and its downloads folder goes with it."""
from __future__ import annotations

import signal

import pytest
from app_process import running_app

pytestmark = pytest.mark.slow


def test_sigterm_stops_the_app_and_removes_its_downloads_and_sessions_folders(landmarks_model_path, tmp_path):
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    log_path = tmp_path / "app.log"
    with running_app(landmarks_model_path, log_path, env={"TMPDIR": str(temp_dir)}) as (_, process):
        assert len(list(temp_dir.glob("pti-app-*"))) == 1  # the app's downloads folder
        assert len(list(temp_dir.glob("pti-sessions-*"))) == 1  # where sessions wait on disk
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    assert list(temp_dir.glob("pti-app-*")) == [] and list(temp_dir.glob("pti-sessions-*")) == []
