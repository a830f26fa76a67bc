"""Site Recovery replication against real containers: disks, replicator, Azurite, the tunnel.

One lab of the ``minimal`` topology with a faster policy (points every 2 s, RPO threshold 8 s)
so that faults show within seconds. Every test starts from a Protected disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from harness import faults, lab, state
from harness import topology as topo_mod
from harness.components import replicator, storage
from harness.replication import control, core
from harness.runtime import DockerRuntime

from .conftest import drill_cli, unique_name, wait_for

pytestmark = pytest.mark.integration

POLICY = {"crash_consistent_s": 2, "app_consistent_s": 6, "retention_s": 600, "rpo_threshold_s": 8}


@pytest.fixture(scope="module")
def name() -> Iterator[str]:
    data = yaml.safe_load((lab.TOPOLOGY_DIR / "minimal.yaml").read_text())
    data["protection"]["policy"] = POLICY
    topo = topo_mod.parse(data, "minimal+fast-policy")
    lab_name = unique_name("repl")
    lab.up(topo, lab_name)
    try:
        yield lab_name
    finally:
        lab.down(lab_name)


def app_url(lab_name: str) -> str:
    ref = lab.open_lab(lab_name)
    return f"http://{ref.plan.hosts['web1'].address}"


def put_document(lab_name: str, body: bytes) -> dict[str, Any]:
    r = requests.post(
        f"{app_url(lab_name)}/documents",
        data=body,
        headers={"Content-Type": "application/octet-stream"},
        timeout=10,
    )
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


def disk_status(lab_name: str) -> control.DiskHealth:
    (d,) = control.status(lab_name).disks
    return d


def point_after(lab_name: str, t: float) -> dict[str, Any]:
    """Wait for a point of web1 taken after ``t``; its summary."""

    def newer() -> dict[str, Any] | None:
        latest = disk_status(lab_name).latest_point
        return latest if latest and latest["taken_at"] > t else None

    return wait_for(f"a recovery point taken after {t:.1f}", newer)


def protected(lab_name: str) -> control.DiskHealth:
    return wait_for(
        "web1/data Protected",
        lambda: (d := disk_status(lab_name)).state == "Protected" and d.last_error is None and d,
    )


@pytest.fixture()
def ready(name: str) -> str:
    protected(name)
    return name


def mounted_documents(image: Path) -> dict[str, bytes]:
    """The bodies of the app's items in a restored disk image (mounted read-write: ours)."""
    mnt = image.with_suffix(".mnt")
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True, timeout=30)
    try:
        out = {}
        for item in sorted((mnt / "documents").glob("*.item")):
            header, _, body = item.read_bytes().partition(b"\n")
            out[json.loads(header)["id"]] = body
        return out
    finally:
        subprocess.run(["umount", str(mnt)], check=True, timeout=30)
        mnt.rmdir()


# --- end to end -------------------------------------------------------------------------------


def test_documents_written_through_the_app_are_in_the_restored_point(
    ready: str, tmp_path: Path
) -> None:
    docs = [put_document(ready, os.urandom(50_000 + i)) for i in range(5)]
    written_at = time.time()
    point = point_after(ready, written_at)
    image = tmp_path / "web1-data.img"
    res = control.restore(ready, "web1", point["seq"], image)
    assert res.point == point["seq"] and image.stat().st_size == res.size
    found = mounted_documents(image)
    for doc in docs:
        assert hashlib.sha256(found[doc["id"]]).hexdigest() == doc["sha256"]
    assert control.verify(ready, "web1", point["seq"]).ok


def test_points_have_both_types_and_recorded_freezes(ready: str) -> None:
    def both() -> list[core.Manifest] | None:
        pts = control.points(ready, "web1")
        return pts if {p.type for p in pts} == {"crash-consistent", "app-consistent"} else None

    pts = wait_for("crash- and app-consistent points", both)
    assert [p.seq for p in pts] == sorted(p.seq for p in pts)
    assert all(p.freeze_ms > 0 and p.disks[0].size == 64 * 1024**2 for p in pts)
    st = control.status(ready)
    assert st.healthy and st.freeze_ms_max is not None


def test_cli_status_points_verify_and_bad_input(ready: str, tmp_path: Path) -> None:
    res = drill_cli("replication", "status", "--name", ready, "--json")
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    assert st["disks"][0]["state"] == "Protected" and st["disks"][0]["rpo_s"] is not None
    res = drill_cli("replication", "points", "web1", "--name", ready, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)
    assert drill_cli("replication", "verify", "web1", "--name", ready).returncode == 0
    for args in (
        ("points", "ghost"),
        ("verify", "web1", "--point", "999999"),
        ("verify", "web1", "--point", "nope"),
        ("restore", "ghost", "--point", "latest", "--to", str(tmp_path / "x.img")),
    ):
        res = drill_cli("replication", *args, "--name", ready)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "error" in res.stderr
    existing = tmp_path / "keep.img"
    existing.write_bytes(b"precious")
    res = drill_cli(
        "replication",
        "restore",
        "web1",
        "--point",
        "latest",
        "--to",
        str(existing),
        "--name",
        ready,
    )
    assert res.returncode == 2 and "exists" in res.stderr
    assert existing.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.img"]


def test_disk_sizes_not_multiple_of_512_are_rejected() -> None:
    data = yaml.safe_load((lab.TOPOLOGY_DIR / "minimal.yaml").read_text())
    data["sites"]["onprem"]["hosts"]["web1"]["disks"] = [{"name": "data", "size": 64 * 2**20 + 100}]
    path = Path(state.state_root()) / f"bad-{unique_name()}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    try:
        res = drill_cli("up", str(path), "--name", unique_name("bad"))
        assert res.returncode == 2 and "multiple of 512" in res.stderr
    finally:
        path.unlink()


# --- faults -----------------------------------------------------------------------------------


def changed_bytes(a: Path, b: Path) -> int:
    """Bytes in the 4 KiB blocks where two images differ."""
    x, y = a.read_bytes(), b.read_bytes()
    step = core.BLOCK
    return sum(step for i in range(0, len(x), step) if x[i : i + step] != y[i : i + step])


def test_partition_turns_critical_and_catches_up_by_deltas(ready: str, tmp_path: Path) -> None:
    p0 = point_after(ready, time.time())
    before = disk_status(ready)
    rec = faults.inject(ready, "partition")
    try:
        wait_for("RPO alert (Critical)", lambda: disk_status(ready).state == "Critical")
        for _ in range(8):  # 2 MiB of documents while partitioned
            put_document(ready, os.urandom(256 * 1024))
        assert disk_status(ready).state == "Critical"
    finally:
        faults.heal(ready, rec.id)
    p1 = point_after(ready, time.time())
    after = protected(ready)
    sent = (after.bytes_sent - before.bytes_sent) + (
        after.resync_bytes_sent - before.resync_bytes_sent
    )
    # What changed between the last point before and the first after: the documents plus the
    # filesystem's metadata and journal blocks. Deltas only: no more than that was sent.
    images = []
    for p in (p0, p1):
        images.append(tmp_path / f"p{p['seq']}.img")
        control.restore(ready, "web1", p["seq"], images[-1])
    changed = changed_bytes(*images)
    assert changed >= 8 * 256 * 1024
    assert abs(sent - changed) <= 64 * 1024, (sent, changed)
    assert sent < 64 * 1024**2 // 8  # nowhere near a copy of the 64 MiB disk
    assert control.verify(ready, "web1").ok


def test_azurite_restart_loses_nothing(ready: str, rt: DockerRuntime) -> None:
    ref = lab.open_lab(ready)
    before = control.points(ready, "web1")
    hp = ref.plan.hosts["storage"]
    put_document(ready, os.urandom(300_000))
    rt.stop(hp.container, timeout_s=10)
    doc = put_document(ready, os.urandom(300_000))  # written while the account is down
    rt.start(hp.container)
    storage.configure(rt, ref.plan, hp)  # routes live in the container's namespace
    restarted = time.time()
    point = point_after(ready, restarted)
    protected(ready)
    after = {p.seq: p for p in control.points(ready, "web1")}
    # Retention thins points older than 2 h scaled (48 s here); none younger may be gone.
    window = 2 * 3600 * POLICY["crash_consistent_s"] / 300
    young = [p for p in before if time.time() - p.taken_at < window - 1]
    assert young and all(p.seq in after for p in young)
    assert control.verify(ready, "web1", young[-1].seq).ok
    assert control.verify(ready, "web1", point["seq"]).ok
    assert doc["id"]


def test_sigkill_mid_cycle_leaves_no_torn_point(
    ready: str, rt: DockerRuntime, tmp_path: Path
) -> None:
    ref = lab.open_lab(ready)
    name = replicator.container(ref.plan)
    for i in range(3):
        put_document(ready, os.urandom(2 * 1024 * 1024))  # a cycle with something to send
        time.sleep(0.3 * i)
        rt.api.kill(name, signal="SIGKILL")
        rt.start(name)
    restarted = time.time()
    point_after(ready, restarted)
    protected(ready)
    # Compared at rest: a running replicator may have snapshotted a point it has not yet
    # published. SIGTERM lets it finish its cycle; the killed cycles' leftovers stay for us.
    rt.stop(name, timeout_s=20)
    store = control.open_store(ref)
    pts = control.points(ready, "web1")
    referenced = {p.disks[0].snapshot for p in pts}
    assert set(store.snapshots(core.head_blob("web1", "data"))) == referenced  # no orphans
    rt.start(name)
    for p in pts[-6:]:
        assert control.verify(ready, "web1", p.seq).ok, p.seq
    doc = put_document(ready, b"after the kill")
    point = point_after(ready, time.time())
    image = tmp_path / "after-kill.img"
    control.restore(ready, "web1", point["seq"], image)
    assert mounted_documents(image)[doc["id"]] == b"after the kill"


def test_corrupted_replica_is_detected_and_repaired_by_resync(ready: str) -> None:
    ref = lab.open_lab(ready)
    store = control.open_store(ref)
    blob = core.head_blob("web1", "data")
    offset = 40 * 1024 * 1024 + 512 * 1024  # far from what the filesystem writes
    good = store.read(blob, offset, 4096)
    store.put_page(blob, offset, b"\xde\xad" * 2048)  # behind the replicator's back
    corrupted_at = time.time()
    point = point_after(ready, corrupted_at)
    bad = control.verify(ready, "web1", point["seq"])
    assert not bad.ok and bad.disks[0].bad_chunks == [offset // core.CHUNK]
    res = drill_cli("replication", "verify", "web1", "--point", str(point["seq"]), "--name", ready)
    assert res.returncode == 1
    result = control.resync(ready, "web1")
    (event,) = result["events"]
    assert event["differing_bytes"] == 4096 and event["sent_bytes"] == 4096
    assert store.read(blob, offset, 4096) == good
    repaired = point_after(ready, time.time())
    assert control.verify(ready, "web1", repaired["seq"]).ok


def test_down_releases_disks(rt: DockerRuntime) -> None:
    lab_name = unique_name("disk")
    lab.up("minimal", lab_name)
    img = str(state.lab_dir(lab_name) / "disks" / "web1" / "data.img")
    assert img in subprocess.run(["losetup", "-l"], capture_output=True, text=True).stdout
    lab.down(lab_name)
    out = subprocess.run(["losetup", "-l"], capture_output=True, text=True).stdout
    assert img not in out
    assert str(state.lab_dir(lab_name)) not in Path("/proc/self/mounts").read_text()
