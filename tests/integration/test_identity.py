"""The directory and its replica on real slapd (issue: directory replica).

One lab of the enterprise design's sites, directory and apps (Site Recovery and Traffic Manager's
recovery endpoints left out: this module tests identity, not replication of disks). The recovery
site's copy of SharePoint is started by the test in the recovery VNet with the environment that
``identity.app_env`` gives a host placed there, which is what failover does with it.

Waits are bounded by a deadline of several sync intervals; that is a timeout for a broken lab,
not a performance threshold (the figures live in bench/identity.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import yaml

from harness import faults, identity, lab, naming, state
from harness import topology as t
from harness.components import web
from harness.components.common import http_ready
from harness.plan import HostPlan, LabPlan
from harness.runtime import DockerRuntime

from ..conftest import TOPOLOGIES
from .conftest import drill_cli, unique_name

pytestmark = pytest.mark.integration

SYNC_S = 2
DEADLINE_S = SYNC_S * 5 + 15


def identity_topology() -> t.Topology:
    """enterprise.yaml's sites, directory, apps and identity, without Site Recovery."""
    data: dict[str, Any] = yaml.safe_load((TOPOLOGIES / "enterprise.yaml").read_text())
    data.pop("protection", None)
    data.pop("recovery_plans", None)
    data.pop("traffic_manager", None)
    for site in data["sites"].values():
        for h in site["hosts"].values():
            h.pop("disks", None)
            h.pop("recovery", None)
    data["identity"]["sync_interval_s"] = SYNC_S
    return t.parse(data, "enterprise.yaml (identity only)")


@pytest.fixture(scope="module")
def ilab(rt: DockerRuntime) -> Iterator[lab.LabRef]:
    name = unique_name("idn")
    lab.up(identity_topology(), name)
    try:
        yield lab.open_lab(name, runtime=rt)
    finally:
        lab.down(name)


def start_recovery_app(rt: DockerRuntime, plan: LabPlan) -> str:
    """SharePoint's recovery copy in the recovery VNet's backend subnet; its base URL."""
    topo = plan.topology
    site = topo.recovery_site
    addr = ipaddress.IPv4Address("10.64.3.61")
    host = t.Host(role="app", app="documents", subnet="backend", address=addr)
    hp = HostPlan(
        name="sharepoint-dr",
        site=site,
        host=host,
        container=naming.object_name(plan.lab, "sharepoint-dr"),
        network=plan.networks[f"{site}.backend"].name,
        address=plan.addr(addr),
        public_address=None,
        gateway=plan.addr(topo.sites[site].gateway.addresses["backend"]),
    )
    spec = web.spec(plan, hp)
    assert spec.env["LDAP_URL"] == f"ldap://{plan.hosts['dc2'].address}:389"  # the replica
    rt.run(spec)
    web.configure(rt, plan, hp)
    url = f"http://{hp.address}"
    deadline = time.monotonic() + 30
    while http_ready(f"{url}/health") is not None:
        assert time.monotonic() < deadline, rt.logs(hp.container)
        time.sleep(0.2)
    return url


@pytest.fixture(scope="module")
def dr_app(rt: DockerRuntime, ilab: lab.LabRef) -> str:
    return start_recovery_app(rt, ilab.plan)


def onprem_app(ilab: lab.LabRef) -> str:
    return f"http://{ilab.plan.hosts['sharepoint'].address}"


def get(url: str, auth: tuple[str, str] | None) -> int:
    return requests.get(f"{url}/documents", auth=auth, timeout=10).status_code


def post(url: str, auth: tuple[str, str] | None) -> int:
    return requests.post(f"{url}/documents", data=b"doc", auth=auth, timeout=10).status_code


def eventually(check: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> float:
    """Seconds until ``check()`` held; fails after the deadline."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < deadline_s, f"{what}: not within {deadline_s}s"
        time.sleep(0.1)
    return time.monotonic() - started


def statuses(lab_name: str) -> dict[str, identity.DirectoryStatus]:
    return {s.role: s for s in identity.status(lab_name)}


def in_sync(lab_name: str) -> bool:
    st = statuses(lab_name)
    return st["directory"].entries == st["replica"].entries


def all_passwords(lab_name: str) -> list[str]:
    path = state.lab_dir(lab_name) / "identity" / "passwords.json"
    return list(json.loads(path.read_text()).values())


# --- seeded directory and replica -------------------------------------------------------------


def test_directory_seeded_and_replicated(ilab: lab.LabRef) -> None:
    res = drill_cli("identity", "status", "--name", ilab.plan.lab, "--json")
    assert res.returncode == 0, res.stderr
    by_role = {d["role"]: d for d in json.loads(res.stdout)}
    dc1, dc2 = by_role["directory"], by_role["replica"]
    assert dc1["reachable"] and dc2["reachable"]
    assert dc1["users"] == dc2["users"] == 5
    assert dc2["entries"] == dc1["entries"]
    assert dc2["context_csn"] is not None and dc2["lag_s"] is not None
    assert dc2["sync_interval_s"] == SYNC_S
    listed = drill_cli("identity", "user", "list", "--name", ilab.plan.lab, "--site", "azure")
    assert "carol" in listed.stdout and "(disabled)" in listed.stdout


def test_passwords_hashed_kept_private_and_never_logged(
    rt: DockerRuntime, ilab: lab.LabRef
) -> None:
    folder = state.lab_dir(ilab.plan.lab) / "identity"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "passwords.json").stat().st_mode) == 0o600
    assert not list((folder / "ldif").rglob("*.ldif"))  # applied LDIF does not linger
    alice = identity.credentials(ilab.plan.lab, "alice")
    assert alice.password not in repr(alice)
    sfx = identity.suffix("contoso.test")
    for dc in ("dc1", "dc2"):
        [entry] = identity.search(
            rt, ilab.plan.hosts[dc].container, identity.user_dn(sfx, "alice"), "base",
            "(objectClass=*)", "userPassword",
        )  # fmt: skip
        stored = entry["userPassword"][0]
        assert stored.startswith("{SSHA}") and identity.check_ssha(alice.password, stored)
    requests.get(f"{onprem_app(ilab)}/documents", auth=alice.basic, timeout=10)
    secrets = all_passwords(ilab.plan.lab)
    for c in rt.containers({naming.LAB: ilab.plan.lab}):
        logs = rt.logs(c.name, tail=10_000)
        assert not [p for p in secrets if p in logs], f"a password in {c.name}'s log"


def test_onprem_app_logins_and_groups(ilab: lab.LabRef) -> None:
    url = onprem_app(ilab)
    alice = identity.credentials(ilab.plan.lab, "alice").basic
    bob = identity.credentials(ilab.plan.lab, "bob").basic
    carol = identity.credentials(ilab.plan.lab, "carol").basic
    assert requests.get(f"{url}/health", timeout=10).status_code == 200  # no login needed
    resp = requests.get(f"{url}/documents", timeout=10)
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
    assert (get(url, alice), post(url, alice)) == (200, 201)  # editor
    assert (get(url, bob), post(url, bob)) == (200, 403)  # reader
    assert get(url, carol) == 403  # disabled
    assert get(url, ("alice", "wrong")) == 401
    assert get(url, ("nobody", "whatever")) == 401
    assert get(url, ("alice", "")) == 401  # an empty password is not an anonymous login
    assert get(url, ("alice)(uid=*", "x")) == 401


def test_recovery_app_uses_the_replica(ilab: lab.LabRef, dr_app: str) -> None:
    lab_name = ilab.plan.lab
    for user in identity.synthetic_users(lab_name):
        assert get(dr_app, user.basic) == 200
    assert get(dr_app, identity.credentials(lab_name, "carol").basic) == 403
    assert post(dr_app, identity.credentials(lab_name, "bob").basic) == 403
    assert get(dr_app, ("alice", "wrong")) == 401
    assert identity.login(lab_name, "alice", "azure")
    assert not identity.login(lab_name, "alice", "azure", password="wrong")


# --- changes made on-prem reach the recovery site ---------------------------------------------


def test_user_added_onprem_logs_into_recovery_app(ilab: lab.LabRef, dr_app: str) -> None:
    lab_name = ilab.plan.lab
    res = drill_cli(
        "identity", "user", "add", "dave", "--groups", "editors", "--name", lab_name
    )  # generated password, not printed
    assert res.returncode == 0, res.stderr
    dave = identity.credentials(lab_name, "dave")
    assert dave.password not in res.stdout + res.stderr
    assert get(onprem_app(ilab), dave.basic) == 200  # on-prem at once
    took = eventually(lambda: post(dr_app, dave.basic) == 201, "dave logs in at the recovery site")
    print(f"dave could log in at the recovery site {took:.1f}s after his creation on-prem")


def test_disabled_user_is_refused_at_recovery_site(ilab: lab.LabRef, dr_app: str) -> None:
    lab_name = ilab.plan.lab
    erin = identity.add_user(lab_name, "erin", ["readers"])
    eventually(lambda: get(dr_app, erin.basic) == 200, "erin replicated")
    res = drill_cli("identity", "user", "disable", "erin", "--name", lab_name)
    assert res.returncode == 0, res.stderr
    assert get(onprem_app(ilab), erin.basic) == 403
    eventually(lambda: get(dr_app, erin.basic) == 403, "erin disabled at the recovery site")
    assert get(dr_app, (erin.user, "wrong")) == 401  # a wrong password stays a 401


def test_group_change_changes_what_user_may_do(ilab: lab.LabRef, dr_app: str) -> None:
    lab_name = ilab.plan.lab
    frank = identity.add_user(lab_name, "frank", ["readers"])
    eventually(lambda: get(dr_app, frank.basic) == 200, "frank replicated")
    assert post(dr_app, frank.basic) == 403
    res = drill_cli("identity", "user", "groups", "frank", "editors", "--name", lab_name)
    assert res.returncode == 0, res.stderr
    eventually(lambda: post(dr_app, frank.basic) == 201, "frank may write at the recovery site")
    identity.set_groups(lab_name, "frank", [])
    eventually(lambda: get(dr_app, frank.basic) == 403, "frank may no longer read")


def test_password_change_from_stdin(ilab: lab.LabRef, dr_app: str) -> None:
    lab_name = ilab.plan.lab
    old = identity.credentials(lab_name, "bob")
    new_pw = "n3w-" + os.urandom(6).hex()
    res = drill_cli_stdin(
        new_pw + "\n", lab_name, "identity", "user", "passwd", "bob", "--password-stdin"
    )
    assert res["returncode"] == 0, res["stderr"]
    assert new_pw not in res["stdout"] + res["stderr"]
    assert identity.credentials(lab_name, "bob").password == new_pw
    eventually(lambda: get(dr_app, ("bob", new_pw)) == 200, "the new password at the recovery site")
    assert get(dr_app, old.basic) == 401
    shown = drill_cli_stdin("", lab_name, "identity", "user", "passwd", "bob", "--show-password")
    assert shown["returncode"] == 0
    assert shown["stdout"].strip() == identity.credentials(lab_name, "bob").password


def drill_cli_stdin(stdin: str, lab_name: str, *args: str) -> dict[str, Any]:
    """The CLI with ``stdin`` on its standard input."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args, "--name", lab_name],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def test_bad_input_changes_nothing(ilab: lab.LabRef) -> None:
    lab_name = ilab.plan.lab
    before = identity.users(lab_name)
    bad = [
        ("identity", "user", "add", "alice"),  # duplicate
        ("identity", "user", "add", "gina", "--groups", "admins"),  # unknown group
        ("identity", "user", "add", "Bad Name"),
        ("identity", "user", "disable", "nobody"),
        ("identity", "user", "passwd", "nobody"),
        ("identity", "user", "groups", "alice", "admins"),
    ]
    for args in bad:
        res = drill_cli(*args, "--name", lab_name)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "error" in res.stderr
    assert identity.users(lab_name) == before
    assert drill_cli("identity", "status", "--name", "no-such-lab").returncode == 2


# --- faults -------------------------------------------------------------------------------------


def test_partition_replica_serves_last_state_then_catches_up(ilab: lab.LabRef, dr_app: str) -> None:
    lab_name = ilab.plan.lab
    alice = identity.credentials(lab_name, "alice").basic
    eventually(lambda: in_sync(lab_name), "replica in sync before the partition")
    faults.inject(lab_name, "partition")
    try:
        hank = identity.add_user(lab_name, "hank", ["readers"])  # made during the partition
        first = statuses(lab_name)["replica"]
        time.sleep(SYNC_S * 2)
        second = statuses(lab_name)["replica"]
        assert first.lag_s is not None and second.lag_s is not None
        assert second.lag_s > first.lag_s and second.lag_s > SYNC_S  # growing lag
        assert second.context_csn == first.context_csn  # no sync got through
        assert get(dr_app, alice) == 200  # the last synced state still serves logins
        assert get(dr_app, hank.basic) == 401  # the change made on-prem has not arrived
        print(f"lag during the partition: {first.lag_s:.1f}s then {second.lag_s:.1f}s")
    finally:
        faults.heal(lab_name)
    took = eventually(lambda: get(dr_app, hank.basic) == 200, "hank after the heal")
    healed = statuses(lab_name)["replica"]
    assert healed.lag_s is not None and healed.lag_s < second.lag_s
    print(f"caught up {took:.1f}s after the heal; lag now {healed.lag_s:.1f}s")


def test_onprem_site_gone_synthetic_users_still_log_in(
    rt: DockerRuntime, ilab: lab.LabRef, dr_app: str
) -> None:
    """Runs last: it takes the on-prem directory and gateway away for good."""
    lab_name = ilab.plan.lab
    users = identity.synthetic_users(lab_name)
    assert users and all(get(dr_app, u.basic) == 200 for u in users)
    rt.stop(ilab.plan.hosts["dc1"].container)
    rt.stop(ilab.plan.gateways[ilab.plan.topology.primary_site].container)
    for u in users:
        assert get(dr_app, u.basic) == 200
        assert identity.login(lab_name, u.user, "azure")
    ident = ilab.plan.topology.identity
    assert ident is not None
    editor = next(u for u in users if "editors" in ident.users[u.user].groups)
    assert post(dr_app, editor.basic) == 201
    assert get(dr_app, (users[0].user, "wrong")) == 401
    first = statuses(lab_name)
    assert not first["directory"].reachable and first["replica"].reachable
    time.sleep(1.5)
    second = statuses(lab_name)["replica"]
    assert first["replica"].lag_s is not None and second.lag_s is not None
    assert second.lag_s > first["replica"].lag_s  # staleness grows with the provider gone
    assert second.users == first["replica"].users
