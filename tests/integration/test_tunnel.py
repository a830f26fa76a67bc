"""The VPN tunnel and its faults on real WireGuard gateways (issue: VPN gateway)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator

import pytest

from harness import faults, lab, tunnel
from harness.components import gateway
from harness.runtime import DockerRuntime

from .conftest import drill_cli, exec_ok, host

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _healed(minimal_lab: lab.LabStatus) -> Iterator[None]:
    """Every test starts and ends with no active fault."""
    yield
    if faults.active(minimal_lab.lab):
        faults.heal(minimal_lab.lab)


def private(st: lab.LabStatus, name: str) -> str:
    inet = ".".join(st.space.split(".")[:2]) + ".100."
    return next(a for a in host(st, name).addresses.values() if a and not a.startswith(inet))


def ends(st: lab.LabStatus) -> dict[str, tunnel.TunnelStatus]:
    return {e.site: e for e in tunnel.status(st.lab)}


def ping(rt: DockerRuntime, container: str, target: str, *args: str) -> tuple[int, set[int], float]:
    """Received count, received sequence numbers and average RTT (ms) of a ping run."""
    _, out = exec_ok(rt, container, "ping", "-n", *args, target)
    seqs = {int(m) for m in re.findall(r"icmp_seq=(\d+)", out)}
    m = re.search(r"rtt [^=]+= [\d.]+/([\d.]+)/", out)
    return len(seqs), seqs, float(m.group(1)) if m else float("nan")


def serve_file(rt: DockerRuntime, st: lab.LabStatus, size: int) -> tuple[str, str]:
    """Serve a random file from the recovery-site storage host; returns (url, marker)."""
    marker = secrets.token_hex(16)
    storage = host(st, "storage").container
    addr = private(st, "storage")
    script = (
        "mkdir -p /tmp/www && cd /tmp/www && "
        f"python3 -c \"import os,sys; sys.stdout.write(('{marker}' * {size // 32 + 1})[:{size}])\""
        " > payload && (nohup python3 -m http.server 8099 --bind "
        f"{addr} >/dev/null 2>&1 &) && sleep 0.5"
    )
    assert exec_ok(rt, storage, "sh", "-c", script)[0]
    return f"http://{addr}:8099/payload", marker


def test_tunnel_status_up_on_both_ends(minimal_lab: lab.LabStatus) -> None:
    e = ends(minimal_lab)
    assert set(e) == {"onprem", "azure"}
    for end in e.values():
        assert end.up and end.handshake_age_s is not None
    res = drill_cli("tunnel", "status", "--name", minimal_lab.lab, "--json")
    assert res.returncode == 0, res.stderr
    assert "PRIVATE" not in res.stdout.upper()  # no key material in any form
    assert "private" not in res.stdout


def test_gateways_have_sized_wireguard_sockets_and_cpu_weight(
    minimal_lab: lab.LabStatus, rt: DockerRuntime
) -> None:
    """wireguard-go's UDP sockets get 7 MiB buffers (the kernel reports twice what is set) and
    the gateways their CPU weight: without them the tunnel drops packets under load."""
    for name in ("onprem-gw", "azure-gw"):
        ctr = host(minimal_lab, name).container
        ok, out = exec_ok(rt, ctr, "ss", "-uamnH", "sport", "=", ":51820")
        assert ok, out
        rcv = [int(b) for b in re.findall(r"rb(\d+)", out)]
        snd = [int(b) for b in re.findall(r"tb(\d+)", out)]
        assert rcv and min(rcv) >= 2 * gateway.SOCKET_BUFFER, out
        assert snd and min(snd) >= 2 * gateway.SOCKET_BUFFER, out
        shares = rt.api.inspect_container(ctr)["HostConfig"]["CpuShares"]
        assert shares == gateway.CPU_SHARES


def test_http_across_the_tunnel_grows_the_counters(
    minimal_lab: lab.LabStatus, rt: DockerRuntime
) -> None:
    size = 300_000
    url, _ = serve_file(rt, minimal_lab, size)
    before = ends(minimal_lab)
    ok, out = exec_ok(
        rt,
        host(minimal_lab, "web1").container,
        "curl",
        "-sf",
        "-m",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        url,
    )
    assert ok and int(out) == size, out
    after = ends(minimal_lab)
    assert after["onprem"].rx_bytes - before["onprem"].rx_bytes >= size
    assert after["azure"].tx_bytes - before["azure"].tx_bytes >= size


@pytest.mark.serial  # a packet capture under load misses packets
def test_only_wireguard_udp_crosses_the_wan(minimal_lab: lab.LabStatus, rt: DockerRuntime) -> None:
    url, marker = serve_file(rt, minimal_lab, 200_000)
    gw = host(minimal_lab, "azure-gw").container
    wan_addr = next(a for a in host(minimal_lab, "azure-gw").addresses.values() if ".255." in a)
    ok, iface = exec_ok(rt, gw, "sh", "-c", f"ip -o -4 addr show to {wan_addr}/32 | cut -d' ' -f2")
    assert ok and iface.strip()
    capture = f"tcpdump --immediate-mode -i {iface.strip()} -U -s 0 -w /tmp/wan.pcap"
    start = f"(nohup {capture} >/dev/null 2>&1 &) ; sleep 1"
    assert exec_ok(rt, gw, "sh", "-c", start)[0]
    ok, _ = exec_ok(
        rt, host(minimal_lab, "web1").container, "curl", "-sf", "-m", "10", "-o", "/dev/null", url
    )
    assert ok
    time.sleep(0.5)
    exec_ok(rt, gw, "sh", "-c", "pkill tcpdump; sleep 0.5")
    _, total = exec_ok(rt, gw, "sh", "-c", "tcpdump -r /tmp/wan.pcap -n 2>/dev/null | wc -l")
    _, other = exec_ok(
        rt,
        gw,
        "sh",
        "-c",
        "tcpdump -r /tmp/wan.pcap -n 'ip and not udp port 51820' 2>/dev/null | wc -l",
    )
    assert int(total) > 100, "the capture saw no tunnel traffic"
    assert int(other) == 0, "something other than WireGuard UDP crossed the wan"
    ok, found = exec_ok(rt, gw, "sh", "-c", f"grep -c {marker} /tmp/wan.pcap || true")
    assert found.strip() == "0", "the HTTP payload crossed the wan in clear"


def test_partition_and_heal(minimal_lab: lab.LabStatus, rt: DockerRuntime) -> None:
    web1 = host(minimal_lab, "web1").container
    curl = (
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-m",
        "2",
        f"http://{private(minimal_lab, 'storage')}:10000/",
    )
    assert exec_ok(rt, web1, *curl)[0]
    rec = faults.inject(minimal_lab.lab, "partition")
    assert not exec_ok(rt, web1, *curl)[0]
    [healed] = faults.heal(minimal_lab.lab)
    assert healed.id == rec.id and healed.ended_at is not None and healed.ended_at >= rec.started_at
    t0 = time.monotonic()
    while not exec_ok(rt, web1, *curl)[0]:
        assert time.monotonic() - t0 < 15, "no traffic 15 s after heal"
    recovered_s = time.monotonic() - t0
    print(f"cross-site traffic back {recovered_s:.2f}s after heal")


@pytest.mark.serial  # timing or global state: not beside other tests
def test_degrade_delay_adds_round_trip_time(minimal_lab: lab.LabStatus, rt: DockerRuntime) -> None:
    web1, target = host(minimal_lab, "web1").container, private(minimal_lab, "storage")
    _, _, base = ping(rt, web1, target, "-c", "5", "-i", "0.2")
    faults.inject(minimal_lab.lab, "degrade", delay_ms=80)
    _, _, slow = ping(rt, web1, target, "-c", "5", "-i", "0.2")
    faults.heal(minimal_lab.lab)
    _, _, after = ping(rt, web1, target, "-c", "5", "-i", "0.2")
    assert slow - base >= 150, (base, slow)
    assert after - base < 20, (base, after)


@pytest.mark.serial  # timing or global state: not beside other tests
def test_degrade_loss_is_seeded(minimal_lab: lab.LabStatus, rt: DockerRuntime) -> None:
    web1, target = host(minimal_lab, "web1").container, private(minimal_lab, "storage")
    # The same seed gives the same drops for the same traffic: the replicator's own traffic
    # through the tunnel would interleave differently each run, so it pauses meanwhile.
    rep = host(minimal_lab, "replicator").container
    rt.stop(rep)
    runs = []
    try:
        for seed in (1, 1, 2):
            faults.inject(minimal_lab.lab, "degrade", loss_pct=20, seed=seed)
            got, seqs, _ = ping(rt, web1, target, "-c", "200", "-i", "0.01", "-W", "1")
            faults.heal(minimal_lab.lab)
            runs.append(seqs)
            assert 200 * 0.7 <= got <= 200 * 0.9, f"seed {seed}: {200 - got} of 200 pings lost"
    finally:
        rt.start(rep)
    assert runs[0] == runs[1], "the same seed gave different drops"
    assert runs[0] != runs[2], "different seeds gave the same drops"


@pytest.mark.serial  # timing or global state: not beside other tests
def test_degrade_rate_caps_throughput(minimal_lab: lab.LabStatus, rt: DockerRuntime) -> None:
    onprem, azure = (
        host(minimal_lab, "onprem-gw").container,
        host(minimal_lab, "azure-gw").container,
    )
    server = private(minimal_lab, "azure-gw")
    assert exec_ok(
        rt, azure, "sh", "-c", f"(iperf3 -s -1 -B {server} >/dev/null 2>&1 &); sleep 0.5"
    )[0]
    faults.inject(minimal_lab.lab, "degrade", rate_mbit=10)
    ok, out = exec_ok(rt, onprem, "iperf3", "-c", server, "-t", "3", "-f", "m")
    faults.heal(minimal_lab.lab)
    assert ok, out
    mbit = float(re.findall(r"([\d.]+) Mbits/sec.*receiver", out)[-1])
    assert 5 <= mbit <= 12, f"{mbit} Mbit/s through a 10 Mbit/s limit"


@pytest.mark.serial  # timing or global state: not beside other tests
def test_gateway_down_is_seen_by_the_other_end(
    minimal_lab: lab.LabStatus, rt: DockerRuntime
) -> None:
    bound = 15.0  # minimal.yaml's tunnel.handshake_bound_s
    faults.inject(minimal_lab.lab, "gateway-down", site="azure")
    t0 = time.monotonic()
    while ends(minimal_lab)["onprem"].up:
        assert time.monotonic() - t0 < bound + 5, "still up long after the bound"
        time.sleep(0.5)
    noticed = time.monotonic() - t0
    assert not ends(minimal_lab)["azure"].up
    faults.heal(minimal_lab.lab)
    t1 = time.monotonic()
    while not all(e.up for e in ends(minimal_lab).values()):
        assert time.monotonic() - t1 < 20, "tunnel not back 20 s after heal"
        time.sleep(0.5)
    print(f"gateway-down noticed after {noticed:.1f}s (bound {bound}s)")
    ok, _ = exec_ok(
        rt,
        host(minimal_lab, "web1").container,
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-m",
        "3",
        f"http://{private(minimal_lab, 'storage')}:10000/",
    )
    assert ok


@pytest.mark.serial  # timing or global state: not beside other tests
def test_mtu_blackhole(minimal_lab: lab.LabStatus, rt: DockerRuntime) -> None:
    web1, target = host(minimal_lab, "web1").container, private(minimal_lab, "storage")
    big = ("-c", "2", "-W", "1", "-s", "1372")  # 1,400-byte packets
    small = ("-c", "2", "-W", "1", "-s", "172")  # 200-byte packets
    assert ping(rt, web1, target, *big)[0] == 2
    faults.inject(minimal_lab.lab, "mtu-blackhole")
    assert ping(rt, web1, target, *big)[0] == 0
    assert ping(rt, web1, target, *small)[0] == 2
    faults.heal(minimal_lab.lab)
    assert ping(rt, web1, target, *big)[0] == 2


def test_fault_list_and_history(minimal_lab: lab.LabStatus) -> None:
    faults.inject(minimal_lab.lab, "partition")
    res = drill_cli("fault", "list", "--name", minimal_lab.lab, "--json")
    assert res.returncode == 0
    assert "partition" in res.stdout and '"active": true' in res.stdout
    res = drill_cli("fault", "heal", "--name", minimal_lab.lab)
    assert res.returncode == 0, res.stderr
    assert faults.active(minimal_lab.lab) == []
    assert all(r.ended_at is not None for r in faults.history(minimal_lab.lab))


@pytest.mark.parametrize(
    "args, message",
    [
        (["fault", "bogus"], "No such command"),
        (["fault", "degrade", "--loss", "150"], "between 0 and 100"),
        (["fault", "degrade", "--rate", "0"], "rate_mbit"),
        (["fault", "degrade", "--delay", "-5"], "between 0"),
        (["fault", "degrade"], "at least one of"),
        (["fault", "gateway-down", "mars"], "needs a site"),
        (["fault", "heal"], "no fault is active"),
        (["fault", "heal", "f99-partition"], "no active fault"),
    ],
)
def test_bad_fault_requests_change_nothing(
    minimal_lab: lab.LabStatus, args: list[str], message: str
) -> None:
    before = faults.history(minimal_lab.lab)
    res = drill_cli(*args, "--name", minimal_lab.lab)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr
    assert faults.history(minimal_lab.lab) == before


def test_fault_on_a_lab_that_is_not_up() -> None:
    res = drill_cli("fault", "partition", "--name", "nosuchlab")
    assert res.returncode == 2
    assert "is not up" in res.stderr
