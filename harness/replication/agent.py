"""The replicator: ASR's process server, replicating every protected disk to a page blob.

Runs as ``python3 -m harness.replication.agent CONFIG`` in the ``replicator`` container (or in
process, in unit tests, with a ``MemoryPageStore``). Per disk it keeps a shadow (what the head
blob holds, see ``core``) and loops:

    delta pass   scan the image against the shadow, upload changed blocks (no freeze); this is
                 also the initial replication, which sends only non-zero blocks
    point        for one replication group at a time, when its crash-consistent (every N s) or
                 app-consistent (every M s) point is due: a delta pass; for app-consistent
                 points, ask each app to flush (POST /admin/flush); freeze every member's
                 filesystem (FIFREEZE), capture the changed blocks, thaw (the freeze time is
                 recorded); upload the capture; snapshot every blob; then publish one manifest
                 per host. A point exists only once its manifest does, and a manifest is
                 written only after every Put Page and snapshot it needs succeeded.
    prune        drop points the retention schedule no longer keeps: manifest first, then
                 the snapshot, so a crash in between leaves an orphan snapshot, never a point
                 without data; orphans are removed at start.
    resync       the head blob may differ from the shadow only where a Put Page's outcome is
                 unknown (failed, or in flight when the process died): those ranges are kept
                 in ``intent.json`` before every upload and cleared after. After any
                 interruption they are read back from the blob and compared, block by block;
                 only blocks that differ are sent. A requested resync compares the whole blob.

State (in STATE_DIR, surviving SIGKILL): ``shadow/<host>/<disk>.img``, ``intent.json``,
``status.json`` (rewritten atomically every loop; the harness reads it), ``events.jsonl``
(one line per cycle) and ``requests/resync-<host>`` (written by the harness).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.replication import core
from harness.replication.core import BLOCK, Extent, Manifest, Retention
from harness.replication.store import NotFound, PageStore, StoreError, iter_pieces

log = logging.getLogger("drill.replicator")

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
UPLOAD_WORKERS = 8
"""Put Pages in flight at once: scattered 4 KiB changes are bound by requests, not bytes."""
IN_FLIGHT_BYTES = 12 * 1024**2
"""Bytes in flight at once: three 4 MiB Put Pages keep the tunnel busy; 8 MiB measured slower
and 20 MiB not clearly faster (bench/RESULTS.md), while holding more memory."""
INTENT_WINDOW = 64 * 1024**2
"""Ranges are marked uncertain (``intent.json``, fsynced) this much ahead of the uploads."""
REQUEST_BOUND_PUTS = 256
"""A pass that sends this many Put Pages and still misses a point interval is request-bound."""
GAP_FILL = 64 * 1024
"""When a disk falls behind, changed blocks at most this far apart go in one Put Page. A
request costs about as much CPU (SDK, tunnel, Azurite) as 64 KiB of payload does here, so
scattered writes are sent faster as fewer, larger requests; when keeping up, only changed
blocks are sent (bytes over the tunnel are what an owner pays for)."""
BACKOFF_MAX_S = 2.0
"""Retries come at most this far apart: a healed tunnel is used again within seconds."""


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskConfig:
    """One protected disk as the replicator sees it."""

    name: str
    size: int
    image: str  # path of the raw image (read-only)
    mount: str | None  # where its filesystem is mounted (for FIFREEZE); None: no freeze


@dataclass(frozen=True)
class HostConfig:
    """One protected host."""

    name: str
    group: str | None
    flush_url: str | None
    disks: tuple[DiskConfig, ...]


@dataclass(frozen=True)
class Config:
    """What the harness writes to the replicator's config file."""

    endpoint: str
    account: str
    key: str
    crash_consistent_s: float
    app_consistent_s: float | None
    retention_s: float
    rpo_threshold_s: float
    hosts: tuple[HostConfig, ...]
    routes: tuple[tuple[str, str], ...] = ()  # (subnet, via): set at start, before any request
    tick_s: float = 0.25
    delta_interval_s: float = 1.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        hosts = tuple(
            HostConfig(
                name=h["name"],
                group=h.get("group"),
                flush_url=h.get("flush_url"),
                disks=tuple(DiskConfig(**d) for d in h["disks"]),
            )
            for h in data["hosts"]
        )
        routes = tuple((r["subnet"], r["via"]) for r in data.get("routes", ()))
        return cls(**{**data, "hosts": hosts, "routes": routes})

    def groups(self) -> dict[str, tuple[str, ...]]:
        """Freeze sets: each replication group, and every ungrouped host on its own."""
        out: dict[str, list[str]] = {}
        for h in self.hosts:
            out.setdefault(h.group or f"host:{h.name}", []).append(h.name)
        return {g: tuple(m) for g, m in out.items()}


# --- the filesystem freeze -------------------------------------------------------------------


class Freezer:
    """FIFREEZE/FITHAW on mount points (needs CAP_SYS_ADMIN)."""

    @contextlib.contextmanager
    def frozen(self, mounts: Sequence[str]) -> Iterator[None]:
        """Every filesystem frozen for the block; all thawed after, whatever happens."""
        fds: list[int] = []
        try:
            for m in mounts:
                if not os.path.ismount(m):  # never freeze whatever filesystem holds the path
                    raise OSError(f"{m} is not a mount point: the disk is not attached")
                fd = os.open(m, os.O_RDONLY)
                fds.append(fd)
                fcntl.ioctl(fd, FIFREEZE, 0)
            yield
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    fcntl.ioctl(fd, FITHAW, 0)
                os.close(fd)

    def thaw(self, mount: str) -> None:
        """Thaw a filesystem a killed predecessor may have left frozen (no error if not)."""
        with contextlib.suppress(OSError):
            fd = os.open(mount, os.O_RDONLY)
            try:
                fcntl.ioctl(fd, FITHAW, 0)
            finally:
                os.close(fd)


class NoFreezer(Freezer):
    """No freeze (unit tests, or images with no mounted filesystem)."""

    @contextlib.contextmanager
    def frozen(self, mounts: Sequence[str]) -> Iterator[None]:
        yield

    def thaw(self, mount: str) -> None:
        pass


# --- per-disk state --------------------------------------------------------------------------


class ShadowFile:
    """A shadow's file, written as Put Pages succeed and flushed to disk in the background.

    Each Put Page's bytes go to the file as it completes, and every FLUSH_EVERY bytes a
    background fdatasync starts, so that the last flush of a large pass (an initial
    replication writes the whole disk) has little left to do.
    """

    FLUSH_EVERY = 32 * 1024**2

    def __init__(self, path: str, size: int, flusher: ThreadPoolExecutor) -> None:
        self.path, self.size, self.flusher = path, size, flusher
        self.fd: int | None = None  # opened at the first write: an idle pass costs nothing
        self.unflushed = 0
        self.flushing: Future[None] | None = None

    def write(self, off: int, data: bytes) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            if os.fstat(self.fd).st_size != self.size:
                os.ftruncate(self.fd, self.size)
        os.pwrite(self.fd, data, off)
        self.unflushed += len(data)
        if self.unflushed >= self.FLUSH_EVERY and (self.flushing is None or self.flushing.done()):
            self.flushing = self.flusher.submit(os.fdatasync, self.fd)
            self.unflushed = 0

    def close(self) -> None:
        """Everything written is durable once this returns."""
        if self.fd is None:
            return
        try:
            if self.flushing is not None:
                self.flushing.result()
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = None


@dataclass
class DiskRep:
    """A disk under replication: its config, shadow and counters."""

    host: str
    cfg: DiskConfig
    shadow: core.Shadow
    shadow_path: str
    uncertain: list[tuple[int, int]] = field(default_factory=list)
    backlog_bytes: int = 0
    bytes_sent: int = 0
    resync_bytes_sent: int = 0
    puts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    initial_done: bool = False
    behind: bool = False  # request-bound and late (see _update_behind): fill gaps
    put_rate: float | None = None  # Put Pages per second of the last request-bound pass
    filled_bytes: int = 0

    @property
    def key(self) -> str:
        return f"{self.host}/{self.cfg.name}"

    @property
    def blob(self) -> str:
        return core.head_blob(self.host, self.cfg.name)

    def scan(self) -> list[Extent]:
        """Blocks where the image differs from the shadow."""
        return list(self.scan_iter())

    def changed_offsets(self) -> list[int]:
        """Offsets of the blocks where the image differs from the shadow (no data held)."""
        return [off for off, _ in self.scan_iter()]

    def read_fresh(self, offsets: Iterable[int]) -> Iterator[Extent]:
        """The blocks at ``offsets`` (from ``changed_offsets``), each read again as it is sent.

        A pass is so bounded by what had changed when it began: under churn, a pass that read
        each block only when it got to it would keep finding newer changes ahead of it and
        never end. Reading a block again at send time may pick up a newer write: that is
        sent, and the shadow records exactly what was sent.
        """
        fd = os.open(self.cfg.image, os.O_RDONLY)
        try:
            for off in offsets:
                n = min(BLOCK, self.cfg.size - off)
                data = os.pread(fd, n, off)
                if len(data) != n:
                    raise OSError(f"short read of {self.cfg.image} at {off}")
                yield off, data
        finally:
            os.close(fd)

    def scan_iter(self) -> Iterator[Extent]:
        """``scan``, a chunk at a time (the image stays open until the iterator is done)."""
        fd = os.open(self.cfg.image, os.O_RDONLY)
        try:
            yield from self.shadow.diff_iter(lambda off, n: os.pread(fd, n, off))
        finally:
            os.close(fd)


class Replicator:
    """The replication loop over every protected disk (see the module docstring)."""

    def __init__(
        self,
        cfg: Config,
        store: PageStore,
        state_dir: str | Path,
        *,
        freezer: Freezer | None = None,
        clock: Callable[[], float] = time.time,
        flush: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.dir = Path(state_dir)
        self.freezer = freezer or Freezer()
        self.clock = clock
        self.flush = flush or _http_flush
        self.retention = Retention(cfg.retention_s, cfg.crash_consistent_s)
        self.groups = cfg.groups()
        self.hosts = {h.name: h for h in cfg.hosts}
        self.disks: dict[str, list[DiskRep]] = {}
        self.seq: dict[str, int] = {}
        self.points: dict[str, list[tuple[int, float, str]]] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self.next_point: dict[str, float] = {}
        self.next_app: dict[str, float] = {}
        self.failures = 0
        self.retry_at = 0.0
        self.last_delta = 0.0
        self.resyncing: set[str] = set()
        self.resync_done: dict[str, str] = {}
        self.freezes: list[dict[str, Any]] = []
        self.started_at = clock()
        self._pool = ThreadPoolExecutor(max_workers=UPLOAD_WORKERS)
        self._flusher = ThreadPoolExecutor(max_workers=1)
        (self.dir / "shadow").mkdir(parents=True, exist_ok=True)
        (self.dir / "requests").mkdir(parents=True, exist_ok=True)
        intent = self._load_intent()
        for h in cfg.hosts:
            reps = []
            for d in h.disks:
                path = self.dir / "shadow" / h.name / f"{d.name}.img"
                path.parent.mkdir(parents=True, exist_ok=True)
                rep = DiskRep(h.name, d, core.Shadow.load(str(path), d.size), str(path))
                rep.uncertain = [tuple(r) for r in intent.get(rep.key, [])]  # type: ignore[misc]
                if not path.exists():
                    rep.uncertain = [(0, d.size)]  # no shadow: compare the whole blob
                reps.append(rep)
            self.disks[h.name] = reps

    # --- start-up ------------------------------------------------------------------------------

    def thaw_all(self) -> None:
        """Thaw what a killed predecessor may have left frozen."""
        for reps in self.disks.values():
            for d in reps:
                if d.cfg.mount:
                    self.freezer.thaw(d.cfg.mount)

    def connect(self) -> None:
        """Create blobs, read the published points, drop orphan snapshots; StoreError if down."""
        ensure = getattr(self.store, "ensure_containers", None)
        if ensure is not None:
            ensure()
        now = self.clock()
        for host, reps in self.disks.items():
            for d in reps:
                existed = self.store.ensure_blob(d.blob, d.cfg.size)
                if not existed:
                    d.uncertain = []  # a new blob is all zeros, as a fresh shadow is
            names = self.store.manifests(f"{host}/")
            manifests = [Manifest.from_bytes(self.store.get_manifest(n)) for n in names]
            self.points[host] = [(m.seq, m.taken_at, m.type) for m in manifests]
            self.seq[host] = max((m.seq for m in manifests), default=0)
            if manifests:
                newest = max(manifests, key=lambda m: m.seq)
                self.latest[host] = _point_summary(newest)
                for d in reps:
                    d.initial_done = True
            self._drop_orphans(host, manifests)
        for g in self.groups:
            self.next_point.setdefault(g, now)
            self.next_app.setdefault(g, now + (self.cfg.app_consistent_s or 0))
        self._save_intent()

    # --- the loop ------------------------------------------------------------------------------

    def run(self, stop: Callable[[], bool]) -> None:
        """Loop until ``stop()``; every failure is recorded and retried with backoff."""
        connected = False
        beat = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(beat,), daemon=True)
        heartbeat.start()
        while not stop():
            try:
                if not connected:
                    self.connect()
                    connected = True
                self.step()
                self.failures = 0
            except (StoreError, OSError) as exc:
                self._failed(exc)
                connected = connected and not isinstance(exc, OSError)
            self.write_status()
            time.sleep(self.cfg.tick_s)
        beat.set()
        heartbeat.join()
        self.write_status()

    def _heartbeat(self, done: threading.Event) -> None:
        """Rewrite the status every second, so a long upload never looks like a dead agent."""
        while not done.wait(1.0):
            with contextlib.suppress(RuntimeError, OSError):  # a dict changed mid-copy: next time
                self.write_status()

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.retry_at = self.clock() + min(BACKOFF_MAX_S, 0.5 * 2 ** (self.failures - 1))
        msg = f"{type(exc).__name__}: {exc}"
        log.warning("cycle failed: %s", msg)
        for reps in self.disks.values():
            for d in reps:
                d.last_error, d.last_error_at = msg, self.clock()

    def step(self) -> None:
        """One turn of the loop: requests, resyncs, due points, or a delta pass."""
        now = self.clock()
        if now < self.retry_at:
            return
        self._take_requests()
        for reps in self.disks.values():
            for d in reps:
                if d.uncertain:
                    self.resync(d)
        due = [g for g, t in self.next_point.items() if t <= now]
        for g in sorted(due, key=lambda g: self.next_point[g]):
            app = self.cfg.app_consistent_s is not None and self.next_app[g] <= now
            self.point(g, app=app)
        if not due and now - self.last_delta >= self.cfg.delta_interval_s:
            self.delta_pass()
        for reps in self.disks.values():
            for d in reps:
                d.last_error = None

    def _take_requests(self) -> None:
        for req in sorted((self.dir / "requests").glob("resync-*")):
            host = req.name.removeprefix("resync-")
            token = req.read_text().strip()
            if host in self.disks:
                for d in self.disks[host]:
                    d.uncertain = [(0, d.cfg.size)]
                self._save_intent()
                self.resync_done.pop(host, None)
                for d in self.disks[host]:
                    self.resync(d)
                self.resync_done[host] = token
            req.unlink()

    # --- uploads -------------------------------------------------------------------------------

    def _upload(
        self,
        d: DiskRep,
        extents: Iterable[Extent],
        *,
        resync: bool = False,
        fill_gaps: bool = False,
    ) -> int:
        """Send ``extents`` (sorted by offset) as Put Pages; the shadow follows what succeeded.

        Extents are consumed as they come (a pass reads each block as it sends it) with at most
        UPLOAD_WORKERS requests and IN_FLIGHT_BYTES in flight, so memory stays bounded
        whatever the disk's size. Every range is in the persisted intent before its Put Page
        is sent. After the first failure nothing more is sent: what is left still differs from
        the shadow, and the next scan finds it. Bytes sent; the first error is raised.
        """
        pending: dict[Future[StoreError | None], Extent] = {}
        in_flight = 0
        failed: list[tuple[int, int]] = []
        errors: list[StoreError] = []
        sent = 0
        intent_end = -1
        shadow_file = ShadowFile(d.shadow_path, d.cfg.size, self._flusher)

        succeeded: list[Extent] = []

        def reap() -> None:
            """Wait for a Put Page to finish and free its slot (bookkeeping: ``record``)."""
            nonlocal in_flight
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                off, data = pending.pop(fut)
                in_flight -= len(data)
                err = fut.result()
                if err is None:
                    succeeded.append((off, data))
                else:
                    failed.append((off, len(data)))
                    errors.append(err)

        def record() -> None:
            """The shadow, its file and the counters follow what ``reap`` saw succeed: done
            after the next Put Page is on its way, so the slot is not idle meanwhile."""
            nonlocal sent
            for off, data in succeeded:
                d.backlog_bytes = max(0, d.backlog_bytes - len(data))
                d.shadow.apply(off, data)
                shadow_file.write(off, data)
                sent += len(data)
                d.puts += 1
            succeeded.clear()

        gap = GAP_FILL if fill_gaps and not resync else 0
        try:
            for off, data in core.coalesce_sorted(extents, gap=gap, fill=self._filler(d)):
                if errors:
                    break
                if off + len(data) > intent_end:
                    intent_end = min(d.cfg.size, off + max(INTENT_WINDOW, len(data)))
                    d.uncertain = core.merge_ranges([*d.uncertain, (off, intent_end - off)])
                    self._save_intent()
                while pending and (
                    len(pending) >= UPLOAD_WORKERS or in_flight + len(data) > IN_FLIGHT_BYTES
                ):
                    reap()
                pending[self._pool.submit(self._put, d, (off, data))] = (off, data)
                in_flight += len(data)
                record()
        finally:
            while pending:
                reap()
            record()
            shadow_file.close()
        if resync:
            d.resync_bytes_sent += sent
        else:
            d.bytes_sent += sent
        # What succeeded is certain now; failed ranges stay uncertain until a resync.
        d.uncertain = core.merge_ranges(failed)
        self._save_intent()
        if errors:
            raise errors[0]
        return sent

    def _filler(self, d: DiskRep) -> Callable[[int, int], bytes]:
        """Gap bytes for a gap-filled Put Page: the shadow's, which the blob already holds."""

        def fill(off: int, length: int) -> bytes:
            d.filled_bytes += length
            return d.shadow.read(off, length)

        return fill

    def _put(self, d: DiskRep, put: Extent) -> StoreError | None:
        try:
            self.store.put_page(d.blob, put[0], put[1])
        except StoreError as exc:
            return exc
        return None

    def _sync(self, d: DiskRep) -> tuple[int, int, float]:
        """An unfrozen delta pass of one disk: (changed bytes, sent bytes, seconds).

        The backlog is what the scan found and no Put Page has carried yet; when the pass
        fails, the rest of the scan still counts into it (a partition shows its backlog).
        """
        t0 = time.monotonic()
        changed = 0

        def counted(extents: Iterable[Extent]) -> Iterator[Extent]:
            nonlocal changed
            for e in extents:
                changed += len(e[1])
                d.backlog_bytes += len(e[1])
                yield e

        d.backlog_bytes = 0
        puts = d.puts
        offsets = d.changed_offsets()
        scan = counted(d.read_fresh(offsets))
        try:
            sent = self._upload(d, scan, fill_gaps=self._fills_gaps(d, len(offsets)))
        except StoreError:
            for _ in scan:
                pass
            raise
        d.backlog_bytes = 0
        took = time.monotonic() - t0
        self._update_behind(d, took, d.puts - puts)
        return changed, sent, took

    def _update_behind(self, d: DiskRep, took: float, puts: int) -> None:
        """Fill gaps while passes are slower than a point interval because of how many
        requests they send (a pass slowed by the network, e.g. just after a partition heals,
        gains nothing from it); stop once a pass takes less than half the interval."""
        if puts >= REQUEST_BOUND_PUTS and took > 0:
            d.put_rate = puts / took
        if took > self.cfg.crash_consistent_s and puts >= REQUEST_BOUND_PUTS:
            d.behind = True
        elif took < self.cfg.crash_consistent_s / 2:
            d.behind = False

    def _fills_gaps(self, d: DiskRep, blocks: int) -> bool:
        """Whether a pass of ``blocks`` changed blocks fills gaps: only on a disk behind, and
        only when the pass, one request per block at the last measured rate, would itself
        outlast a point interval. A small pass (say, the rest of a burst a slow pass missed)
        keeps sending only what changed."""
        if not d.behind:
            return False
        return d.put_rate is None or blocks / d.put_rate > self.cfg.crash_consistent_s

    def delta_pass(self) -> None:
        """Continuous replication: every disk's changed blocks, no freeze, no point."""
        self.last_delta = self.clock()
        for host, reps in self.disks.items():
            for d in reps:
                filled = d.filled_bytes
                changed, sent, took = self._sync(d)
                if changed:
                    self._event(
                        kind="delta",
                        host=host,
                        disk=d.cfg.name,
                        changed_bytes=changed,
                        sent_bytes=sent,
                        filled_bytes=d.filled_bytes - filled,
                        duration_s=round(took, 4),
                        size=d.cfg.size,
                    )

    # --- recovery points -----------------------------------------------------------------------

    def point(self, group: str, *, app: bool) -> list[Manifest]:
        """Take, upload and publish one recovery point of every host in ``group``."""
        hosts = self.groups[group]
        reps = [d for h in hosts for d in self.disks[h]]
        started = time.monotonic()
        filled = sum(d.filled_bytes for d in reps)
        puts = {d.key: d.puts for d in reps}
        pre_sent = sum(self._sync(d)[1] for d in reps)
        prepass_s = time.monotonic() - started
        ptype: core.PointType = "crash-consistent"
        if app:
            ptype = "app-consistent"
            for h in hosts:
                url = self.hosts[h].flush_url
                if url:
                    try:
                        self.flush(url)
                    except OSError as exc:
                        log.warning("flush of %s failed (%s): crash-consistent point", h, exc)
                        ptype = "crash-consistent"
        mounts = [d.cfg.mount for d in reps if d.cfg.mount]
        t0 = time.monotonic()
        with self.freezer.frozen(mounts):
            taken_at = self.clock()
            captures = [(d, d.scan()) for d in reps]
        freeze_ms = (time.monotonic() - t0) * 1000
        captured = sum(len(b) for _, ext in captures for _, b in ext)
        for d, ext in captures:
            d.backlog_bytes = sum(len(b) for _, b in ext)
        sent = 0
        t1 = time.monotonic()
        for d, ext in captures:
            sent += self._upload(d, ext, fill_gaps=self._fills_gaps(d, len(ext)))
            d.backlog_bytes = 0
        upload_s = time.monotonic() - t1
        snaps = {d.key: self.store.snapshot(d.blob) for d in reps}
        published = []
        now = self.clock()
        for h in hosts:
            seq = self.seq[h] + 1
            m = Manifest(
                host=h,
                seq=seq,
                type=ptype,
                taken_at=taken_at,
                published_at=now,
                freeze_ms=round(freeze_ms, 3),
                group=self.hosts[h].group,
                disks=tuple(
                    core.DiskPoint(
                        name=d.cfg.name,
                        size=d.cfg.size,
                        snapshot=snaps[d.key],
                        hash=d.shadow.disk_hash(self._pool),
                        chunk_hashes=b"".join(d.shadow.chunk_hashes()).hex(),
                    )
                    for d in self.disks[h]
                ),
            )
            self.store.put_manifest(core.manifest_blob(h, seq), m.to_bytes())
            self.seq[h] = seq
            self.points.setdefault(h, []).append((seq, taken_at, ptype))
            self.latest[h] = _point_summary(m)
            for d in self.disks[h]:
                d.initial_done = True
            published.append(m)
        self.next_point[group] = taken_at + self.cfg.crash_consistent_s
        if app and self.cfg.app_consistent_s is not None:
            self.next_app[group] = taken_at + self.cfg.app_consistent_s
        self.freezes = [*self.freezes[-199:], {"at": taken_at, "ms": round(freeze_ms, 3)}]
        took = time.monotonic() - started
        for d in reps:
            self._update_behind(d, took, d.puts - puts[d.key])
        self._event(
            kind="point",
            group=group,
            hosts=list(hosts),
            type=ptype,
            taken_at=taken_at,
            seqs={m.host: m.seq for m in published},
            freeze_ms=round(freeze_ms, 3),
            prepass_sent_bytes=pre_sent,
            captured_bytes=captured,
            sent_bytes=sent,
            filled_bytes=sum(d.filled_bytes for d in reps) - filled,
            prepass_s=round(prepass_s, 4),
            upload_s=round(upload_s, 4),
            duration_s=round(took, 4),
        )
        now = self.clock()  # one instant for the whole group: its members keep the same points
        for h in hosts:
            self.prune(h, now)
        return published

    def prune(self, host: str, now: float) -> list[int]:
        """Delete the points of ``host`` that the retention schedule drops at ``now``.

        A point whose manifest is already gone was unpublished by a prune that failed before
        its snapshots were deleted (or whose delete's outcome was in doubt): it is forgotten
        and the host's orphan snapshots are removed, so one failed prune never stops pruning.
        """
        points = self.points.get(host, [])
        keep = self.retention.keep(points, now)
        dropped = [p for p in points if p[0] not in keep]
        orphans = False
        for seq, _, _ in dropped:
            name = core.manifest_blob(host, seq)
            try:
                m = Manifest.from_bytes(self.store.get_manifest(name))
            except NotFound:
                orphans = True
            else:
                self.store.delete_manifest(name)  # unpublish first: never a point without data
                for dp in m.disks:
                    self.store.delete_snapshot(core.head_blob(host, dp.name), dp.snapshot)
            self.points[host] = [p for p in self.points[host] if p[0] != seq]
        if orphans:
            names = self.store.manifests(f"{host}/")
            left = [Manifest.from_bytes(self.store.get_manifest(n)) for n in names]
            self._drop_orphans(host, left)
        return [p[0] for p in dropped]

    def _drop_orphans(self, host: str, manifests: Sequence[Manifest]) -> None:
        """Delete the snapshots of ``host``'s disks that none of its ``manifests`` references."""
        referenced = {dp.snapshot for m in manifests for dp in m.disks}
        for d in self.disks[host]:
            for snap in self.store.snapshots(d.blob):
                if snap not in referenced:
                    self.store.delete_snapshot(d.blob, snap)

    # --- resync --------------------------------------------------------------------------------

    def resync(self, d: DiskRep) -> int:
        """Compare the blob with the shadow where uncertain; send only differing blocks."""
        self.resyncing.add(d.host)
        self.write_status()
        started = time.monotonic()
        compared = 0
        diffs: list[Extent] = []
        try:
            for off, ln in d.uncertain:
                start = off - off % BLOCK
                end = min(d.cfg.size, -(-(off + ln) // BLOCK) * BLOCK)
                for p_off, p_len in iter_pieces(start, end - start):
                    remote = self.store.read(d.blob, p_off, p_len)
                    mine = d.shadow.read(p_off, p_len)
                    compared += p_len
                    if remote != mine:
                        for b in range(0, p_len, BLOCK):
                            if remote[b : b + BLOCK] != mine[b : b + BLOCK]:
                                diffs.append((p_off + b, mine[b : b + BLOCK]))
            sent = self._upload(d, diffs, resync=True) if diffs else 0
            d.uncertain = []
            self._save_intent()
        finally:
            self.resyncing.discard(d.host)
        self._event(
            kind="resync",
            host=d.host,
            disk=d.cfg.name,
            compared_bytes=compared,
            differing_bytes=sum(len(b) for _, b in diffs),
            sent_bytes=sent,
            duration_s=round(time.monotonic() - started, 4),
        )
        return sent

    # --- state files ---------------------------------------------------------------------------

    def _load_intent(self) -> dict[str, list[list[int]]]:
        try:
            data: dict[str, list[list[int]]] = json.loads((self.dir / "intent.json").read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _save_intent(self) -> None:
        data = {d.key: d.uncertain for reps in self.disks.values() for d in reps if d.uncertain}
        _write_atomic(self.dir / "intent.json", data, fsync=True)

    def _event(self, **fields: Any) -> None:
        fields = {"t": round(self.clock(), 4), **fields}
        with open(self.dir / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(fields) + "\n")

    def status(self) -> dict[str, Any]:
        """What the harness reads: per disk state and counters, per host the newest point."""
        disks = {}
        for host, reps in self.disks.items():
            for d in reps:
                disks[d.key] = {
                    "host": host,
                    "disk": d.cfg.name,
                    "size": d.cfg.size,
                    "initial_done": d.initial_done,
                    "resyncing": host in self.resyncing,
                    "backlog_bytes": d.backlog_bytes,
                    "bytes_sent": d.bytes_sent,
                    "resync_bytes_sent": d.resync_bytes_sent,
                    "puts": d.puts,
                    "uncertain_bytes": sum(ln for _, ln in d.uncertain),
                    "last_error": d.last_error,
                    "last_error_at": d.last_error_at,
                }
        return {
            "updated_at": self.clock(),
            "started_at": self.started_at,
            "pid": os.getpid(),
            "rpo_threshold_s": self.cfg.rpo_threshold_s,
            "disks": disks,
            "latest": self.latest,
            "points": {h: len(p) for h, p in self.points.items()},
            "freezes": self.freezes[-50:],
            "resync_done": self.resync_done,
            "failures": self.failures,
        }

    def write_status(self) -> None:
        _write_atomic(self.dir / "status.json", self.status())


def _point_summary(m: Manifest) -> dict[str, Any]:
    return {"seq": m.seq, "taken_at": m.taken_at, "type": m.type, "published_at": m.published_at}


def _write_atomic(path: Path, data: object, *, fsync: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _http_flush(url: str) -> None:
    """Ask an app to flush and quiesce (its /admin/flush); OSError if it does not answer 200."""
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status != 200:
            raise OSError(f"{url} answered {resp.status}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the replicator container: ``agent CONFIG [STATE_DIR]``."""
    from harness.replication.store import AzurePageStore

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python3 -m harness.replication.agent CONFIG [STATE_DIR]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # it logs every request at INFO
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    config = Path(args[0])
    if not config.exists():
        # Wait (and stop promptly) rather than exit: the harness writes it before start, and
        # a bare `docker run` of the image should show why it does nothing.
        log.error("no configuration at %s; waiting for it", config)
        while not config.exists() and not stopping:
            time.sleep(0.2)
        if stopping:
            return 0
    cfg = Config.from_json(json.loads(config.read_text()))
    # Routes first: a request sent before them would wait out a connect timeout.
    for subnet, via in cfg.routes:
        subprocess.run(["ip", "route", "replace", subnet, "via", via], check=True, timeout=10)
    state_dir = args[1] if len(args) > 1 else "/state"
    store = AzurePageStore(cfg.endpoint, cfg.account, cfg.key)
    rep = Replicator(cfg, store, state_dir)
    rep.thaw_all()
    log.info("replicating %d disk(s) to %s", sum(map(len, rep.disks.values())), cfg.endpoint)
    rep.write_status()
    rep.run(lambda: stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
