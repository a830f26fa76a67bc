"""Integration fixtures: the real engine, unique lab names, and a leftover check."""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest

from harness import engine, lab, naming
from harness.runtime import DockerRuntime


@pytest.fixture(scope="session")
def client() -> Iterator[docker.DockerClient]:
    c = engine.connect()
    yield c
    c.close()


@pytest.fixture(scope="session")
def rt(client: docker.DockerClient) -> DockerRuntime:
    return DockerRuntime(client)


def unique_name(prefix: str = "it") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def labelled_objects(client: docker.DockerClient, lab_name: str | None = None) -> list[str]:
    """Every container, network and volume carrying a drill lab label (of one lab, or any)."""
    sel = f"{naming.LAB}={lab_name}" if lab_name else naming.LAB
    f = {"label": sel}
    api = client.api  # the low-level calls list without inspecting, so they do not race removal
    return (
        [c["Names"][0].lstrip("/") for c in api.containers(all=True, filters=f)]
        + [n["Name"] for n in api.networks(filters=f)]
        + [v["Name"] for v in (api.volumes(filters=f).get("Volumes") or [])]
    )


def forwarding_rules(rt: DockerRuntime, lab_name: str) -> list[str]:
    """The host's DOCKER-USER rules carrying the lab's comment (read from a host-net task)."""
    from harness.runtime import ContainerSpec

    spec = ContainerSpec(
        name=f"drill-check-{secrets.token_hex(3)}",
        image=naming.image_ref("base"),
        hostname="check",
        networks=(),
        labels={naming.KIND: "task"},
        command=("sh", "-c", "iptables-nft -S DOCKER-USER 2>/dev/null || iptables -S DOCKER-USER"),
        cap_add=("NET_ADMIN", "NET_RAW"),
        network_mode="host",
    )
    out = rt.run_task(spec).output
    return [
        line
        for line in out.splitlines()
        if f'drill-lab={lab_name}"' in line or f"drill-lab={lab_name} " in line
    ]


def drill_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def exec_ok(rt: DockerRuntime, container: str, *cmd: str) -> tuple[bool, str]:
    res = rt.exec(container, list(cmd))
    return res.ok, res.output


@pytest.fixture(scope="module")
def minimal_lab() -> Iterator[lab.LabStatus]:
    """A running `minimal` lab for the module, taken down afterwards."""
    name = unique_name("min")
    st = lab.up("minimal", name)
    try:
        yield st
    finally:
        lab.down(name)


def host(st: lab.LabStatus, name: str) -> Any:
    return next(h for h in st.hosts if h.name == name)


T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 90) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


ARTIFACTS = Path(__file__).resolve().parents[2] / "reports" / "test-artifacts"
"""Screenshots and other files tests leave for people to look at."""
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)


def chromium(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``url`` with a throw-away profile (``--dump-dom``, ``--screenshot``)."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
