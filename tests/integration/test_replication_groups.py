"""Replication groups and retention against a real lab: replicator, tunnel, Azurite.

One lab of ``minimal`` with a second app host (``web2``) and both hosts, each with a 16 MiB
data disk, in one replication group. The policy takes a crash-consistent point every second,
so the pruning table (scaled by ``crash_consistent_s / 300``) keeps every point of the last
24 s, one per 12 s bucket beyond that, and nothing older than ``retention_s`` (30 s): a
retention longer than the recent window, so that both rules are exercised.

- Multi-VM consistency: the group's points share their instant, and restored disks keep the
  order of writes made across the two hosts (one freeze over both filesystems).
- Retention: what is left in Azurite after pruning is exactly what ``core.Retention`` keeps,
  every remaining manifest has its snapshot and every snapshot its manifest.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import disks, lab
from harness import topology as topo_mod
from harness.components import replicator
from harness.replication import control, core
from harness.runtime import DockerRuntime

from .conftest import drill_cli, unique_name, wait_for

pytestmark = pytest.mark.integration

A, B = "web1", "web2"  # the writer writes A first, then B
GROUP = "pair"
DISK = "data"
POLICY = {"crash_consistent_s": 1, "app_consistent_s": 4, "retention_s": 30, "rpo_threshold_s": 10}
COUNTER = "counter"
WIDTH = 20


def topology() -> topo_mod.Topology:
    """``minimal`` with web1 and a second app host web2 in one group, 16 MiB disks each."""
    data = yaml.safe_load((lab.TOPOLOGY_DIR / "minimal.yaml").read_text())
    hosts = data["sites"]["onprem"]["hosts"]
    hosts[A]["disks"] = [{"name": DISK, "size": "16MiB"}]
    hosts[B] = {
        "role": "app",
        "app": "documents",
        "subnet": "servers",
        "address": "10.64.1.11",
        "disks": [{"name": DISK, "size": "16MiB"}],
        "recovery": {"subnet": "frontend", "address": "10.64.2.11"},
    }
    data["protection"]["hosts"] = [A, B]
    data["protection"]["groups"] = {GROUP: [A, B]}
    data["protection"]["policy"] = POLICY
    return topo_mod.parse(data, "minimal+group")


@pytest.fixture(scope="module")
def name() -> Iterator[str]:
    lab_name = unique_name("rgrp")
    lab.up(topology(), lab_name)
    try:
        yield lab_name
    finally:
        lab.down(lab_name)


@pytest.fixture()
def ready(name: str) -> str:
    def both_protected() -> bool:
        st = control.status(name)
        return len(st.disks) == 2 and all(
            d.state == "Protected" and d.last_error is None for d in st.disks
        )

    wait_for(f"{A} and {B} Protected", both_protected)
    return name


def point_events(lab_name: str) -> list[dict[str, Any]]:
    """Every point the replicator published, from its journal, oldest first."""
    return [e for e in control.read_events(lab_name) if e.get("kind") == "point"]


# --- multi-VM consistency ---------------------------------------------------------------------


class CounterWriter:
    """Writes 1, 2, 3, ... to A's then B's counter file, fsyncing each write."""

    def __init__(self, lab_name: str) -> None:
        self.paths = [disks.mount_path(lab_name, h, DISK) / COUNTER for h in (A, B)]
        self.stop = threading.Event()
        self.n = 0
        self.error: BaseException | None = None
        self.fds: list[int] = []
        for p in self.paths:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self.fds.append(fd)
            self._write(fd, 0)
            dfd = os.open(p.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _write(fd: int, n: int) -> None:
        os.pwrite(fd, f"{n:0{WIDTH}d}\n".encode(), 0)
        os.fsync(fd)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                n = self.n + 1
                for fd in self.fds:  # A, then B
                    self._write(fd, n)
                self.n = n
        except BaseException as exc:  # reported by the test
            self.error = exc

    def __enter__(self) -> CounterWriter:
        self.started = time.time()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.stopped = time.time()
        for fd in self.fds:
            os.close(fd)


def restored_counter(lab_name: str, host: str, seq: int, work: Path) -> int:
    """The counter in ``host``'s disk restored at point ``seq`` (mounted read-only)."""
    image = work / f"{host}-{seq}.img"
    control.restore(lab_name, host, seq, image)
    mnt = work / f"{host}-{seq}.mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(image), str(mnt)], check=True, timeout=30)
    try:
        return int((mnt / COUNTER).read_text())
    finally:
        subprocess.run(["umount", str(mnt)], check=True, timeout=30)
        mnt.rmdir()
        image.unlink()


def test_group_points_share_their_instant_and_sequence(ready: str) -> None:
    wait_for("5 points of the group", lambda: len(point_events(ready)) >= 5)
    pa = {m.seq: m for m in control.points(ready, A)}
    pb = {m.seq: m for m in control.points(ready, B)}

    def journal_of_listed() -> list[dict[str, Any]] | None:
        ev = point_events(ready)  # a point's event is written just after its manifests
        return ev if ev and ev[-1]["seqs"][A] >= max(set(pa) | set(pb)) else None

    events = wait_for("the journal of every listed point", journal_of_listed)
    for e in events:
        assert e["group"] == GROUP and e["hosts"] == [A, B], e
        assert e["seqs"][A] == e["seqs"][B], e  # both hosts' points so far are group points
    common = sorted(set(pa) & set(pb))
    assert len(common) >= 5
    # A point is published A's manifest first and pruned A's first: only the newest and the
    # oldest seqs may be seen for one host and not yet (or no longer) for the other.
    assert all(s < common[0] or s > common[-1] for s in set(pa) ^ set(pb))
    taken = {e["seqs"][A]: e["taken_at"] for e in events}
    for s in common:
        a, b = pa[s], pb[s]
        assert a.taken_at == b.taken_at == taken[s], s
        assert (a.type, a.published_at, a.freeze_ms) == (b.type, b.published_at, b.freeze_ms)
        assert a.group == b.group == GROUP
    assert len({pa[s].taken_at for s in common}) == len(common)  # one instant per point
    assert {pa[s].type for s in common} <= {"crash-consistent", "app-consistent"}


def test_restored_group_points_keep_the_order_of_writes_across_hosts(
    ready: str, tmp_path: Path
) -> None:
    with CounterWriter(ready) as w:
        wait_for(
            "6 group points taken while the writer runs",
            lambda: sum(e["taken_at"] > w.started for e in point_events(ready)) >= 6,
        )
    assert w.error is None, w.error
    assert w.n > 100, w.n  # the writer really ran concurrently with the points
    during = [e["seqs"][A] for e in point_events(ready) if w.started < e["taken_at"] < w.stopped]
    assert len(during) >= 6
    # Spread over the run. All are younger than the 24 s in which every point is kept, so
    # none is pruned before it is restored.
    picks = sorted({during[round(i * (len(during) - 1) / 5)] for i in range(6)})
    found = []
    for seq in picks:
        ca = restored_counter(ready, A, seq, tmp_path)
        cb = restored_counter(ready, B, seq, tmp_path)
        found.append((seq, ca, cb))
    for seq, ca, cb in found:
        # A is always written before B: at one instant B never leads A, and A leads by at most 1.
        assert cb <= ca <= cb + 1, (seq, ca, cb, found)
    # The check has teeth: the writer moved on between points, so pairing one host's disk with
    # the other's from a different point (captured at another instant) would break it.
    for (s1, a1, _), (s2, _, b2) in itertools.pairwise(found):
        assert not b2 <= a1 <= b2 + 1, ("points too close to tell instants apart", s1, s2, found)
    assert found[-1][1] > found[0][1] > 0


# --- retention and pruning --------------------------------------------------------------------


def test_pruning_follows_the_retention_schedule_in_storage(ready: str, rt: DockerRuntime) -> None:
    retention = core.Retention(POLICY["retention_s"], POLICY["crash_consistent_s"])
    recent = 2 * core.HOUR * retention.scale  # 24 s: every point younger is kept
    bucket = retention.bucket_s(recent)  # 12 s: one point per bucket beyond that
    assert recent < POLICY["retention_s"]
    first = wait_for("a first point", lambda: point_events(ready))[0]["taken_at"]
    wait_for(
        "points taken past the retention window",
        lambda: point_events(ready)[-1]["taken_at"] > first + POLICY["retention_s"] + 3,
        timeout=120,
    )
    ref = lab.open_lab(ready)
    ctr = replicator.container(ref.plan)
    rt.stop(ctr, timeout_s=20)  # SIGTERM: it finishes its cycle (prune included) and exits
    try:
        assert rt.api.inspect_container(ctr)["State"]["ExitCode"] == 0
        st = replicator.read_status(ready)
        assert st is not None and st["failures"] == 0
        events = point_events(ready)
        # The last prune ran after the last point's event and before the final status.
        pruned_from, pruned_by = events[-1]["t"], float(st["updated_at"])
        store = control.open_store(ref)
        kept: dict[str, list[core.Manifest]] = {}
        for host in (A, B):
            ever = [(e["seqs"][host], e["taken_at"], e["type"]) for e in events]
            pts = control.points(ready, host)
            kept[host] = pts
            left = {m.seq for m in pts}
            # Keep only shrinks as time passes: the set left lies between the two bounds.
            assert retention.keep(ever, pruned_by) <= left <= retention.keep(ever, pruned_from)
            newest = max(seq for seq, _, _ in ever)
            assert newest in left
            # Nothing older than the retention window is left (but the newest point).
            expired = {s for s, t, _ in ever if pruned_from - t > POLICY["retention_s"]}
            assert 1 in expired and not (expired - {newest}) & left, (host, expired & left)
            # Beyond the recent window, at most one point per bucket: fewer than were taken.
            beyond = [m for m in pts if pruned_by - m.taken_at > recent]
            keys = [math.floor(m.taken_at / bucket) for m in beyond]
            assert len(keys) == len(set(keys)), (host, [m.seq for m in beyond])
            zone = [t for _, t, _ in ever if recent < pruned_by - t <= POLICY["retention_s"]]
            assert len(beyond) < len(zone), (host, len(beyond), len(zone))
            # Storage: every manifest left has its snapshot, no snapshot outlives its manifest.
            snaps = store.snapshots(core.head_blob(host, DISK))
            referenced = [m.disk(DISK).snapshot for m in pts]
            assert len(set(referenced)) == len(referenced) == len(pts)
            assert sorted(snaps) == sorted(referenced), host
        # The group's members keep the same instants.
        assert [m.seq for m in kept[A]] == [m.seq for m in kept[B]]
        assert [m.taken_at for m in kept[A]] == [m.taken_at for m in kept[B]]
        for host in (A, B):
            oldest, newest_m = kept[host][0], kept[host][-1]
            assert control.verify(ready, host, newest_m.seq).ok
            assert control.verify(ready, host, oldest.seq).ok
        res = drill_cli("replication", "verify", B, "--name", ready)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        rt.start(ctr)
