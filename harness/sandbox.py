"""Sandboxes: labs seen as a trainer sees them, one per learner (``drill up --name alice``).

Isolation is the lab's own (labels, names ``drill-<lab>-*``, a /16 of its own, its own DNS
server and state folder); this module adds what a trainer needs on top: a listing with age and
state, and a way into a host (a shell, one command, its logs).

Hosts are named as ``drill status`` names them: a component (``web1``, ``dns``), a gateway
``<site>-gw``, the ``replicator``, a recovery copy ``<host>-dr`` and a test copy
``<host>-test``: the ``drill.component`` label of the lab's containers.

A sandbox's state, in order of precedence: its failover state when it is not ``protected``
(``failed-over``, ``committed``, ...), ``degraded`` when a fault is active or a container is not
running, else ``healthy``. Health checks are not run (``drill status`` does that), so that
``drill ls`` stays fast with several sandboxes.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from harness import lab, naming
from harness.errors import EngineError, UsageError
from harness.runtime import ExecResult, Runtime


@dataclass(frozen=True)
class SandboxSummary:
    """One line of ``drill ls``."""

    lab: str
    topology: str
    run_id: str
    containers: int
    running: int
    created_at: float
    age_s: float | None
    state: str  # healthy | degraded | <failover state>
    active_faults: int
    scenario: str | None  # the running scenario, if any

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def sandbox_state(lab_name: str, containers: int, running: int) -> tuple[str, int]:
    """The sandbox's state (see the module docstring) and how many faults are active."""
    from harness import failover, faults

    n_faults = len(faults.active(lab_name))
    fo = failover.read_state(lab_name)["state"]
    if fo != "protected":
        return fo, n_faults
    if n_faults or running < containers:
        return "degraded", n_faults
    return "healthy", n_faults


def list_sandboxes(*, runtime: Runtime | None = None) -> list[SandboxSummary]:
    """Every lab on the engine with its age, state and running scenario."""
    from harness import scenario

    out = []
    now = time.time()
    for s in lab.list_labs(runtime=runtime):
        st, n_faults = sandbox_state(s.lab, s.containers, s.running)
        rec = scenario.read_record(s.lab)
        out.append(
            SandboxSummary(
                lab=s.lab,
                topology=s.topology,
                run_id=s.run_id,
                containers=s.containers,
                running=s.running,
                created_at=s.created_at,
                age_s=round(now - s.created_at, 1) if s.created_at else None,
                state=st,
                active_faults=n_faults,
                scenario=rec.scenario if rec is not None and rec.running else None,
            )
        )
    return out


def hosts(lab_name: str, *, runtime: Runtime | None = None) -> dict[str, str]:
    """The lab's hosts by their ``drill status`` name -> container name."""
    ref = lab.open_lab(lab_name, runtime=runtime)
    out = {}
    for c in ref.rt.containers({naming.LAB: lab_name}):
        comp = c.labels.get(naming.COMPONENT)
        if comp and c.labels.get(naming.KIND) != "task":
            out[comp] = c.name
    return dict(sorted(out.items()))


def container_of(lab_name: str, host: str, *, runtime: Runtime | None = None) -> str:
    """The container of ``host``; UsageError naming the lab's hosts if there is none."""
    known = hosts(lab_name, runtime=runtime)
    if host not in known:
        raise UsageError(
            f"no host {host!r} in lab {lab_name!r}; hosts: {', '.join(known) or 'none'}"
        )
    return known[host]


def run(lab_name: str, host: str, cmd: list[str], *, runtime: Runtime | None = None) -> ExecResult:
    """Run one command in a host (non-interactive, through the runtime) and return its result."""
    if not cmd:
        raise UsageError("no command given")
    rt = runtime or lab.open_runtime()
    return rt.exec(container_of(lab_name, host, runtime=rt), cmd)


def logs(lab_name: str, host: str, tail: int = 100, *, runtime: Runtime | None = None) -> str:
    """The last ``tail`` lines of a host's output."""
    if tail < 1:
        raise UsageError("--tail must be at least 1")
    rt = runtime or lab.open_runtime()
    return rt.logs(container_of(lab_name, host, runtime=rt), tail=tail)


def shell_argv(lab_name: str, host: str) -> tuple[list[str], dict[str, str]]:
    """The ``docker exec -it`` command line (and environment) that opens a shell in a host.

    An interactive TTY is the docker CLI's job: the runtime's exec has no terminal. ``bash`` is
    preferred, ``sh`` where an image has no bash.
    """
    from harness import engine

    info = engine.find()
    if info is None:
        raise EngineError("no Docker engine answers; run `drill engine ensure`")
    docker = shutil.which("docker")
    if docker is None:
        raise UsageError(
            "the docker CLI is not installed; run one command with `drill shell HOST -- CMD`"
        )
    container = container_of(lab_name, host)
    env = {**os.environ, "DOCKER_HOST": info.docker_host}
    argv = [docker, "exec", "-it", container, "sh", "-c", "exec bash 2>/dev/null || exec sh"]
    return argv, env


def exec_shell(lab_name: str, host: str) -> None:
    """Replace this process with an interactive shell in a host (needs a terminal)."""
    if not sys.stdin.isatty():
        raise UsageError("an interactive shell needs a terminal; use `drill shell HOST -- CMD`")
    argv, env = shell_argv(lab_name, host)
    os.execvpe(argv[0], argv, env)
