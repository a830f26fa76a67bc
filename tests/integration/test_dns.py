"""Traffic Manager on CoreDNS: real probes, real DNS answers queried from a client container."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import lab, trafficmanager
from harness.runtime import DockerRuntime

from ..conftest import TOPOLOGIES
from .conftest import drill_cli, exec_ok, host, unique_name

pytestmark = pytest.mark.integration

PROFILE = "contoso.trafficmanager.test"
PROBE_PORT = 8099

# A scripted health endpoint: answers with the status code in /tmp/status (default 200) and
# logs each request's headers to /tmp/headers.log, so tests control what the prober sees.
SCRIPTED_SERVER = textwrap.dedent(
    f"""
    import http.server, json, os
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = int(open('/tmp/status').read()) if os.path.exists('/tmp/status') else 200
            with open('/tmp/headers.log', 'a') as fh:
                fh.write(json.dumps(dict(self.headers)) + '\\n')
            self.send_response(code)
            if code in (301, 302):
                self.send_header('Location', '/elsewhere')
            self.end_headers()
        def log_message(self, *a):
            pass
    http.server.ThreadingHTTPServer(('0.0.0.0', {PROBE_PORT}), H).serve_forever()
    """
)


def dns_topology(
    tmp: Path,
    monitor: dict[str, Any],
    routing: str = "priority",
    endpoints: dict[str, Any] | None = None,
    **tm: Any,
) -> Path:
    """minimal.yaml with a running web host in each site behind the profile."""
    d = yaml.safe_load((TOPOLOGIES / "minimal.yaml").read_text())
    d["name"] = "dnstest"
    d.pop("protection")
    d.pop("recovery_plans")
    del d["sites"]["onprem"]["hosts"]["web1"]["recovery"]
    d["sites"]["azure"]["hosts"]["webdr"] = {
        "role": "web",
        "subnet": "frontend",
        "address": "10.64.2.11",
        "public_address": "10.64.100.11",
    }
    d["traffic_manager"].update(
        routing=routing,
        monitor={
            "protocol": "HTTP",
            "port": 80,
            "path": "/health",
            "interval_s": 1,
            "timeout_s": 0.5,
            "tolerated_failures": 1,
            **monitor,
        },
        endpoints=endpoints
        or {
            "onprem": {"target": "web1", "site": "onprem", "priority": 1},
            "azure": {"target": "webdr", "site": "azure", "priority": 2},
        },
        **tm,
    )
    f = tmp / f"dns-{unique_name()}.yaml"
    f.write_text(yaml.safe_dump(d))
    return f


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Any]:
    names: list[str] = []

    def make(**kw: Any) -> lab.LabStatus:
        name = unique_name("dns")
        names.append(name)
        return lab.up(dns_topology(tmp_path, **kw), name)

    yield make
    for n in names:
        lab.down(n)


def public(st: lab.LabStatus, name: str) -> str:
    inet = ".".join(st.space.split(".")[:2]) + ".100."
    return next(a for a in host(st, name).addresses.values() if a.startswith(inet))


def client_query(
    rt: DockerRuntime, st: lab.LabStatus, name: str, count: int = 1
) -> list[dict[str, Any]]:
    """Query the lab's DNS server from the users container with dnspython, ``count`` times."""
    code = textwrap.dedent(
        f"""
        import json, dns.message, dns.query, dns.rdatatype, dns.rcode
        out = []
        for _ in range({count}):
            q = dns.message.make_query('{name}', 'A')
            r = dns.query.udp(q, '{public(st, "dns")}', timeout=2)
            a = [x.address for s in r.answer if s.rdtype == dns.rdatatype.A for x in s]
            ttl = [s.ttl for s in r.answer if s.rdtype == dns.rdatatype.A]
            cname = [str(s[0].target) for s in r.answer if s.rdtype == dns.rdatatype.CNAME]
            rcode = dns.rcode.to_text(r.rcode())
            out.append({{'rcode': rcode, 'a': a, 'ttl': ttl, 'cname': cname}})
        print(json.dumps(out))
        """
    )
    ok, out = exec_ok(rt, host(st, "users").container, "python3", "-c", code)
    assert ok, out
    return list(json.loads(out))


def wait_answer(
    rt: DockerRuntime, st: lab.LabStatus, want: set[str] | str, timeout_s: float
) -> float:
    """Poll from the client until the profile answers ``want`` (addresses or an rcode)."""
    code = textwrap.dedent(
        f"""
        import time, dns.message, dns.query, dns.rdatatype, dns.rcode
        want = {want!r}
        end = time.time() + {timeout_s}
        while time.time() < end:
            q = dns.message.make_query('{PROFILE}', 'A')
            r = dns.query.udp(q, '{public(st, "dns")}', timeout=1)
            got = {{x.address for s in r.answer if s.rdtype == dns.rdatatype.A for x in s}}
            if got == want or dns.rcode.to_text(r.rcode()) == want:
                print(time.time()); break
            time.sleep(0.02)
        else:
            print('timeout', got, dns.rcode.to_text(r.rcode()))
        """
    )
    ok, out = exec_ok(rt, host(st, "users").container, "python3", "-c", code)
    assert ok and not out.startswith("timeout"), f"answer never became {want}: {out}"
    return float(out)


def wait_status(st: lab.LabStatus, endpoint: str, status: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = trafficmanager.read_status(st.lab).get("endpoints", {}).get(endpoint, {})
        if s.get("status") == status:
            return
        time.sleep(0.1)
    pytest.fail(f"endpoint {endpoint} never became {status}: {trafficmanager.read_status(st.lab)}")


def scripted(rt: DockerRuntime, st: lab.LabStatus, *hosts: str) -> None:
    for h in hosts:
        c = host(st, h).container
        write = f"open('/tmp/probe_server.py', 'w').write({SCRIPTED_SERVER!r})"
        assert exec_ok(rt, c, "python3", "-c", write)[0]
        start = "(nohup python3 /tmp/probe_server.py >/tmp/probe_server.log 2>&1 &); sleep 0.3"
        ok, out = exec_ok(rt, c, "sh", "-c", start)
        assert ok, out


def set_code(rt: DockerRuntime, st: lab.LabStatus, h: str, code: int) -> None:
    assert exec_ok(rt, host(st, h).container, "sh", "-c", f"echo {code} > /tmp/status")[0]


# --- priority failover ---------------------------------------------------------------------


@pytest.mark.serial  # timing or global state: not beside other tests
def test_priority_failover_and_back(make_lab: Any, rt: DockerRuntime) -> None:
    st = make_lab(monitor={})
    onprem, azure = public(st, "web1"), public(st, "webdr")
    wait_status(st, "onprem", "Online")
    wait_status(st, "azure", "Online")
    [ans] = client_query(rt, st, "app.contoso.test")
    assert ans["cname"] == [f"{PROFILE}."] and ans["a"] == [onprem]
    assert ans["ttl"] == [2]  # the profile's TTL

    tm = trafficmanager.timing(trafficmanager.profile_of(lab.open_lab(st.lab).plan))
    rt.stop(host(st, "web1").container, timeout_s=1)
    stopped_at = time.time()
    moved_at = wait_answer(rt, st, {azure}, timeout_s=tm.emulator_answer_s + 5)
    moved_s = moved_at - stopped_at
    print(f"failover answer after {moved_s:.2f}s (bound {tm.emulator_answer_s:.2f}s)")
    assert moved_s <= tm.emulator_answer_s

    rt.start(host(st, "web1").container)
    back_at = wait_answer(rt, st, {onprem}, timeout_s=15)
    # One successful probe brings it back: no more than a probe interval after nginx answers.
    hist = trafficmanager.read_status(st.lab)["endpoints"]["onprem"]["history"]
    first_ok = next(h["at"] for h in hist if h["ok"] and h["at"] > stopped_at)
    assert back_at - first_ok <= trafficmanager.UPDATE_BOUND_S + 0.5
    assert [h["ok"] for h in hist if h["at"] > stopped_at][-1] is True


def test_all_degraded_returns_all_and_disabled_gives_nxdomain(
    make_lab: Any, rt: DockerRuntime
) -> None:
    st = make_lab(monitor={})
    wait_status(st, "onprem", "Online")
    for h in ("web1", "webdr"):
        rt.stop(host(st, h).container, timeout_s=1)
    wait_status(st, "onprem", "Degraded")
    wait_status(st, "azure", "Degraded")
    # Every endpoint degraded: all are served as if Online, so priority picks on-prem again.
    assert trafficmanager.status(st.lab).serving == ["azure", "onprem"]
    [ans] = client_query(rt, st, PROFILE)
    assert ans["a"] == [public(st, "web1")]

    trafficmanager.set_endpoint(st.lab, "onprem", enabled=False)
    wait_status(st, "onprem", "Disabled")
    [ans] = client_query(rt, st, PROFILE)
    assert ans["a"] == [public(st, "webdr")]  # the only enabled (degraded) endpoint

    res = drill_cli("dns", "endpoint", "disable", "azure", "--name", st.lab)
    assert res.returncode == 0, res.stderr
    wait_answer(rt, st, "NXDOMAIN", timeout_s=5)  # all endpoints disabled

    trafficmanager.set_endpoint(st.lab, "azure", enabled=True)
    wait_answer(rt, st, {public(st, "webdr")}, timeout_s=5)
    res = drill_cli("dns", "profile", "disable", "--name", st.lab)
    assert res.returncode == 0, res.stderr
    wait_answer(rt, st, "NXDOMAIN", timeout_s=5)  # profile disabled
    [ans] = client_query(rt, st, "app.contoso.test")
    assert ans["rcode"] == "NXDOMAIN"

    status = trafficmanager.status(st.lab)
    assert status.profile_status == "Disabled"
    assert {e.status for e in status.endpoints} == {"Disabled"}


def test_stopped_endpoint_is_not_answered(make_lab: Any, rt: DockerRuntime) -> None:
    st = make_lab(monitor={})
    wait_status(st, "onprem", "Online")
    res = drill_cli("dns", "endpoint", "stop", "onprem", "--name", st.lab)
    assert res.returncode == 0, res.stderr
    wait_status(st, "onprem", "Stopped")
    wait_answer(rt, st, {public(st, "webdr")}, timeout_s=10)


# --- what counts as a failure --------------------------------------------------------------


def test_301_fails_unless_expected_and_headers_reach_the_endpoint(
    make_lab: Any, rt: DockerRuntime
) -> None:
    st = make_lab(monitor={"port": PROBE_PORT, "path": "/probe", "headers": {"X-Drill": "probe-1"}})
    scripted(rt, st, "web1", "webdr")
    wait_status(st, "onprem", "Online")
    set_code(rt, st, "web1", 301)
    wait_status(st, "onprem", "Degraded")
    [ans] = client_query(rt, st, PROFILE)
    assert ans["a"] == [public(st, "webdr")]
    _, log = exec_ok(rt, host(st, "web1").container, "tail", "-n", "1", "/tmp/headers.log")
    headers = json.loads(log)
    assert headers["X-Drill"] == "probe-1"
    assert headers["Host"] == "web1.onprem.drill.test"  # defaults to the target's name

    st2 = make_lab(
        monitor={"port": PROBE_PORT, "path": "/probe", "expected_status": ["200-299", "301"]}
    )
    scripted(rt, st2, "web1", "webdr")
    set_code(rt, st2, "web1", 301)
    time.sleep(3)  # several probe intervals
    wait_status(st2, "onprem", "Online")
    detail = trafficmanager.read_status(st2.lab)["endpoints"]["onprem"]["history"][-1]["detail"]
    assert detail == "HTTP 301"


def test_tcp_probe_needs_only_the_connect(make_lab: Any, rt: DockerRuntime) -> None:
    st = make_lab(monitor={"protocol": "TCP", "port": PROBE_PORT, "path": None})
    scripted(rt, st, "web1", "webdr")
    set_code(rt, st, "web1", 500)  # an HTTP error does not matter to a TCP probe
    wait_status(st, "onprem", "Online")
    assert (
        trafficmanager.read_status(st.lab)["endpoints"]["onprem"]["history"][-1]["detail"]
        == "connected"
    )
    assert not exec_ok(rt, host(st, "web1").container, "test", "-s", "/tmp/headers.log")[0]


def test_refused_and_unresolvable_targets_are_failed_probes(
    make_lab: Any, rt: DockerRuntime
) -> None:
    st = make_lab(monitor={"port": PROBE_PORT, "path": "/probe"})  # nothing listens: refused
    wait_status(st, "onprem", "Degraded")
    hist = trafficmanager.read_status(st.lab)["endpoints"]["onprem"]["history"]
    assert "refused" in hist[-1]["detail"].lower()
    assert not hist[-1]["ok"]


# --- weighted ------------------------------------------------------------------------------


def test_weighted_split_matches_weights_and_replays(make_lab: Any, rt: DockerRuntime) -> None:
    eps = {
        "onprem": {"target": "web1", "site": "onprem", "weight": 1},
        "azure": {"target": "webdr", "site": "azure", "weight": 3},
    }
    runs = []
    for _ in range(2):
        st = make_lab(monitor={}, routing="weighted", endpoints=eps, seed=7)
        wait_status(st, "onprem", "Online")
        wait_status(st, "azure", "Online")
        answers = client_query(rt, st, PROFILE, count=1000)
        picks = [a["a"][0] == public(st, "webdr") for a in answers]
        share = sum(picks) / len(picks)
        # 75 % expected; +-5 points is 3.6 standard deviations of a binomial at n=1000.
        assert 0.70 <= share <= 0.80, share
        runs.append(picks)
    assert runs[0] == runs[1], "the same seed gave a different sequence of answers"


def test_multivalue_returns_healthy_endpoints(make_lab: Any, rt: DockerRuntime) -> None:
    eps = {
        "onprem": {"target": "web1", "site": "onprem"},
        "azure": {"target": "webdr", "site": "azure"},
    }
    st = make_lab(monitor={}, routing="multivalue", endpoints=eps, max_answers=2)
    wait_status(st, "onprem", "Online")
    wait_status(st, "azure", "Online")
    [ans] = client_query(rt, st, PROFILE)
    assert sorted(ans["a"]) == sorted([public(st, "web1"), public(st, "webdr")])
    rt.stop(host(st, "webdr").container, timeout_s=1)
    wait_answer(rt, st, {public(st, "web1")}, timeout_s=10)


def test_dns_status_cli(make_lab: Any) -> None:
    st = make_lab(monitor={})
    wait_status(st, "onprem", "Online")
    res = drill_cli("dns", "status", "--name", st.lab, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["answer"]["addresses"] == [public(st, "web1")]
    assert data["timing"]["azure_clients_move_s"] > data["timing"]["emulator_clients_move_s"]
    eps = {e["name"]: e for e in data["endpoints"]}
    assert eps["onprem"]["status"] == "Online" and eps["onprem"]["last_probes"]
    res = drill_cli("dns", "endpoint", "disable", "nosuch", "--name", st.lab)
    assert res.returncode == 2 and "unknown endpoint" in res.stderr
