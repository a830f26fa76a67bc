"""Failover orchestration against real labs: test failover, planned and unplanned failover,
recovery plans with actions, the round trip home, refusals and interruption.

Every test has its own lab (``up`` takes seconds) of ``minimal`` with a faster replication
policy (points every 2 s), or of ``minimal`` plus a second protected app host (``app2``) so that
a recovery plan has two groups. Data is checked through the apps themselves: documents POSTed
to on-prem ``web1`` must (or must not) be listed by the recovered copy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import yaml

from harness import failover, faults, lab, naming, state, trafficmanager
from harness import topology as topo_mod
from harness.components import replicator
from harness.replication import control, core
from harness.runtime import DockerRuntime

from .conftest import drill_cli, unique_name, wait_for

pytestmark = pytest.mark.integration

POLICY = {"crash_consistent_s": 2, "app_consistent_s": 6, "retention_s": 600, "rpo_threshold_s": 8}
APP2 = {
    "role": "app",
    "app": "records",
    "subnet": "servers",
    "address": "10.64.1.11",
    "disks": [{"name": "data", "size": "32MiB"}],
    "recovery": {"subnet": "frontend", "address": "10.64.2.11"},
}
PLANS: dict[str, Any] = {
    "ordered": {
        "groups": [
            {
                "hosts": ["app2"],
                "post_actions": [
                    {"script": "echo group1-healthy >> /tmp/drill-plan.log", "container": "app2"}
                ],
            },
            {"hosts": ["web1"]},
        ],
        "timeout_s": 120,
    },
    "bad": {
        "groups": [
            {
                "hosts": ["app2", "web1"],
                "pre_actions": [
                    {"script": "echo firewall closed >&2; exit 3", "container": "users"}
                ],
            }
        ],
        "timeout_s": 120,
    },
    "manual": {
        "groups": [
            {"hosts": ["app2"], "pre_actions": [{"manual": "open the recovery firewall"}]},
            {"hosts": ["web1"]},
        ],
        "timeout_s": 120,
    },
}


def topology(two_hosts: bool = False) -> topo_mod.Topology:
    """``minimal`` with the fast policy; with ``two_hosts``, app2 and the plans above too."""
    data = yaml.safe_load((lab.TOPOLOGY_DIR / "minimal.yaml").read_text())
    data["protection"]["policy"] = POLICY
    if two_hosts:
        data["sites"]["onprem"]["hosts"]["app2"] = APP2
        data["protection"]["hosts"] = ["web1", "app2"]
        data["recovery_plans"] = PLANS
    return topo_mod.parse(data, "minimal+failover-test")


@pytest.fixture
def make_lab() -> Iterator[Callable[..., str]]:
    """Start labs for one test; every one is taken down afterwards."""
    names: list[str] = []

    def make(two_hosts: bool = False) -> str:
        name = unique_name("fo")
        names.append(name)
        lab.up(topology(two_hosts), name)
        return name

    yield make
    for name in names:
        lab.down(name)


def address(lab_name: str, host: str = "web1") -> str:
    return lab.open_lab(lab_name).plan.hosts[host].address


def dr_address(lab_name: str, host: str = "web1") -> str:
    ref = lab.open_lab(lab_name)
    return failover.recovery_copy(ref, host).address


def post_docs(addr: str, n: int, tag: str) -> list[str]:
    """POST ``n`` documents; the ids the app acknowledged (201)."""
    ids = []
    for i in range(n):
        r = requests.post(f"http://{addr}/documents", data=f"{tag}-{i}".encode(), timeout=10)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def doc_ids(addr: str, kind: str = "documents") -> set[str]:
    r = requests.get(f"http://{addr}/{kind}", timeout=10)
    r.raise_for_status()
    return {item["id"] for item in r.json()["items"]}


def point_after(lab_name: str, t: float, host: str = "web1") -> int:
    """Wait for a recovery point of ``host`` taken after ``t``; its id."""
    found = wait_for(
        f"a point of {host} taken after the writes",
        lambda: [m for m in control.points(lab_name, host) if m.taken_at > t],
    )
    return found[0].seq


def protected(lab_name: str, host: str = "web1") -> None:
    point_after(lab_name, 0, host)


def labelled(client: docker.DockerClient, lab_name: str, tag: str) -> list[str]:
    f = {"label": [f"{naming.LAB}={lab_name}", f"{failover.FAILOVER_LABEL}={tag}"]}
    return [c["Names"][0] for c in client.api.containers(all=True, filters=f)] + [
        n["Name"] for n in client.api.networks(filters=f)
    ]


def mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(path) in line]


def running(rt: DockerRuntime, container: str) -> bool:
    return any(c.name == container and c.state == "running" for c in rt.containers({}))


def job_file(lab_name: str, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (state.lab_dir(lab_name) / "jobs" / f"{job_id}.json").read_text()
    )
    return data


# --- test failover ---------------------------------------------------------------------------


def test_test_failover_serves_its_point_isolated_while_production_replicates(
    make_lab: Callable[..., str], client: docker.DockerClient, rt: DockerRuntime
) -> None:
    name = make_lab()
    protected(name)
    ids = post_docs(address(name), 5, "before-test")
    seq = point_after(name, time.time())

    j = failover.test_failover(name, str(seq))
    test_addr = j.result["hosts"]["web1"]["address"]
    assert j.result["points"]["web1"]["seq"] == seq
    assert doc_ids(test_addr) == set(ids)

    # production keeps serving and replicating while the test copy runs
    more = post_docs(address(name), 3, "during-test")
    assert doc_ids(address(name)) == set(ids) | set(more)
    point_after(name, time.time())
    (disk,) = control.status(name).disks
    assert disk.state == "Protected" and not disk.rpo_alert
    assert failover.read_state(name)["state"] == "protected"

    # the test network reaches neither site, and has no route towards the tunnel
    ref = lab.open_lab(name)
    copy = naming.object_name(name, "web1-test")
    gw = ref.plan.gateways[ref.plan.topology.recovery_site]
    targets = [address(name), ref.plan.hosts["storage"].address, dr_address(name)]
    for target in targets:
        res = rt.exec(copy, ["curl", "-sS", "-m", "2", f"http://{target}/"])
        assert not res.ok, f"the test copy reached {target}: {res.output}"
        res = rt.exec(copy, ["ping", "-c", "1", "-W", "1", target])
        assert not res.ok, f"the test copy pinged {target}"
    wan = rt.exec(copy, ["ip", "route", "get", gw.wan_address])
    assert not wan.ok and "unreachable" in wan.output, wan.output

    recovered = state.lab_dir(name) / "recovered" / "test"
    assert mounts_under(recovered) and labelled(client, name, "test")
    failover.cleanup_test(name)
    assert labelled(client, name, "test") == []
    assert mounts_under(recovered) == []
    assert failover.read_state(name)["test"] is None
    assert doc_ids(address(name)) == set(ids) | set(more)


# --- planned failover ------------------------------------------------------------------------


def test_planned_failover_loses_no_acknowledged_write(make_lab: Callable[..., str]) -> None:
    name = make_lab()
    protected(name)
    acked: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = requests.post(f"http://{address(name)}/documents", data=b"w%d" % i, timeout=2)
                if r.status_code == 201:
                    acked.append(r.json()["id"])
                    continue
            except requests.RequestException:
                pass
            refused.append(str(i))
            time.sleep(0.05)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    wait_for("writes acknowledged before the failover", lambda: len(acked) >= 20)
    try:
        j = failover.failover(name, planned=True)
    finally:
        stop.set()
        t.join(10)
    assert refused, "the writer should still have been writing when the source stopped"
    assert j.status == "succeeded"
    present = doc_ids(dr_address(name))
    missing = set(acked) - present
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost"
    assert failover.read_state(name)["planned"] is True


# --- unplanned failover ----------------------------------------------------------------------


def test_unplanned_failover_after_site_outage_chosen_point_decides_the_data(
    make_lab: Callable[..., str],
) -> None:
    """The older point is looked at through a test failover: Azure has no undo of a failover,
    and a test failover of the same lab shows exactly what that point holds."""
    name = make_lab()
    protected(name)
    older = post_docs(address(name), 3, "older")
    old_point = point_after(name, time.time())
    newer = post_docs(address(name), 4, "newer")
    point_after(name, time.time())
    ref = lab.open_lab(name)
    faults.inject(name, "site-outage", site=ref.plan.topology.primary_site)

    t = failover.test_failover(name, str(old_point))
    assert doc_ids(t.result["hosts"]["web1"]["address"]) == set(older)
    failover.cleanup_test(name)

    j = failover.failover(name, point="latest")
    assert j.status == "succeeded"
    assert doc_ids(dr_address(name)) == set(older) | set(newer)
    assert j.result["points"]["web1"]["seq"] > old_point

    # users come back through Traffic Manager, which now names the recovery site
    dns = trafficmanager.dns_address(ref.plan)
    vanity = trafficmanager.profile_of(ref.plan).profile
    public = failover.recovery_copy(ref, "web1").public_address
    wait_for(
        "Traffic Manager to answer with the recovery site",
        lambda: trafficmanager.query(dns, vanity).addresses == [public],
    )


# --- recovery plans --------------------------------------------------------------------------


def test_plan_group_two_starts_after_group_one_is_healthy(
    make_lab: Callable[..., str], rt: DockerRuntime
) -> None:
    name = make_lab(two_hosts=True)
    protected(name, "web1")
    protected(name, "app2")
    j = failover.failover(name, plan="ordered")
    steps = {s.name.split(":")[0]: s for s in j.steps}
    g1, post, g2 = steps["group 1"], steps["group 1 post-action 1"], steps["group 2"]
    assert g1.status == post.status == g2.status == "succeeded"
    assert g1.detail["healthy_at"] <= post.start
    assert post.end is not None and post.end <= g2.start
    assert g2.detail["healthy_at"] >= g2.start
    # the post-action ran in app2's recovery copy, once it was up
    assert post.detail["container"] == naming.object_name(name, "app2-dr")
    log = rt.exec(naming.object_name(name, "app2-dr"), ["cat", "/tmp/drill-plan.log"])
    assert log.output.strip() == "group1-healthy"


def test_failing_pre_action_stops_planned_failover_not_unplanned(
    make_lab: Callable[..., str], rt: DockerRuntime
) -> None:
    name = make_lab(two_hosts=True)
    protected(name, "web1")
    protected(name, "app2")
    ids = post_docs(address(name), 2, "kept")

    res = drill_cli("failover", "--planned", "--plan", "bad", "--name", name)
    assert res.returncode == 2, res.stderr
    assert "group 1 pre-action 1" in res.stderr and "exit 3" in res.stderr, res.stderr
    (j,) = failover.jobs(name)
    assert j.status == "failed" and "firewall closed" in (j.error or "")
    assert "drill failover again" in (j.hint or "")
    # cancelled: protected as before, the source serving and replicating again
    assert failover.read_state(name)["state"] == "protected"
    assert running(rt, replicator.container(lab.open_lab(name).plan))
    assert not running(rt, naming.object_name(name, "web1-dr"))
    assert doc_ids(address(name)) == set(ids)
    point_after(name, time.time())

    j2 = failover.failover(name, plan="bad")
    assert j2.status == "succeeded"
    pre = next(s for s in j2.steps if s.name.startswith("group 1 pre-action 1"))
    assert pre.status == "failed" and pre.detail["exit_code"] == 3
    assert j2.result["failed_actions"] and failover.read_state(name)["state"] == "failed-over"
    assert doc_ids(dr_address(name)) == set(ids)


def test_manual_action_waits_for_confirmation(make_lab: Callable[..., str]) -> None:
    name = make_lab(two_hosts=True)
    protected(name, "web1")
    protected(name, "app2")
    assert drill_cli("plan", "confirm", "--name", name).returncode == 2  # nothing waits yet
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(job=failover.failover(name, plan="manual")))
    t.start()
    pending = state.lab_dir(name) / "plan-pending.json"
    wait_for("the plan to wait for its manual action", pending.exists)
    assert failover.read_state(name)["state"] == "protected"  # nothing failed over yet
    res = drill_cli("plan", "confirm", "--name", name)
    assert res.returncode == 0 and "open the recovery firewall" in res.stdout
    t.join(120)
    j = out["job"]
    step = next(s for s in j.steps if s.name.startswith("group 1 pre-action 1"))
    assert step.detail["confirmed_by"] == "drill plan confirm"
    assert j.status == "succeeded"


def test_interrupted_failover_is_cancelled_and_says_how_to_continue(
    make_lab: Callable[..., str], rt: DockerRuntime
) -> None:
    """SIGINT while the plan waits for its manual action: deterministic, nothing is racing."""
    name = make_lab(two_hosts=True)
    protected(name, "web1")
    protected(name, "app2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "failover", "--plan", "manual", "--name", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        wait_for("the plan to wait", (state.lab_dir(name) / "plan-pending.json").exists)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    (j,) = failover.jobs(name)
    data = job_file(name, j.id)
    assert data["status"] == "interrupted"
    assert "drill failover again" in data["hint"]
    assert data["steps"][-1]["name"].startswith("cancel")
    assert failover.read_state(name)["state"] == "protected"
    assert running(rt, replicator.container(lab.open_lab(name).plan))
    assert not (state.lab_dir(name) / "plan-pending.json").exists()
    # and it can simply be run again
    assert failover.failover(name, plan="manual", auto_confirm=True).status == "succeeded"
    step = next(s for s in failover.jobs(name)[-1].steps if "pre-action" in s.name)
    assert step.detail["confirmed_by"] == "auto"


# --- the round trip --------------------------------------------------------------------------


def test_round_trip_brings_recovery_site_writes_home(make_lab: Callable[..., str]) -> None:
    name = make_lab()
    protected(name)
    before = post_docs(address(name), 3, "onprem")
    point_after(name, time.time())
    ref = lab.open_lab(name)
    faults.inject(name, "site-outage", site=ref.plan.topology.primary_site)
    failover.failover(name)
    during = post_docs(dr_address(name), 4, "in-azure")
    faults.heal(name)

    failover.commit(name)
    rj = failover.reprotect(name)
    assert rj.steps[0].detail["bytes_sent"] > 0
    failover.failback(name)
    failover.reprotect(name)

    assert failover.read_state(name)["state"] == "protected"
    assert doc_ids(address(name)) == set(before) | set(during)
    dns = trafficmanager.dns_address(ref.plan)
    vanity = trafficmanager.profile_of(ref.plan).profile
    onprem = ref.plan.hosts["web1"].public_address
    wait_for(
        "Traffic Manager to answer on-prem again",
        lambda: trafficmanager.query(dns, vanity).addresses == [onprem],
    )
    serving = trafficmanager.status(name).serving
    assert serving and all("onprem" in s for s in serving), serving
    after = post_docs(address(name), 1, "home")
    point_after(name, time.time())  # replication to the recovery site resumed
    assert doc_ids(address(name)) == set(before) | set(during) | set(after)


# --- refusals --------------------------------------------------------------------------------


def refused(name: str, *args: str) -> str:
    """Run the CLI; it must exit 2 and change neither the state nor the jobs."""
    before = (failover.read_state(name), [j.id for j in failover.jobs(name)])
    res = drill_cli(*args, "--name", name)
    assert res.returncode == 2, (args, res.stdout, res.stderr)
    assert (failover.read_state(name), [j.id for j in failover.jobs(name)]) == before
    return res.stderr


def test_wrong_order_and_bad_input_are_refused_and_change_nothing(
    make_lab: Callable[..., str], client: docker.DockerClient, rt: DockerRuntime
) -> None:
    name = make_lab()
    ref = lab.open_lab(name)
    rep = replicator.container(ref.plan)
    rt.stop(rep)
    # The first point may already be out (the replicator is quick): remove every point, as if
    # replication had not published one yet, then check failover is refused.
    store = control.open_store(ref)
    for m in control.list_points(store, "web1"):
        store.delete_manifest(core.manifest_blob("web1", m.seq))
    assert control.points(name, "web1") == []
    err = refused(name, "failover")
    assert "no recovery point" in err
    rt.start(rep)
    protected(name)

    assert "is protected; allowed next: drill failover" in refused(name, "commit")
    assert "is protected" in refused(name, "reprotect")
    assert "is protected" in refused(name, "failback")
    assert "not 'nope'" in refused(name, "failover", "--point", "nope")
    assert "no recovery point 99999" in refused(name, "failover", "--point", "99999")
    assert "unknown recovery plan 'nope'; plans: failover" in refused(
        name, "failover", "--plan", "nope"
    )
    assert "no test failover" in refused(name, "failover", "--cleanup-test")
    assert labelled(client, name, "dr") == []

    failover.test_failover(name)
    err = refused(name, "failover")
    assert "has a test failover" in err and "drill failover --cleanup-test" in err
    assert "exists already" in refused(name, "failover", "--test")
    failover.cleanup_test(name)

    failover.failover(name)
    assert "is failed-over; allowed next: drill commit" in refused(name, "failover")
    assert "is failed-over; allowed next: drill commit" in refused(name, "reprotect")
    assert "is failed-over" in refused(name, "failback")
    assert "no job 'j99'" in refused(name, "jobs", "show", "j99")
    failover.commit(name)
    assert "is committed; allowed next: drill reprotect" in refused(name, "commit")
    assert "is committed; allowed next: drill reprotect" in refused(name, "failback")
