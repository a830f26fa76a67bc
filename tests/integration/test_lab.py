"""The lab lifecycle on the real engine: up, reachability, isolation, status, down, leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import docker
import pytest
import requests

from harness import disks, lab
from harness.components import replicator
from harness.runtime import DockerRuntime

from .conftest import (
    drill_cli,
    exec_ok,
    forwarding_rules,
    host,
    labelled_objects,
    unique_name,
    wait_for,
)

pytestmark = pytest.mark.integration


def addr_on(st: lab.LabStatus, name: str, prefix: str) -> str:
    return next(a for a in host(st, name).addresses.values() if a.startswith(prefix))


def private_addr(st: lab.LabStatus, name: str) -> str:
    h = host(st, name)
    space = st.space.split(".")[:2]
    inet = ".".join(space) + ".100."
    return next(a for a in h.addresses.values() if a and not a.startswith(inet))


def test_every_host_is_healthy(minimal_lab: lab.LabStatus) -> None:
    assert minimal_lab.healthy, minimal_lab.to_json()
    roles = {h.name: h.role for h in minimal_lab.hosts}
    assert roles == {
        "onprem-gw": "gateway",
        "azure-gw": "gateway",
        "web1": "app",
        "storage": "storage",
        "dns": "dns",
        "users": "client",
        "replicator": "replicator",
    }


def test_host_answers_from_same_site(minimal_lab: lab.LabStatus, rt: DockerRuntime) -> None:
    web1 = private_addr(minimal_lab, "web1")
    ok, out = exec_ok(
        rt,
        host(minimal_lab, "onprem-gw").container,
        "curl",
        "-sf",
        "-m",
        "3",
        f"http://{web1}/health",
    )
    assert ok, out
    assert json.loads(out)["host"] == "web1"


def test_harness_reaches_hosts_directly(minimal_lab: lab.LabStatus) -> None:
    web1 = private_addr(minimal_lab, "web1")
    r = requests.get(f"http://{web1}/health", timeout=3)
    assert r.status_code == 200 and r.json()["site"] == "onprem"


def test_sites_reach_each_other_only_through_the_tunnel(
    minimal_lab: lab.LabStatus, rt: DockerRuntime
) -> None:
    web1 = host(minimal_lab, "web1").container
    storage = private_addr(minimal_lab, "storage")
    url = f"http://{storage}:10000/"
    curl = ("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", url)
    ok, out = exec_ok(rt, web1, *curl)
    assert ok and out == "400", out  # Azurite answers an anonymous GET with 400

    # Take the tunnel interface down: no other path exists.
    gw = host(minimal_lab, "onprem-gw").container
    assert exec_ok(rt, gw, "ip", "link", "set", "wg0", "down")[0]
    try:
        ok, out = exec_ok(rt, web1, *curl)
        assert not ok, f"reached the other site without the tunnel: {out}"
    finally:
        exec_ok(rt, gw, "ip", "link", "set", "wg0", "up")
        azure_subnet = ".".join(storage.split(".")[:3]) + ".0/24"
        exec_ok(rt, gw, "ip", "route", "replace", azure_subnet, "dev", "wg0")

    # Without the route via the gateway, the engine's bridge drops the traffic too.
    ok, routes = exec_ok(rt, web1, "ip", "route")
    via = next(line for line in routes.splitlines() if line.startswith(azure_subnet))
    assert exec_ok(rt, web1, "ip", "route", "del", azure_subnet)[0]
    try:
        ok, out = exec_ok(rt, web1, *curl)
        assert not ok, f"reached the other site around the gateway: {out}"
    finally:
        exec_ok(rt, web1, "ip", "route", "replace", *via.split())
    ok, out = exec_ok(rt, web1, *curl)
    assert ok and out == "400", out


def test_internet_cannot_reach_private_addresses(
    minimal_lab: lab.LabStatus, rt: DockerRuntime
) -> None:
    users = host(minimal_lab, "users").container
    web1_private = private_addr(minimal_lab, "web1")
    web1_public = next(a for a in host(minimal_lab, "web1").addresses.values() if a != web1_private)
    assert exec_ok(rt, users, "curl", "-sf", "-m", "2", f"http://{web1_public}/health")[0]
    assert not exec_ok(rt, users, "curl", "-sf", "-m", "2", f"http://{web1_private}/health")[0]


def test_status_json_from_cli(minimal_lab: lab.LabStatus) -> None:
    res = drill_cli("status", "--name", minimal_lab.lab, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["healthy"] is True
    assert data["topology"] == "minimal"
    assert {h["name"] for h in data["hosts"]} >= {"web1", "storage", "dns", "users"}


def test_up_same_name_twice_is_refused(
    minimal_lab: lab.LabStatus, client: docker.DockerClient
) -> None:
    before = sorted(labelled_objects(client, minimal_lab.lab))
    res = drill_cli("up", "minimal", "--name", minimal_lab.lab)
    assert res.returncode == 2
    assert "already exists" in res.stderr
    assert sorted(labelled_objects(client, minimal_lab.lab)) == before


def test_down_leaves_nothing(client: docker.DockerClient, rt: DockerRuntime) -> None:
    name = unique_name("down")
    st = lab.up("minimal", name)
    assert st.healthy
    assert labelled_objects(client, name)
    assert forwarding_rules(rt, name)
    res = drill_cli("down", "--name", name)
    assert res.returncode == 0, res.stderr
    assert labelled_objects(client, name) == []
    assert forwarding_rules(rt, name) == []


def _blocked_writers(container_pid: int) -> list[int]:
    """Processes of a container (by its init's pid namespace) waiting uninterruptibly."""
    ns = os.readlink(f"/proc/{container_pid}/ns/pid")
    out = []
    for pid in (int(d) for d in os.listdir("/proc") if d.isdigit()):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != ns:
                continue
            with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "D":
                    out.append(pid)
        except OSError:
            continue
    return out


@pytest.mark.parametrize("freezer", ["replicator", "gone"])
def test_down_after_the_replicator_died_holding_a_disk_frozen(
    client: docker.DockerClient, rt: DockerRuntime, freezer: str
) -> None:
    """``gone``: whoever froze it no longer exists (say, a killed reprotect)."""
    name = unique_name("frz")
    lab.up("minimal", name)
    ref = lab.open_lab(name)
    web1 = ref.plan.hosts["web1"]
    disk = web1.host.disks[0]
    mnt = disks.mount_path(name, "web1", disk.name)
    try:
        # What SIGKILL between FIFREEZE and FITHAW leaves: a frozen disk, a writer stuck on it.
        if freezer == "replicator":
            rt.api.kill(replicator.container(ref.plan))
        else:
            rt.remove_container(replicator.container(ref.plan))
        subprocess.run(["fsfreeze", "-f", str(mnt)], check=True, timeout=10)
        ex = rt.api.exec_create(web1.container, ["sh", "-c", f"echo x > {disk.mount}/late"])
        rt.api.exec_start(ex["Id"], detach=True)
        pid = rt.api.inspect_container(web1.container)["State"]["Pid"]
        wait_for("a write blocked on the frozen disk", lambda: _blocked_writers(pid), timeout=10)
        res = drill_cli("down", "--name", name)
        assert res.returncode == 0, res.stdout + res.stderr
        assert labelled_objects(client, name) == []
        assert not os.path.ismount(mnt)
    finally:
        subprocess.run(["fsfreeze", "-u", str(mnt)], check=False, timeout=10)
        lab.down(name)


def test_two_labs_side_by_side(client: docker.DockerClient, rt: DockerRuntime) -> None:
    a, b = unique_name("two"), unique_name("two")
    try:
        sa = lab.up("minimal", a)
        sb = lab.up("minimal", b)
        assert sa.healthy and sb.healthy
        assert sa.space != sb.space
        for st in (sa, sb):
            storage = private_addr(st, "storage")
            ok, out = exec_ok(
                rt,
                host(st, "web1").container,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "3",
                f"http://{storage}:10000/",
            )
            assert ok and out == "400", out
        # No cross-talk: a's on-prem host cannot reach b's recovery site.
        other = private_addr(sb, "storage")
        ok, _ = exec_ok(
            rt, host(sa, "web1").container, "curl", "-s", "-m", "2", f"http://{other}:10000/"
        )
        assert not ok
    finally:
        lab.down(a)
        lab.down(b)
    assert labelled_objects(client, a) == labelled_objects(client, b) == []


def test_bad_topology_creates_nothing(tmp_path: object, client: docker.DockerClient) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.yaml"
    bad.write_text("name: bad\nsites: {}\naddressing: {space: 10.64.0.0/16}\n")
    name = unique_name("bad")
    res = drill_cli("up", str(bad), "--name", name)
    assert res.returncode == 2
    assert "bad.yaml" in res.stderr and "addressing.wan" in res.stderr
    assert labelled_objects(client, name) == []


def test_sigterm_during_up_tears_down(client: docker.DockerClient) -> None:
    name = unique_name("term")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "up", "minimal", "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_objects(client, name)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert labelled_objects(client, name) == []


@pytest.mark.serial  # timing or global state: not beside other tests
def test_sigkill_during_up_then_down_all(client: docker.DockerClient, rt: DockerRuntime) -> None:
    name = unique_name("kill")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "up", "minimal", "--name", name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_objects(client, name)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert labelled_objects(client, name), "the kill came too late to leave anything behind"
    res = drill_cli("down", "--all")
    assert res.returncode == 0, res.stderr
    assert labelled_objects(client) == []
    assert forwarding_rules(rt, name) == []
    # A mount the killed `up` had started must not finish after the teardown.
    time.sleep(0.5)
    assert [mp for _, mp in disks._mounts() if f"/{name}/" in mp] == []


def _wait_for_objects(client: docker.DockerClient, name: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        containers = client.api.containers(all=True, filters={"label": f"drill.lab={name}"})
        if containers:
            return
        time.sleep(0.05)
    pytest.fail(f"lab {name} created nothing within {timeout_s}s")
