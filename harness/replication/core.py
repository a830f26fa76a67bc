"""The replication logic that needs no engine: change tracking, Put Page ranges, hashes, points.

Units and names:

    PAGE   512 B      a page blob's page: every write starts and ends on a page boundary
    BLOCK  4 KiB      the change tracker's granularity (a changed byte marks its 4 KiB block)
    CHUNK  1 MiB      the unit of scanning and of disk hashes
    MAX_PUT 4 MiB     the largest Put Page Azure accepts (Azurite accepts more; we never send it)

The change tracker is a *shadow*: the bytes the head page blob holds, as far as the replicator
knows, one ``bytes`` object per chunk (all-zero chunks share one object, so a fresh disk costs
no memory). Scanning compares the image with the shadow a chunk at a time (one ``memcmp``),
then by 64 KiB, then by block, so an idle disk is scanned at close to read speed.

A disk's hash is ``sha256("drill-disk-v1\\0" size "\\0" sha256(chunk_0) sha256(chunk_1) ...)``
(hex): the per-chunk hashes let ``verify`` say which MiB of a replica differs, and let the
replicator rehash only the chunks a cycle changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PAGE = 512
BLOCK = 4096
SUB = 64 * 1024
CHUNK = 1024 * 1024
MAX_PUT = 4 * 1024 * 1024

Extent = tuple[int, bytes]
"""(offset, data): bytes at an offset of a disk."""

PointType = Literal["crash-consistent", "app-consistent"]
HEALTH_STATES = ("InitialReplication", "Protected", "Resynchronizing", "Critical")


def check_size(size: int) -> int:
    """The size if a page blob can have it, else ValueError."""
    if size <= 0 or size % PAGE:
        raise ValueError(f"disk size {size} is not a positive multiple of {PAGE} bytes")
    return size


# --- Put Page ranges ------------------------------------------------------------------------


def coalesce(extents: Iterable[Extent], max_put: int = MAX_PUT) -> list[Extent]:
    """Merge touching extents into Put Page writes of at most ``max_put`` bytes.

    Every extent must be page-aligned (offset and length multiples of 512); the result is too,
    sorted by offset, and covers exactly the input bytes (nothing in between is sent).
    """
    return list(coalesce_sorted(sorted(extents, key=lambda e: e[0]), max_put))


def coalesce_sorted(
    extents: Iterable[Extent],
    max_put: int = MAX_PUT,
    *,
    gap: int = 0,
    fill: Callable[[int, int], bytes] | None = None,
) -> Iterator[Extent]:
    """``coalesce`` of extents already sorted by offset, yielding each Put Page once complete.

    With ``gap`` > 0, two extents at most ``gap`` bytes apart become one Put Page whose middle
    is ``fill(offset, length)``: what the blob already holds there (the shadow), so sending it
    changes nothing. It trades bytes for requests, which cost far more than their bytes when
    changes are scattered (see ``agent.GAP_FILL``).
    """
    if max_put < PAGE or max_put % PAGE:
        raise ValueError("max_put must be a positive multiple of 512")
    if gap and (fill is None or gap % PAGE):
        raise ValueError("gap must be a multiple of 512, with a fill function")
    cur_off = -1
    parts: list[bytes] = []
    cur_len = 0
    for off, data in extents:
        if off % PAGE or len(data) % PAGE or not data:
            raise ValueError(f"extent at {off} (+{len(data)}) is not page-aligned")
        if parts and off < cur_off + cur_len:
            raise ValueError(f"extent at {off} overlaps the one before it (or is out of order)")
        hole = off - (cur_off + cur_len)
        if parts and 0 < hole <= gap and cur_len + hole < max_put and fill is not None:
            parts.append(fill(cur_off + cur_len, hole))
            cur_len += hole
        pos = 0
        while pos < len(data):
            if parts and off + pos == cur_off + cur_len and cur_len < max_put:
                take = min(max_put - cur_len, len(data) - pos)
                parts.append(data[pos : pos + take])
                cur_len += take
            else:
                if parts:
                    yield cur_off, b"".join(parts)
                take = min(max_put, len(data) - pos)
                cur_off, parts, cur_len = off + pos, [data[pos : pos + take]], take
            pos += take
    if parts:
        yield cur_off, b"".join(parts)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) ranges merged where they touch or overlap, sorted."""
    out: list[tuple[int, int]] = []
    for off, ln in sorted(r for r in ranges if r[1] > 0):
        if out and off <= out[-1][0] + out[-1][1]:
            last_off, last_len = out[-1]
            out[-1] = (last_off, max(last_len, off + ln - last_off))
        else:
            out.append((off, ln))
    return out


# --- hashes -----------------------------------------------------------------------------------

_ZERO_HASH: dict[int, bytes] = {}


def chunk_hash(data: bytes) -> bytes:
    """sha256 of one chunk (cached for all-zero chunks, the common case on a fresh disk)."""
    n = len(data)
    if n in _ZERO_HASH and data.count(0) == n:
        return _ZERO_HASH[n]
    digest = hashlib.sha256(data).digest()
    if n not in _ZERO_HASH and data.count(0) == n:
        _ZERO_HASH[n] = digest
    return digest


def disk_hash(size: int, chunk_hashes: Sequence[bytes]) -> str:
    """The disk hash from its per-chunk hashes (see the module docstring)."""
    h = hashlib.sha256(b"drill-disk-v1\0" + str(size).encode() + b"\0")
    for c in chunk_hashes:
        h.update(c)
    return h.hexdigest()


def hash_image(size: int, read: Callable[[int, int], bytes]) -> tuple[str, list[bytes]]:
    """(disk hash, chunk hashes) of an image read through ``read(offset, length)``."""
    hashes = []
    for off in range(0, size, CHUNK):
        n = min(CHUNK, size - off)
        data = read(off, n)
        if len(data) != n:
            raise ValueError(f"short read at {off}: {len(data)} of {n} bytes")
        hashes.append(chunk_hash(data))
    return disk_hash(size, hashes), hashes


# --- the change tracker -----------------------------------------------------------------------


def _changed_blocks(base: int, new: bytes, old: bytes, out: list[Extent]) -> None:
    """Append the BLOCKs of ``new`` that differ from ``old`` (same length), by 64 KiB first."""
    n = len(new)
    for s in range(0, n, SUB):
        if new[s : s + SUB] == old[s : s + SUB]:
            continue
        for b in range(s, min(s + SUB, n), BLOCK):
            blk = new[b : b + BLOCK]
            if blk != old[b : b + BLOCK]:
                out.append((base + b, blk))


class Shadow:
    """What the head page blob holds, chunk by chunk (see the module docstring)."""

    def __init__(self, size: int) -> None:
        self.size = check_size(size)
        self._zero = {CHUNK: bytes(CHUNK)}
        self.chunks: list[bytes] = [self._zeros(i) for i in range(self.nchunks)]
        self._hashes: list[bytes | None] = [None] * self.nchunks

    @property
    def nchunks(self) -> int:
        return math.ceil(self.size / CHUNK)

    def _len(self, i: int) -> int:
        return min(CHUNK, self.size - i * CHUNK)

    def _zeros(self, i: int) -> bytes:
        n = self._len(i)
        if n not in self._zero:
            self._zero[n] = bytes(n)
        return self._zero[n]

    def read(self, off: int, length: int) -> bytes:
        """Bytes of the shadow at ``off`` (for resync comparisons and tests)."""
        parts = []
        end = off + length
        while off < end:
            i, rel = divmod(off, CHUNK)
            take = min(end - off, self._len(i) - rel)
            parts.append(self.chunks[i][rel : rel + take])
            off += take
        return b"".join(parts)

    def diff(self, read: Callable[[int, int], bytes]) -> list[Extent]:
        """The BLOCKs where the image (read through ``read(offset, length)``) differs."""
        return list(self.diff_iter(read))

    def diff_iter(self, read: Callable[[int, int], bytes]) -> Iterator[Extent]:
        """``diff``, a chunk at a time: uploads can start while the rest is still scanned."""
        for i in range(self.nchunks):
            off, n = i * CHUNK, self._len(i)
            cur = read(off, n)
            if len(cur) != n:
                raise ValueError(f"short read of the image at {off}: {len(cur)} of {n}")
            old = self.chunks[i]
            if cur != old:
                found: list[Extent] = []
                _changed_blocks(off, cur, old, found)
                yield from found

    def diff_fd(self, fd: int) -> list[Extent]:
        """``diff`` of an open image file."""
        return self.diff(lambda off, n: os.pread(fd, n, off))

    def apply(self, off: int, data: bytes) -> None:
        """Record that the head blob now holds ``data`` at ``off``."""
        end = off + len(data)
        if off < 0 or end > self.size:
            raise ValueError(f"write {off}+{len(data)} is outside the disk ({self.size})")
        pos = 0
        while off + pos < end:
            i, rel = divmod(off + pos, CHUNK)
            take = min(end - off - pos, self._len(i) - rel)
            if rel == 0 and take == self._len(i):
                # A whole chunk (large passes such as an initial replication): hash it now, while
                # the other uploads are on the wire, rather than all at the point's end.
                self.chunks[i] = bytes(data[pos : pos + take])
                self._hashes[i] = chunk_hash(self.chunks[i])
            else:
                buf = bytearray(self.chunks[i])
                buf[rel : rel + take] = data[pos : pos + take]
                self.chunks[i] = bytes(buf)
                self._hashes[i] = None
            pos += take

    def chunk_hashes(self, pool: Executor | None = None) -> list[bytes]:
        """Per-chunk sha256, recomputing only chunks changed since the last call (on ``pool``'s
        threads when given: hashlib releases the GIL, so they run side by side)."""
        stale = [i for i, h in enumerate(self._hashes) if h is None]
        run = pool.map if pool is not None else map
        for i, digest in zip(stale, run(chunk_hash, [self.chunks[i] for i in stale]), strict=True):
            self._hashes[i] = digest
        return [h for h in self._hashes if h is not None]

    def disk_hash(self, pool: Executor | None = None) -> str:
        """The hash of what the shadow holds."""
        return disk_hash(self.size, self.chunk_hashes(pool))

    # Persistence: a sparse file of the disk's size, written as Put Pages succeed
    # (``agent.ShadowFile``).

    @classmethod
    def load(cls, path: str, size: int) -> Shadow:
        """The shadow saved at ``path`` (all zeros if there is none)."""
        sh = cls(size)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return sh
        try:
            for i in range(sh.nchunks):
                data = os.pread(fd, sh._len(i), i * CHUNK)
                if len(data) < sh._len(i):
                    data += bytes(sh._len(i) - len(data))
                if data.count(0) != len(data):
                    sh.chunks[i] = data
        finally:
            os.close(fd)
        return sh


# --- recovery points --------------------------------------------------------------------------


def head_blob(host: str, disk: str) -> str:
    """The head page blob of a disk in the ``replicas`` container."""
    return f"{host}/{disk}.img"


def manifest_blob(host: str, seq: int) -> str:
    """A recovery point's manifest in the ``recoverypoints`` container."""
    return f"{host}/{seq:010d}.json"


@dataclass(frozen=True)
class DiskPoint:
    """One disk of a recovery point: the snapshot holding it and the source's hash."""

    name: str
    size: int
    snapshot: str
    hash: str
    chunk_hashes: str  # hex, 64 characters per CHUNK

    def chunk_list(self) -> list[bytes]:
        """The per-chunk hashes as bytes."""
        raw = bytes.fromhex(self.chunk_hashes)
        return [raw[i : i + 32] for i in range(0, len(raw), 32)]


@dataclass(frozen=True)
class Manifest:
    """A published recovery point of one host: every disk's snapshot, taken at one instant."""

    host: str
    seq: int
    type: PointType
    taken_at: float
    published_at: float
    freeze_ms: float
    group: str | None
    disks: tuple[DiskPoint, ...] = field(default_factory=tuple)
    version: int = 1

    @property
    def id(self) -> str:
        """The point's id on the command line: its sequence number."""
        return str(self.seq)

    def disk(self, name: str) -> DiskPoint:
        """One disk of the point (KeyError if it has none of that name)."""
        for d in self.disks:
            if d.name == name:
                return d
        raise KeyError(name)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        data: dict[str, Any] = json.loads(raw)
        data["disks"] = tuple(DiskPoint(**d) for d in data.get("disks", ()))
        return cls(**data)

    def summary(self) -> dict[str, Any]:
        """The point without its chunk hashes, for listings."""
        data = asdict(self)
        for d in data["disks"]:
            d.pop("chunk_hashes")
        data["id"] = self.id
        return data


# --- retention and pruning --------------------------------------------------------------------

ASR_CRASH_S = 300.0
"""ASR's fixed crash-consistent frequency; a topology's interval scales the pruning table."""
HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True)
class Retention:
    """ASR's recovery point pruning (A2A table), scaled by ``crash_consistent_s / 300``.

    Points of the last 2 h (scaled, and never longer than the retention: drills may keep
    points for less than that window, which ASR's 1-day minimum never does) are all kept.
    Beyond that, within ``retention_s``, one point per bucket (aligned to the epoch, so that
    every member of a replication group keeps the same instants): 1 h for a retention of up
    to 1 day, 2 h for 2-7 days, and for 8-15 days 2 h over the first 7 days and 4 h after. A
    retention of 0 keeps only the newest point ("only latest failover is possible"). The
    newest point and the newest app-consistent point are always kept.
    """

    retention_s: float
    crash_consistent_s: float = ASR_CRASH_S

    @property
    def scale(self) -> float:
        return self.crash_consistent_s / ASR_CRASH_S

    def bucket_s(self, age_s: float) -> float:
        """The thinning bucket for a point of this age (beyond the recent window)."""
        days = self.retention_s / self.scale / DAY
        if days <= 1:
            return HOUR * self.scale
        if days <= 7 or age_s <= 7 * DAY * self.scale:
            return 2 * HOUR * self.scale
        return 4 * HOUR * self.scale

    def keep(self, points: Sequence[tuple[int, float, str]], now: float) -> set[int]:
        """Sequence numbers to keep of ``(seq, taken_at, type)`` points."""
        if not points:
            return set()
        newest = max(points, key=lambda p: (p[1], p[0]))
        keep = {newest[0]}
        if self.retention_s <= 0:
            return keep
        apps = [p for p in points if p[2] == "app-consistent" and now - p[1] <= self.retention_s]
        if apps:
            keep.add(max(apps, key=lambda p: (p[1], p[0]))[0])
        recent = min(2 * HOUR * self.scale, self.retention_s)
        buckets: dict[tuple[float, int], tuple[float, int]] = {}
        for seq, taken, _ in points:
            age = now - taken
            if age <= recent:
                keep.add(seq)
            if age <= self.retention_s:
                # Recent points count for their bucket too: no extra point next to the window.
                size = self.bucket_s(age)
                key = (size, math.floor(taken / size))
                if key not in buckets or (taken, seq) > buckets[key]:
                    buckets[key] = (taken, seq)
        keep.update(seq for _, seq in buckets.values())
        return keep


# --- health -----------------------------------------------------------------------------------


def health(
    *, has_point: bool, resyncing: bool, rpo_s: float | None, threshold_s: float
) -> tuple[str, bool]:
    """(state, RPO alert) of a disk, as ASR reports it.

    Critical when the newest point is older than the RPO threshold; otherwise Resynchronizing
    while a resync runs, InitialReplication until the first point, Protected after.
    """
    alert = rpo_s is not None and rpo_s > threshold_s
    if alert:
        return "Critical", True
    if resyncing:
        return "Resynchronizing", False
    if not has_point:
        return "InitialReplication", False
    return "Protected", False
