"""The pytest plugin on the real engine: the example suite run under xdist with two workers.

While it runs, the engine's containers are polled by their ``drill.lab`` label: each worker must
have a lab of its own (``pt-gw0-*`` and ``pt-gw1-*`` up at the same time), and once the run is
over nothing of any of them may remain: containers, networks, volumes, host forwarding rules,
state folders.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from harness import lab, naming
from harness.runtime import DockerRuntime

from ..conftest import REPO
from .conftest import forwarding_rules, labelled_objects

pytestmark = pytest.mark.integration

PLUGIN_LAB = re.compile(r"pt-gw\d+-[0-9a-f]{6}")
RUN_TIMEOUT_S = 420.0


def labs_of_run(client: docker.DockerClient, state_dir: Path) -> set[str]:
    """Plugin labs with containers on the engine now that belong to this run: their state
    folder is in the run's own state root (another run's labs may share the engine)."""
    found = client.api.containers(all=True, filters={"label": naming.LAB})
    names = {c["Labels"].get(naming.LAB, "") for c in found}
    return {
        n
        for n in names
        if PLUGIN_LAB.fullmatch(n) and (state_dir / "labs" / n / "lab.json").exists()
    }


def test_example_suite_under_xdist_gives_each_worker_its_own_lab_and_leaves_nothing(
    client: docker.DockerClient,
    rt: DockerRuntime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["DRILL_STATE_DIR"] = str(state_dir)
    log = tmp_path / "pytest.log"
    cmd = [sys.executable, "-m", "pytest", "examples", "-p", "xdist", "-n", "2", "-q"]
    cmd += ["-p", "no:cacheprovider"]
    snapshots: list[set[str]] = []
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline:
                snapshots.append(labs_of_run(client, state_dir))
                time.sleep(0.3)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # the run we started: its labs come down
                proc.wait(timeout=120)
    seen = set().union(*snapshots)
    try:
        text = log.read_text()
        assert proc.returncode == 0, text[-3000:]
        assert re.search(r"\b3 passed\b", text), text[-3000:]
        together = [
            s
            for s in snapshots
            if any(n.startswith("pt-gw0-") for n in s) and any(n.startswith("pt-gw1-") for n in s)
        ]
        assert together, f"never saw a gw0 and a gw1 lab up at once; labs seen: {sorted(seen)}"
        assert len(seen) >= 2
        for name in seen:
            assert labelled_objects(client, name) == [], f"lab {name} left objects behind"
            assert forwarding_rules(rt, name) == [], f"lab {name} left forwarding rules"
            assert not (state_dir / "labs" / name).exists(), f"lab {name} left its state"
    finally:
        # Whatever the outcome, nothing of this run stays on the shared engine.
        monkeypatch.setenv("DRILL_STATE_DIR", str(state_dir))
        for name in seen:
            lab.down(name)
