"""The private engine's pidfile: only a live dockerd counts, never a reused pid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import engine


def test_stale_pidfile_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "docker.pid"
    monkeypatch.setattr(engine, "PRIVATE_PIDFILE", pidfile)
    assert engine._private_pid() is None  # no pidfile
    pidfile.write_text(str(os.getpid()))  # alive, but this test's python, not a dockerd
    assert engine._private_pid() is None
    pidfile.write_text("999999999")  # no such process
    assert engine._private_pid() is None
    pidfile.write_text("garbage")
    assert engine._private_pid() is None


def test_stop_without_a_private_engine_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(str(os.getpid()))
    monkeypatch.setattr(engine, "PRIVATE_PIDFILE", pidfile)
    assert engine.stop() is False  # and this process is still here to assert it
