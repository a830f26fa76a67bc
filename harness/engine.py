"""The Docker engine: find one that answers, or start a private one, and stop only our own.

Lookup order: ``DOCKER_HOST`` if set, then the default socket, then the private engine's socket.
Where none answers and we are root on Debian/Ubuntu, ``ensure()`` installs Debian's ``docker.io``
if ``dockerd`` is missing and starts a private ``dockerd`` with its own socket, data root, exec
root, pidfile and log file (paths below). ``stop()`` stops only that private engine, identified by
its pidfile, never by process name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from harness.errors import EngineError

PRIVATE_ROOT = Path(os.environ.get("DRILL_ENGINE_ROOT", "/var/lib/drill"))
PRIVATE_RUN = Path(os.environ.get("DRILL_ENGINE_RUN", "/run/drill"))
PRIVATE_SOCKET = PRIVATE_RUN / "docker.sock"
PRIVATE_PIDFILE = PRIVATE_RUN / "docker.pid"
PRIVATE_EXEC_ROOT = PRIVATE_RUN / "exec"
PRIVATE_DATA_ROOT = PRIVATE_ROOT / "docker"
PRIVATE_LOG = Path(os.environ.get("DRILL_ENGINE_LOG", "/var/log/drill/dockerd.log"))
DEFAULT_SOCKET = Path("/var/run/docker.sock")
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class EngineInfo:
    """How to reach the engine, and whether the harness started it."""

    docker_host: str
    version: str
    private: bool
    started_now: bool = False

    def describe(self) -> str:
        who = "private engine started by drill" if self.private else "existing engine"
        return f"{who} at {self.docker_host} (Docker {self.version})"


def _ping(url: str, timeout: float = 3.0) -> str | None:
    """The engine's version if one answers at ``url``, else None."""
    try:
        client = docker.DockerClient(base_url=url, version="auto", timeout=timeout)
    except (docker.errors.DockerException, OSError):
        return None
    try:
        return str(client.version().get("Version", "?"))
    except (docker.errors.DockerException, OSError, Exception):
        return None
    finally:
        client.close()


def _candidates() -> list[tuple[str, bool]]:
    env = os.environ.get("DOCKER_HOST")
    if env:
        return [(env, env == f"unix://{PRIVATE_SOCKET}")]
    return [(f"unix://{DEFAULT_SOCKET}", False), (f"unix://{PRIVATE_SOCKET}", True)]


def find() -> EngineInfo | None:
    """The first engine that answers, or None."""
    for url, private in _candidates():
        version = _ping(url)
        if version:
            return EngineInfo(url, version, private)
    return None


def connect(timeout: int = 120) -> docker.DockerClient:
    """A client for the engine that answers; EngineError with a hint if none does."""
    info = find()
    if info is None:
        raise EngineError(
            "no Docker engine answers (tried "
            + ", ".join(u for u, _ in _candidates())
            + "); run `drill engine ensure` (or `make engine`) to start one"
        )
    return docker.DockerClient(
        base_url=info.docker_host, version="auto", timeout=timeout, max_pool_size=32
    )


def _private_pid() -> int | None:
    """The pid in our pidfile if that process is alive and is a dockerd.

    A dockerd that was killed leaves its pidfile behind, and the pid may since belong to
    another process: that one is neither waited for nor signalled.
    """
    try:
        pid = int(PRIVATE_PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm == "dockerd" else None


def _install_docker_io(progress: object = print) -> None:
    if os.geteuid() != 0:
        raise EngineError(
            "no Docker engine answers and dockerd is not installed; as root, drill can install "
            "Debian's docker.io, or install Docker yourself and set DOCKER_HOST"
        )
    if not shutil.which("apt-get"):
        raise EngineError("dockerd is missing and this is not a Debian/Ubuntu system")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "docker.io"]):
        if callable(progress):
            progress("engine: " + " ".join(cmd))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-10:] + proc.stderr.splitlines()[-10:])
            raise EngineError(f"{' '.join(cmd)} failed:\n{tail}")


def ensure(progress: object = print) -> EngineInfo:
    """An engine that answers: the existing one, or a private dockerd started now."""
    found = find()
    if found is not None:
        return found
    if os.environ.get("DOCKER_HOST") and os.environ["DOCKER_HOST"] != f"unix://{PRIVATE_SOCKET}":
        raise EngineError(
            f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer; drill does not start "
            "engines at addresses it does not own (unset DOCKER_HOST to use a private engine)"
        )
    if os.geteuid() != 0:
        raise EngineError(
            "no Docker engine answers; start one, or run `drill engine ensure` as root to start "
            "a private engine"
        )
    if not shutil.which("dockerd"):
        _install_docker_io(progress)
    return _start_private(progress)


def _start_private(progress: object) -> EngineInfo:
    if _private_pid() is not None:
        # Our dockerd is alive but not answering yet (still starting): wait for it.
        return _wait_private(started_now=False)
    for d in (PRIVATE_RUN, PRIVATE_EXEC_ROOT, PRIVATE_DATA_ROOT, PRIVATE_LOG.parent):
        d.mkdir(parents=True, exist_ok=True)
    PRIVATE_SOCKET.unlink(missing_ok=True)
    cmd = [
        "dockerd",
        "--host",
        f"unix://{PRIVATE_SOCKET}",
        "--data-root",
        str(PRIVATE_DATA_ROOT),
        "--exec-root",
        str(PRIVATE_EXEC_ROOT),
        "--pidfile",
        str(PRIVATE_PIDFILE),
    ]
    if callable(progress):
        progress(f"engine: starting private dockerd (log: {PRIVATE_LOG})")
    log = PRIVATE_LOG.open("ab")
    # A new session so that Ctrl-C in the terminal that started it does not stop the engine.
    subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()
    return _wait_private(started_now=True)


def _wait_private(started_now: bool) -> EngineInfo:
    url = f"unix://{PRIVATE_SOCKET}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        version = _ping(url, timeout=2)
        if version:
            return EngineInfo(url, version, private=True, started_now=started_now)
        time.sleep(0.2)
    tail = ""
    with contextlib.suppress(OSError):
        tail = "\n".join(PRIVATE_LOG.read_text(errors="replace").splitlines()[-15:])
    raise EngineError(
        f"private dockerd did not answer at {url} within {START_TIMEOUT_S:.0f}s; "
        f"last lines of {PRIVATE_LOG}:\n{tail}"
    )


def stop(timeout_s: float = 30.0) -> bool:
    """Stop the private engine if drill started it; returns whether one was stopped."""
    pid = _private_pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _private_pid() is None:
            return True
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    return True
