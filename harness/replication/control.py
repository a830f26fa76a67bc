"""Replication as the harness sees it: health, recovery points, verify, restore and resync.

Status comes from the replicator's status file (``<lab state>/replication/state/status.json``);
RPO is computed here, at read time, as the age of the newest published point, so it keeps
growing when the replicator or the tunnel is down. Everything about points reads the storage
account directly from the harness host (it has an address on the recovery site's bridge), so
restore and verify need nothing on-prem: an unplanned failover can use them with the primary
site gone.

Point ids are the per-host sequence numbers in the manifests; ``latest`` names the newest.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.components import replicator
from harness.errors import HarnessError, UsageError
from harness.lab import LabRef, open_lab
from harness.replication import core
from harness.replication.core import CHUNK, Manifest
from harness.replication.store import AzurePageStore, NotFound, PageStore, StoreError, iter_pieces
from harness.runtime import Runtime

RESYNC_TIMEOUT_S = 120.0
SPARSE = 64 * 1024
"""Restored images leave all-zero runs of this size as holes."""


@dataclass(frozen=True)
class DiskHealth:
    """One protected disk's replication health, as ASR shows it."""

    host: str
    disk: str
    size: int
    state: str  # InitialReplication | Protected | Resynchronizing | Critical
    rpo_s: float | None
    rpo_threshold_s: float
    rpo_alert: bool
    backlog_bytes: int
    bytes_sent: int
    resync_bytes_sent: int
    latest_point: dict[str, Any] | None
    last_error: str | None


@dataclass(frozen=True)
class ReplicationStatus:
    """Every protected disk of a lab, and the replicator itself."""

    lab: str
    replicator: str  # running | stale | no status
    disks: list[DiskHealth] = field(default_factory=list)
    freeze_ms_median: float | None = None
    freeze_ms_max: float | None = None

    @property
    def healthy(self) -> bool:
        return self.replicator == "running" and all(d.state == "Protected" for d in self.disks)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


def _protection(ref: LabRef) -> Any:
    p = ref.plan.topology.protection
    if p is None or p.process_server is None:
        raise UsageError(f"lab {ref.plan.lab!r} replicates nothing (no protection.process_server)")
    return p


def status(
    lab: str, *, runtime: Runtime | None = None, now: float | None = None
) -> ReplicationStatus:
    """Health, RPO and backlog of every protected disk; UsageError if the lab is not up."""
    ref = open_lab(lab, runtime=runtime)
    p = _protection(ref)
    st = replicator.read_status(lab) or {}
    now = time.time() if now is None else now
    updated = float(st.get("updated_at", 0))
    agent = (
        "no status"
        if not st
        else ("running" if now - updated <= replicator.STATUS_STALE_S else "stale")
    )
    threshold = float(p.policy.rpo_threshold_s)
    disks = []
    for host in p.hosts:
        latest = (st.get("latest") or {}).get(host)
        for d in ref.plan.hosts[host].host.disks:
            ds = (st.get("disks") or {}).get(f"{host}/{d.name}", {})
            rpo = None if latest is None else max(0.0, now - float(latest["taken_at"]))
            state, alert = core.health(
                has_point=latest is not None,
                resyncing=bool(ds.get("resyncing")),
                rpo_s=rpo,
                threshold_s=threshold,
            )
            disks.append(
                DiskHealth(
                    host=host,
                    disk=d.name,
                    size=d.size,
                    state=state,
                    rpo_s=None if rpo is None else round(rpo, 3),
                    rpo_threshold_s=threshold,
                    rpo_alert=alert,
                    backlog_bytes=int(ds.get("backlog_bytes", 0)),
                    bytes_sent=int(ds.get("bytes_sent", 0)),
                    resync_bytes_sent=int(ds.get("resync_bytes_sent", 0)),
                    latest_point=latest,
                    last_error=ds.get("last_error"),
                )
            )
    freezes = [float(f["ms"]) for f in st.get("freezes") or []]
    return ReplicationStatus(
        lab=lab,
        replicator=agent,
        disks=disks,
        freeze_ms_median=round(statistics.median(freezes), 3) if freezes else None,
        freeze_ms_max=round(max(freezes), 3) if freezes else None,
    )


# --- the storage account, from the harness host -----------------------------------------------


def open_store(ref: LabRef) -> AzurePageStore:
    """The lab's storage account, reached directly on the recovery site's bridge."""
    _protection(ref)
    url, account, key = replicator.endpoint(ref.plan)
    return AzurePageStore(url, account, key)


def _protected_host(ref: LabRef, host: str) -> None:
    p = _protection(ref)
    if host not in p.hosts:
        known = ", ".join(p.hosts)
        raise UsageError(f"{host!r} is not a protected host of lab {ref.plan.lab!r} ({known})")


def list_points(store: PageStore, host: str) -> list[Manifest]:
    """Every published point of a host, oldest first."""
    out = []
    try:
        names = store.manifests(f"{host}/")
    except NotFound:  # the replicator has not made its containers yet
        return []
    for name in names:
        with contextlib.suppress(NotFound):  # pruned between listing and reading
            out.append(Manifest.from_bytes(store.get_manifest(name)))
    return sorted(out, key=lambda m: m.seq)


def points(lab: str, host: str, *, runtime: Runtime | None = None) -> list[Manifest]:
    """The recovery points of ``host``, oldest first; UsageError for an unknown host."""
    ref = open_lab(lab, runtime=runtime)
    _protected_host(ref, host)
    try:
        return list_points(open_store(ref), host)
    except StoreError as exc:
        raise HarnessError(f"listing the points of {host}: {exc}") from exc


def find_point(store: PageStore, host: str, point: str | int | None) -> Manifest:
    """The point called ``point`` (a sequence number, or None/``latest``); UsageError if none."""
    if point is None or point == "latest":
        found = list_points(store, host)
        if not found:
            raise UsageError(f"{host} has no recovery point yet")
        return found[-1]
    try:
        seq = int(point)
    except ValueError:
        raise UsageError(f"a point id is a sequence number or 'latest', not {point!r}") from None
    try:
        return Manifest.from_bytes(store.get_manifest(core.manifest_blob(host, seq)))
    except NotFound:
        raise UsageError(
            f"{host} has no recovery point {seq} (see `drill replication points {host}`)"
        ) from None


def _pieces(store: PageStore, blob: str, dp: core.DiskPoint) -> Iterator[tuple[int, bytes]]:
    """The snapshot's bytes in 4 MiB pieces; pieces with no written page are not fetched."""
    valid = store.valid_ranges(blob, dp.snapshot)
    for off, ln in iter_pieces(0, dp.size):
        if any(o < off + ln and off < o + n for o, n in valid):
            yield off, store.read(blob, off, ln, dp.snapshot)
        else:
            yield off, bytes(ln)


@dataclass(frozen=True)
class DiskCheck:
    """One disk of a verified point."""

    disk: str
    ok: bool
    expected: str
    actual: str
    bad_chunks: list[int]  # MiB-sized chunks whose hash differs


@dataclass(frozen=True)
class VerifyResult:
    """Whether the replica at a point equals the source hash recorded in its manifest."""

    host: str
    point: int
    type: str
    taken_at: float
    disks: list[DiskCheck]

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.disks)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _check_disk(store: PageStore, host: str, dp: core.DiskPoint) -> DiskCheck:
    hashes: list[bytes] = []
    for _, data in _pieces(store, core.head_blob(host, dp.name), dp):
        hashes += [core.chunk_hash(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    actual = core.disk_hash(dp.size, hashes)
    expected = dp.chunk_list()
    bad = [i for i, (a, b) in enumerate(zip(hashes, expected, strict=False)) if a != b]
    return DiskCheck(dp.name, actual == dp.hash, dp.hash, actual, bad)


def verify(
    lab: str, host: str, point: str | int | None = None, *, runtime: Runtime | None = None
) -> VerifyResult:
    """Read the replica at ``point`` (default: latest) and compare it with its manifest."""
    ref = open_lab(lab, runtime=runtime)
    _protected_host(ref, host)
    store = open_store(ref)
    try:
        m = find_point(store, host, point)
        checks = [_check_disk(store, host, dp) for dp in m.disks]
    except StoreError as exc:
        raise HarnessError(f"verifying {host}: {exc}") from exc
    return VerifyResult(host, m.seq, m.type, m.taken_at, checks)


@dataclass(frozen=True)
class RestoreResult:
    """A disk image written from a recovery point."""

    host: str
    disk: str
    point: int
    type: str
    taken_at: float
    path: str
    size: int
    hash: str


def restore(
    lab: str,
    host: str,
    point: str | int | None,
    to: str | Path,
    *,
    disk: str | None = None,
    runtime: Runtime | None = None,
) -> RestoreResult:
    """Write ``host``'s disk at ``point`` to the new file ``to`` (sparse), checked by its hash.

    UsageError, with nothing written, if ``to`` exists or its folder does not, or the host,
    disk or point is unknown. HarnessError if the replica does not match its recorded hash
    (then nothing is left at ``to``).
    """
    target = Path(to)
    if target.exists() or target.is_symlink():
        raise UsageError(f"{target} exists; restore never overwrites (choose another --to)")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a folder")
    ref = open_lab(lab, runtime=runtime)
    _protected_host(ref, host)
    names = [d.name for d in ref.plan.hosts[host].host.disks]
    if disk is None:
        if len(names) != 1:
            raise UsageError(f"{host} has disks {', '.join(names)}: choose one with --disk")
        disk = names[0]
    if disk not in names:
        raise UsageError(f"{host} has no disk {disk!r} (disks: {', '.join(names)})")
    store = open_store(ref)
    try:
        m = find_point(store, host, point)
        dp = m.disk(disk)
        tmp = target.parent / f".{target.name}.restore-{secrets.token_hex(4)}"
        try:
            actual = _write_image(store, core.head_blob(host, disk), dp, tmp)
            if actual != dp.hash:
                raise HarnessError(
                    f"the replica of {host}/{disk} at point {m.seq} does not match its recorded "
                    f"hash ({actual[:12]} != {dp.hash[:12]}); run `drill replication verify`"
                )
            try:
                os.link(tmp, target)  # never replaces: fails if the target appeared meanwhile
            except FileExistsError:
                raise UsageError(f"{target} appeared meanwhile; nothing overwritten") from None
        finally:
            tmp.unlink(missing_ok=True)
    except StoreError as exc:
        raise HarnessError(f"restoring {host}/{disk}: {exc}") from exc
    return RestoreResult(host, disk, m.seq, m.type, m.taken_at, str(target), dp.size, dp.hash)


def _write_image(store: PageStore, blob: str, dp: core.DiskPoint, path: Path) -> str:
    """Write the snapshot to a new sparse file; the disk hash of what was written."""
    hashes: list[bytes] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, dp.size)
        for off, data in _pieces(store, blob, dp):
            for i in range(0, len(data), SPARSE):  # leave zero runs as holes
                part = data[i : i + SPARSE]
                if part.count(0) != len(part):
                    os.pwrite(fd, part, off + i)
            hashes += [core.chunk_hash(data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
        os.fsync(fd)
    finally:
        os.close(fd)
    return core.disk_hash(dp.size, hashes)


def resync(
    lab: str, host: str, *, timeout_s: float = RESYNC_TIMEOUT_S, runtime: Runtime | None = None
) -> dict[str, Any]:
    """Ask the replicator to compare ``host``'s replicas with what it sent and repair them.

    Waits until it reports the request done; returns its resync events (bytes compared, found
    different, sent). HarnessError if it does not finish within ``timeout_s``.
    """
    ref = open_lab(lab, runtime=runtime)
    _protected_host(ref, host)
    token = secrets.token_hex(6)
    started = time.time()
    req = replicator.state_dir(lab) / "requests" / f"resync-{host}"
    req.parent.mkdir(parents=True, exist_ok=True)
    tmp = req.with_name(f".{req.name}.{token}")
    tmp.write_text(token)
    os.replace(tmp, req)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = replicator.read_status(lab) or {}
        if (st.get("resync_done") or {}).get(host) == token:
            events = [
                e
                for e in read_events(lab)
                if e.get("kind") == "resync" and e.get("host") == host and e["t"] >= started
            ]
            return {"host": host, "events": events}
        time.sleep(0.2)
    raise HarnessError(f"the replicator did not finish resyncing {host} within {timeout_s:.0f}s")


def read_events(lab: str) -> list[dict[str, Any]]:
    """The replicator's cycle journal (``events.jsonl``), oldest first."""
    import json

    path = replicator.state_dir(lab) / "events.jsonl"
    out = []
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out
