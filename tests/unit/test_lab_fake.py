"""Lab logic on the in-memory runtime: naming, labels, relocation and cleanup on failure.

These prove bookkeeping only; tests/integration proves the lab works on the real engine.
"""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

import pytest

from harness import lab, naming
from harness import topology as t
from harness.errors import EngineError, ReadinessError, UsageError
from harness.fake_runtime import FakeRuntime
from harness.plan import make_plan

from ..conftest import TOPOLOGIES


@pytest.fixture
def minimal() -> t.Topology:
    return t.load(TOPOLOGIES / "minimal.yaml")


@pytest.fixture
def instant_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "_wait_ready", lambda *a, **k: None)


def test_plan_names_and_labels_everything(minimal: t.Topology) -> None:
    plan = make_plan(minimal, "alice", "abc", minimal.addressing.space)
    assert plan.networks["onprem.servers"].name == "drill-alice-onprem-servers"
    assert plan.hosts["web1"].container == "drill-alice-web1"
    for spec in plan.networks.values():
        assert spec.internal
        assert spec.labels[naming.LAB] == "alice" and spec.labels[naming.RUN] == "abc"


def test_relocation_keeps_host_part(minimal: t.Topology) -> None:
    plan = make_plan(minimal, "bob", "r", ipaddress.IPv4Network("10.70.0.0/16"))
    assert plan.hosts["web1"].address == "10.70.1.10"
    assert plan.hosts["web1"].public_address == "10.70.100.10"
    assert plan.networks["wan"].subnet == "10.70.255.0/24"
    assert plan.gateways["onprem"].wan_address == "10.70.255.2"


def test_up_creates_labelled_objects_and_down_removes_all(
    minimal: t.Topology, instant_ready: None
) -> None:
    rt = FakeRuntime()
    st = lab.up(minimal, "alice", runtime=rt)
    assert st.lab == "alice"
    assert len(rt.containers_) == 2 + 4 + 1  # two gateways, four hosts, the replicator
    assert all(spec.labels[naming.LAB] == "alice" for spec, _ in rt.containers_.values())
    assert rt.volumes_  # the storage account's data volume
    removed = lab.down("alice", runtime=rt)
    assert removed > 0
    assert not rt.containers_ and not rt.networks_ and not rt.volumes_


def test_second_lab_is_relocated(minimal: t.Topology, instant_ready: None) -> None:
    rt = FakeRuntime()
    a = lab.up(minimal, "alice", runtime=rt)
    b = lab.up(minimal, "bob", runtime=rt)
    assert a.space == "10.64.0.0/16"
    assert b.space != a.space
    subnets = [ipaddress.ip_network(n.subnet) for n in rt.networks_.values()]
    for i, x in enumerate(subnets):
        for y in subnets[i + 1 :]:
            assert not x.overlaps(y)


def test_foreign_network_in_the_way_relocates(minimal: t.Topology, instant_ready: None) -> None:
    rt = FakeRuntime(foreign_subnets=["10.64.1.0/24"])
    st = lab.up(minimal, "alice", runtime=rt)
    assert st.space != "10.64.0.0/16"


def test_same_name_twice_is_refused_and_changes_nothing(
    minimal: t.Topology, instant_ready: None
) -> None:
    rt = FakeRuntime()
    lab.up(minimal, "alice", runtime=rt)
    before = (dict(rt.containers_), dict(rt.networks_))
    with pytest.raises(UsageError, match="already exists"):
        lab.up(minimal, "alice", runtime=rt)
    assert (dict(rt.containers_), dict(rt.networks_)) == before


def test_invalid_lab_name_creates_nothing(minimal: t.Topology) -> None:
    rt = FakeRuntime()
    with pytest.raises(UsageError, match="invalid lab name"):
        lab.up(minimal, "Bad_Name", runtime=rt)
    assert not rt.networks_


def test_failed_host_tears_down_everything(minimal: t.Topology) -> None:
    rt = FakeRuntime(fail_run={"drill-alice-storage"})
    with pytest.raises(ReadinessError) as info:
        lab.up(minimal, "alice", runtime=rt, ready_timeout_s=5)
    assert "storage" in str(info.value)
    assert not rt.containers_ and not rt.networks_ and not rt.volumes_


def test_interrupt_during_up_tears_down(
    minimal: t.Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(lab, "_wait_ready", interrupted)
    rt = FakeRuntime()
    with pytest.raises(KeyboardInterrupt):
        lab.up(minimal, "alice", runtime=rt)
    assert not rt.containers_ and not rt.networks_


def test_routes_go_via_own_gateway(minimal: t.Topology, instant_ready: None) -> None:
    rt = FakeRuntime()
    lab.up(minimal, "alice", runtime=rt)
    env = rt.containers_["drill-alice-web1"][0].env
    assert "10.64.2.0/24=10.64.1.2" in env["DRILL_ROUTES"].split(), env


def test_status_of_unknown_lab(minimal: t.Topology) -> None:
    with pytest.raises(UsageError, match="no lab named"):
        lab.status("ghost", runtime=FakeRuntime())


def test_network_lock_holds_off_a_second_lab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Picking a space and making networks is one lab at a time, across processes' handles."""
    monkeypatch.setattr(lab._NetworksLock, "PATH", tmp_path / "networks.lock")
    first, second = lab._NetworksLock(), lab._NetworksLock()
    first.acquire()
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (second.acquire(), got.set()))
    waiter.start()
    assert not got.wait(0.3), "the second lab took the lock while the first held it"
    first.release()
    assert got.wait(5), "the lock was not handed on"
    waiter.join()
    second.release()


def test_a_network_that_will_not_go_still_lets_disks_and_volumes_go(
    minimal: t.Topology, instant_ready: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's stale endpoint count (moby#42119) keeps one network: the error is raised,
    but only after the lab's volumes are removed and its disks released."""
    rt = FakeRuntime()
    lab.up(minimal, "alice", runtime=rt)
    assert rt.volumes_
    stuck = next(iter(rt.networks_))
    real_remove = rt.remove_network

    def remove_network(name: str) -> None:
        if name == stuck:
            raise EngineError(f"network {name} counts endpoints although no container is attached")
        real_remove(name)

    detached: list[str] = []
    monkeypatch.setattr(rt, "remove_network", remove_network)
    monkeypatch.setattr(lab, "_local_disks", lambda _rt: True)
    monkeypatch.setattr(lab.disks, "detach", lambda name: detached.append(name) or 0)
    with pytest.raises(EngineError, match="counts endpoints"):
        lab.down("alice", runtime=rt)
    assert detached == ["alice"]
    assert not rt.volumes_ and not rt.containers_
    assert list(rt.networks_) == [stuck]
