"""Two learners' sandboxes on one engine: isolated, listed, and reachable by shell and logs."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator

import docker
import pytest

from harness import faults, lab, sandbox, trafficmanager

from .conftest import drill_cli, labelled_objects, unique_name

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pair(client: docker.DockerClient) -> Iterator[tuple[lab.LabStatus, lab.LabStatus]]:
    """Sandboxes alice-* and bob-* (unique names: others run tests on this engine too)."""
    a, b = unique_name("alice"), unique_name("bob")
    try:
        yield lab.up("minimal", a), lab.up("minimal", b)
    finally:
        lab.down(a)
        lab.down(b)
    assert labelled_objects(client, a) == labelled_objects(client, b) == []


def _subnets(client: docker.DockerClient, name: str) -> set[ipaddress.IPv4Network]:
    nets = client.api.networks(filters={"label": f"drill.lab={name}"})
    return {
        ipaddress.ip_network(c["Subnet"])
        for n in nets
        for c in (n.get("IPAM") or {}).get("Config") or []
    }


def test_names_and_subnets_are_distinct(
    pair: tuple[lab.LabStatus, lab.LabStatus], client: docker.DockerClient
) -> None:
    a, b = pair
    assert a.healthy and b.healthy
    assert a.space != b.space
    sa, sb = _subnets(client, a.lab), _subnets(client, b.lab)
    assert sa and sb
    assert not any(x.overlaps(y) for x in sa for y in sb)
    ca, cb = {h.container for h in a.hosts}, {h.container for h in b.hosts}
    assert all(c.startswith(f"drill-{a.lab}-") for c in ca)
    assert all(c.startswith(f"drill-{b.lab}-") for c in cb)


def test_each_dns_answers_its_own_addresses(pair: tuple[lab.LabStatus, lab.LabStatus]) -> None:
    for st in pair:
        dns = trafficmanager.status(st.lab)
        assert dns.answer is not None and dns.answer.addresses, dns.answer_error
        space = ipaddress.ip_network(st.space)
        assert all(ipaddress.ip_address(x) in space for x in dns.answer.addresses)


def test_a_fault_in_one_does_not_touch_the_other(
    pair: tuple[lab.LabStatus, lab.LabStatus],
) -> None:
    a, b = pair
    rec = faults.inject(a.lab, "host-outage", host="web1")
    try:
        sa, sb = lab.status(a.lab), lab.status(b.lab)
        assert next(h for h in sa.hosts if h.name == "web1").state != "running"
        assert sb.healthy, sb.to_json()
        assert faults.active(b.lab) == []
        res = drill_cli("ls", "--json")
        assert res.returncode == 0, res.stderr
        rows = {r["lab"]: r for r in json.loads(res.stdout)}
        assert rows[a.lab]["state"] == "degraded" and rows[a.lab]["active_faults"] == 1
        assert rows[b.lab]["state"] == "healthy" and rows[b.lab]["active_faults"] == 0
        assert rows[b.lab]["age_s"] >= 0 and rows[b.lab]["scenario"] is None
        text = drill_cli("ls")
        assert any(a.lab in line and "degraded" in line for line in text.stdout.splitlines())
    finally:
        faults.heal(a.lab, rec.id)
    assert lab.status(a.lab).healthy


def test_a_second_sandbox_with_one_name_is_refused(
    pair: tuple[lab.LabStatus, lab.LabStatus],
) -> None:
    res = drill_cli("up", "minimal", "--name", pair[0].lab)
    assert res.returncode == 2
    assert "already exists" in res.stderr


def test_shell_runs_a_command_in_a_host(pair: tuple[lab.LabStatus, lab.LabStatus]) -> None:
    a, b = pair
    res = drill_cli("shell", "web1", "--name", a.lab, "--", "cat", "/etc/hostname")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "web1"
    res = drill_cli("shell", "onprem-gw", "--name", b.lab, "--", "sh", "-c", "exit 3")
    assert res.returncode == 3
    res = drill_cli("shell", "nosuch", "--name", a.lab, "--", "true")
    assert res.returncode == 2 and "web1" in res.stderr  # the error lists the hosts


def test_hosts_are_named_as_in_status(pair: tuple[lab.LabStatus, lab.LabStatus]) -> None:
    a = pair[0]
    assert set(sandbox.hosts(a.lab)) == {h.name for h in a.hosts}


def test_logs_of_a_host(pair: tuple[lab.LabStatus, lab.LabStatus]) -> None:
    res = drill_cli("logs", "storage", "--name", pair[1].lab, "--tail", "5")
    assert res.returncode == 0, res.stderr
    assert 0 < len(res.stdout.splitlines()) <= 5
    assert drill_cli("logs", "storage", "--name", unique_name("none")).returncode == 2


def test_interactive_shell_command_reaches_the_engine(
    pair: tuple[lab.LabStatus, lab.LabStatus],
) -> None:
    """The `docker exec -it` line `drill shell` execs: the right container, the right engine.

    Run here without -it and with a command (a test has no terminal).
    """
    argv, env = sandbox.shell_argv(pair[0].lab, "dns")
    assert argv[1:4] == ["exec", "-it", f"drill-{pair[0].lab}-dns"]
    res = subprocess.run(
        [argv[0], "exec", argv[3], "cat", "/etc/hostname"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0 and res.stdout.strip() == "dns", res.stderr
    no_tty = drill_cli("shell", "dns", "--name", pair[0].lab)  # no terminal in a subprocess
    assert no_tty.returncode == 2 and "needs a terminal" in no_tty.stderr
