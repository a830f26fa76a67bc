"""Replication logic without an engine: change tracker, Put Page ranges, points, pruning, health."""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.replication import core
from harness.replication.agent import Config, DiskConfig, HostConfig, NoFreezer, Replicator
from harness.replication.core import BLOCK, MAX_PUT, PAGE, Retention, Shadow, coalesce
from harness.replication.store import MemoryPageStore, StoreError

from ..conftest import has, problems

SIZE = 8 * 1024 * 1024 + 3 * PAGE  # not a multiple of the block or chunk size on purpose


# --- coalescing -------------------------------------------------------------------------------


def test_coalesce_merges_neighbours_up_to_4_mib() -> None:
    blocks = [(i * BLOCK, bytes([i % 251]) * BLOCK) for i in range(2048)]  # 8 MiB contiguous
    puts = coalesce(blocks)
    assert [(o, len(d)) for o, d in puts] == [(0, MAX_PUT), (MAX_PUT, MAX_PUT)]
    assert b"".join(d for _, d in puts) == b"".join(d for _, d in blocks)


def test_coalesce_keeps_gaps_and_alignment() -> None:
    puts = coalesce([(3 * BLOCK, b"b" * BLOCK), (0, b"a" * BLOCK), (BLOCK, b"c" * PAGE)])
    assert [(o, len(d)) for o, d in puts] == [(0, BLOCK + PAGE), (3 * BLOCK, BLOCK)]


@pytest.mark.parametrize("extent", [(100, b"x" * PAGE), (0, b"x" * 100), (0, b"")])
def test_coalesce_rejects_unaligned(extent: tuple[int, bytes]) -> None:
    with pytest.raises(ValueError, match="page-aligned"):
        coalesce([extent])


def test_coalesce_fills_small_gaps_from_the_shadow_only_when_asked() -> None:
    extents = [(0, b"a" * BLOCK), (2 * BLOCK, b"b" * BLOCK), (10 * BLOCK, b"c" * BLOCK)]
    held: list[tuple[int, int]] = []

    def fill(off: int, n: int) -> bytes:
        held.append((off, n))
        return b"s" * n

    assert len(list(core.coalesce_sorted(extents))) == 3
    puts = list(core.coalesce_sorted(extents, gap=BLOCK, fill=fill))
    assert [(o, len(d)) for o, d in puts] == [(0, 3 * BLOCK), (10 * BLOCK, BLOCK)]
    assert puts[0][1] == b"a" * BLOCK + b"s" * BLOCK + b"b" * BLOCK
    assert held == [(BLOCK, BLOCK)]  # the 7-block gap was too wide to fill
    with pytest.raises(ValueError, match="out of order"):
        list(core.coalesce_sorted(extents[::-1]))


def _scatter(image: Path) -> int:
    """Every other block of the first 4 MiB rewritten: many small neighbours-but-one."""
    fd = os.open(image, os.O_WRONLY)
    try:
        for b in range(0, 1024, 2):
            os.pwrite(fd, os.urandom(BLOCK), b * BLOCK)
    finally:
        os.close(fd)
    return 512 * BLOCK


def test_a_disk_behind_sends_fewer_requests_and_still_converges(tmp_path: Path) -> None:
    image, store, rep = _replicated(tmp_path)
    d = rep.disks["web1"][0]
    changed = _scatter(image)
    puts, sent = store.puts, store.bytes_put
    rep.delta_pass()
    assert store.bytes_put - sent == changed and store.puts - puts == 512  # keeping up: bytes
    assert d.filled_bytes == 0
    d.behind, d.put_rate = True, 100.0  # 512 requests would take 5 s: longer than the interval
    changed = _scatter(image)
    puts, sent = store.puts, store.bytes_put
    rep.delta_pass()
    assert store.puts - puts <= 2  # behind: requests
    assert d.filled_bytes == store.bytes_put - sent - changed > 0
    assert bytes(store.blobs["web1/data.img"]) == image.read_bytes()
    assert d.shadow.read(0, SIZE) == image.read_bytes()


def test_a_small_pass_of_a_disk_behind_sends_only_what_changed(tmp_path: Path) -> None:
    """Behind, but this pass would not outlast a point interval at the measured rate (say,
    the rest of a burst a slow pass missed): no gap filling."""
    image, store, rep = _replicated(tmp_path)
    d = rep.disks["web1"][0]
    d.behind, d.put_rate = True, 10_000.0  # 512 Put Pages: 0.05 s, far under the interval
    changed = _scatter(image)
    puts, sent = store.puts, store.bytes_put
    rep.delta_pass()
    assert store.bytes_put - sent == changed and store.puts - puts == 512
    assert d.filled_bytes == 0
    d.behind, d.put_rate = True, 100.0  # the same pass would take 5 s: fill gaps
    assert rep._fills_gaps(d, 512)


def test_behind_follows_how_long_passes_take(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
    rep = _replicator(tmp_path, image, MemoryPageStore(), crash=1)
    d = rep.disks["web1"][0]
    rep._update_behind(d, 5.0, 3)  # slow, but a few requests: the network, not requests
    assert not d.behind and d.put_rate is None
    rep._update_behind(d, 1.5, 1000)
    assert d.behind and d.put_rate == pytest.approx(1000 / 1.5)
    rep._update_behind(d, 0.7, 1000)  # between half and the whole interval: no change
    assert d.behind
    rep._update_behind(d, 0.4, 1000)
    assert not d.behind


def test_shadow_rejects_sizes_that_are_not_pages() -> None:
    with pytest.raises(ValueError, match="multiple of 512"):
        Shadow(1000)


# --- the property: one cycle makes the replica equal the source, sending only changed blocks --


def _replicator(
    tmp: Path,
    image: Path,
    store: MemoryPageStore,
    clock: Callable[[], float] = time.time,
    **policy: float,
) -> Replicator:
    cfg = Config(
        endpoint="memory",
        account="acct",
        key="",
        crash_consistent_s=policy.get("crash", 5),
        app_consistent_s=None,
        retention_s=policy.get("retention", 3600),
        rpo_threshold_s=30,
        hosts=(
            HostConfig(
                name="web1",
                group=None,
                flush_url=None,
                disks=(DiskConfig("data", SIZE, str(image), None),),
            ),
        ),
    )
    return Replicator(cfg, store, tmp / "state", freezer=NoFreezer(), clock=clock)


def _replicated(
    tmp: Path,
    store: MemoryPageStore | None = None,
    clock: Callable[[], float] = time.time,
    **policy: float,
) -> tuple[Path, MemoryPageStore, Replicator]:
    """A disk of random bytes, connected and with its first point taken."""
    image = tmp / "disk.img"
    with open(image, "wb") as f:
        f.write(os.urandom(SIZE))
    store = store or MemoryPageStore()
    rep = _replicator(tmp, image, store, clock, **policy)
    rep.connect()
    rep.point("host:web1", app=False)
    return image, store, rep


writes = st.lists(
    st.tuples(st.integers(0, SIZE - 1), st.integers(1, 3 * BLOCK), st.integers(0, 255)),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=writes, second=writes)
def test_one_cycle_makes_replica_equal_and_sends_only_changed_blocks(
    tmp_path_factory: pytest.TempPathFactory,
    first: list[tuple[int, int, int]],
    second: list[tuple[int, int, int]],
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    image = tmp / "disk.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
    store = MemoryPageStore()
    rep = _replicator(tmp, image, store)
    rep.connect()
    for batch in (first, second):
        before = image.read_bytes()
        fd = os.open(image, os.O_WRONLY)
        try:
            for off, ln, val in batch:
                os.pwrite(fd, bytes([val]) * min(ln, SIZE - off), off)
        finally:
            os.close(fd)
        after = image.read_bytes()
        changed_blocks = {
            b // BLOCK
            for b in range(0, SIZE, BLOCK)
            if before[b : b + BLOCK] != after[b : b + BLOCK]
        }
        sent_before = store.bytes_put
        (m,) = rep.point("host:web1", app=False)
        sent = store.bytes_put - sent_before
        assert bytes(store.blobs["web1/data.img"]) == after
        # Nothing outside the changed blocks is sent, and no changed block twice.
        assert sent <= sum(min(BLOCK, SIZE - b * BLOCK) for b in changed_blocks)
        assert sent >= len(changed_blocks) * PAGE
        snap = store.read("web1/data.img", 0, SIZE, m.disks[0].snapshot)
        assert core.hash_image(SIZE, lambda o, n, s=snap: s[o : o + n])[0] == m.disks[0].hash


def test_initial_replication_sends_only_non_zero_blocks(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
        f.seek(5 * BLOCK + 7)
        f.write(b"hello")
    store = MemoryPageStore()
    rep = _replicator(tmp_path, image, store)
    rep.connect()
    rep.point("host:web1", app=False)
    assert store.bytes_put == BLOCK
    assert rep.status()["latest"]["web1"]["seq"] == 1


def test_failed_puts_are_resynced_by_comparison_not_full_copy(tmp_path: Path) -> None:
    image, store, rep = _replicated(tmp_path)
    fd = os.open(image, os.O_WRONLY)
    os.pwrite(fd, os.urandom(64 * BLOCK), 0)
    os.close(fd)
    store.fail_after = store.puts  # the tunnel goes away
    with pytest.raises(Exception, match="injected"):
        rep.point("host:web1", app=False)
    assert rep.disks["web1"][0].uncertain == [(0, 64 * BLOCK)]
    store.fail_after = None
    before = store.bytes_put
    rep.step()  # resync of the uncertain range, then the due point
    assert bytes(store.blobs["web1/data.img"]) == image.read_bytes()
    assert store.bytes_put - before <= 64 * BLOCK


def test_restart_finds_points_and_removes_orphan_snapshots(tmp_path: Path) -> None:
    image, store, _ = _replicated(tmp_path)
    orphan = store.snapshot("web1/data.img")  # as if killed between snapshot and manifest
    again = _replicator(tmp_path, image, store)
    again.connect()
    assert orphan not in store.snapshots("web1/data.img")
    assert again.seq["web1"] == 1
    sent = store.bytes_put
    again.point("host:web1", app=False)
    assert store.bytes_put == sent  # the saved shadow knew everything was sent


def test_corruption_is_repaired_by_a_full_resync(tmp_path: Path) -> None:
    image, store, rep = _replicated(tmp_path)
    store.blobs["web1/data.img"][BLOCK : BLOCK + 10] = b"x" * 10
    d = rep.disks["web1"][0]
    d.uncertain = [(0, SIZE)]
    before = store.bytes_put
    rep.resync(d)
    assert store.blobs["web1/data.img"] == bytearray(image.read_bytes())
    assert store.bytes_put - before == BLOCK


def _host(tmp: Path, name: str, group: str | None) -> HostConfig:
    """A host with one data disk of random bytes."""
    image = tmp / f"{name}.img"
    with open(image, "wb") as f:
        f.write(os.urandom(SIZE))
    disk = DiskConfig("data", SIZE, str(image), None)
    return HostConfig(name=name, group=group, flush_url=None, disks=(disk,))


def test_a_replication_group_gets_points_at_one_instant(tmp_path: Path) -> None:
    hosts = (_host(tmp_path, "sharepoint", "apps"), _host(tmp_path, "crm", "apps"))
    cfg = Config("memory", "a", "", 5, None, 3600, 30, (*hosts, _host(tmp_path, "web1", None)))
    store = MemoryPageStore()
    ticks = iter(range(1000, 2000))
    rep = Replicator(cfg, store, tmp_path / "state", freezer=NoFreezer(), clock=lambda: next(ticks))
    rep.connect()
    assert rep.groups == {"apps": ("sharepoint", "crm"), "host:web1": ("web1",)}
    apps = rep.point("apps", app=False)
    assert [m.host for m in apps] == ["sharepoint", "crm"]
    assert len({m.taken_at for m in apps}) == 1 and {m.group for m in apps} == {"apps"}
    assert store.manifests("web1/") == []  # not in the group: not part of its point


def test_a_replication_group_keeps_the_same_points_when_pruned(tmp_path: Path) -> None:
    hosts = (_host(tmp_path, "sharepoint", "apps"), _host(tmp_path, "crm", "apps"))
    cfg = Config("memory", "a", "", 1, None, 20, 30, hosts)
    store = MemoryPageStore()
    # Every read of the clock moves it on, by uneven steps: pruning each member at its own
    # instant would let a point expire for one member and not for the other.
    rng, now = random.Random(7), [1000.0]

    def clock() -> float:
        now[0] += rng.uniform(0.05, 0.6)
        return now[0]

    rep = Replicator(cfg, store, tmp_path / "state", freezer=NoFreezer(), clock=clock)
    rep.connect()
    for _ in range(60):
        rep.point("apps", app=False)
        seqs = [
            [core.Manifest.from_bytes(store.get_manifest(n)).seq for n in store.manifests(f"{h}/")]
            for h in ("sharepoint", "crm")
        ]
        assert seqs[0] == seqs[1]
    assert len(seqs[0]) < 60  # pruning ran


# --- manifests, pruning, health ---------------------------------------------------------------


def test_manifest_round_trip() -> None:
    m = core.Manifest(
        host="h",
        seq=3,
        type="app-consistent",
        taken_at=1.5,
        published_at=2.0,
        freeze_ms=3.0,
        group="g",
        disks=(core.DiskPoint("data", 1024, "snap", "ab", "00" * 32),),
    )
    assert core.Manifest.from_bytes(m.to_bytes()) == m
    assert "chunk_hashes" not in m.summary()["disks"][0]


def test_retention_keeps_recent_all_and_thins_older_per_bucket() -> None:
    # crash every 5 s: scale 1/60, so 2 h -> 120 s, 1 h -> 60 s; retention 1 day -> 1440 s
    r = Retention(retention_s=1440, crash_consistent_s=5)
    now = 10_000.0
    points = [(i, now - 5 * i, "crash-consistent") for i in range(400)]  # 2000 s of points
    keep = r.keep(points, now)
    ages = sorted(now - t for s, t, _ in points if s in keep)
    assert {s for s, t, _ in points if now - t <= 120} <= keep
    assert max(ages) <= 1440
    older = [a for a in ages if a > 120]
    assert older and all(b - a >= 55 for a, b in itertools.pairwise(older))


def test_recent_window_never_outlasts_the_retention() -> None:
    # crash every 1 s: 2 h scaled is 24 s, longer than this drill's 10 s retention
    r = Retention(retention_s=10, crash_consistent_s=1)
    now = 1000.0
    points = [(i, now - i, "crash-consistent") for i in range(30)]
    kept = r.keep(points, now)
    assert 0 in kept and max(now - t for s, t, _ in points if s in kept) <= 10


class _FlakySnapshotDeletes(MemoryPageStore):
    """A store whose next snapshot delete fails (a partition in the middle of a prune)."""

    fail_next = False

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        if self.fail_next:
            self.fail_next = False
            raise StoreError("deleting snapshot: connection reset")
        super().delete_snapshot(name, snapshot)


def test_a_prune_cut_short_never_stops_pruning(tmp_path: Path) -> None:
    clock = [1000.0]
    store = _FlakySnapshotDeletes()
    _, _, rep = _replicated(tmp_path, store, lambda: clock[0], crash=1, retention=30)
    for _ in range(39):  # 40 points, one a second
        clock[0] += 1
        rep.point("host:web1", app=False)
    steady = len(store.manifests("web1/"))
    clock[0] += 1
    store.fail_next = True  # the manifest goes, its snapshot stays
    with pytest.raises(StoreError):
        rep.point("host:web1", app=False)
    for _ in range(5):
        clock[0] += 1
        rep.point("host:web1", app=False)  # each of these failed for good before the fix
    manifests = [core.Manifest.from_bytes(store.get_manifest(n)) for n in store.manifests("web1/")]
    referenced = {dp.snapshot for m in manifests for dp in m.disks}
    assert set(store.snapshots("web1/data.img")) == referenced  # the orphan went too
    assert len(manifests) <= steady + 1


def test_retention_zero_keeps_only_the_newest() -> None:
    r = Retention(retention_s=0, crash_consistent_s=5)
    assert r.keep([(1, 1.0, "crash-consistent"), (2, 2.0, "crash-consistent")], 3.0) == {2}


def test_retention_buckets_follow_the_asr_table() -> None:
    day = 86400 / 60  # with 5 s points, a scaled day is 1440 s
    assert Retention(day, 5).bucket_s(200) == 60
    assert Retention(5 * day, 5).bucket_s(200) == 120
    assert Retention(10 * day, 5).bucket_s(200) == 120
    assert Retention(10 * day, 5).bucket_s(8 * day) == 240


@pytest.mark.parametrize(
    ("kw", "state"),
    [
        ({"has_point": False, "resyncing": False, "rpo_s": None}, "InitialReplication"),
        ({"has_point": True, "resyncing": False, "rpo_s": 3.0}, "Protected"),
        ({"has_point": True, "resyncing": True, "rpo_s": 3.0}, "Resynchronizing"),
        ({"has_point": True, "resyncing": False, "rpo_s": 31.0}, "Critical"),
    ],
)
def test_health_states(kw: dict[str, object], state: str) -> None:
    assert core.health(threshold_s=30, **kw)[0] == state  # type: ignore[arg-type]


# --- topology rules for replication -----------------------------------------------------------


def _minimal() -> Any:
    import yaml

    from harness import lab

    data: Any = yaml.safe_load((lab.TOPOLOGY_DIR / "minimal.yaml").read_text())
    return data


def test_process_server_must_sit_on_a_free_primary_address() -> None:
    data = _minimal()
    data["protection"]["process_server"] = {"subnet": "servers", "address": "10.64.1.10"}
    assert has(problems(data), "protection.process_server.address", "already used")
    data["protection"]["process_server"] = {"subnet": "frontend", "address": "10.64.2.9"}
    assert any(path == "protection.process_server.subnet" for path, _ in problems(data))


def test_protected_hosts_need_a_disk() -> None:
    data = _minimal()
    data["sites"]["onprem"]["hosts"]["web1"]["disks"] = []
    assert any("no data disk" in m for _, m in problems(data))
