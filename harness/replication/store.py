"""The page-blob store replicas live in: Azurite through the SDK, or memory for unit tests.

``PageStore`` is the narrow interface the replicator and the harness use: page blobs (create,
Put Page, read, snapshot) in the ``replicas`` container and small manifest blobs in the
``recoverypoints`` container. ``AzurePageStore`` talks to a storage account (Azurite) with the
account's key; ``MemoryPageStore`` keeps everything in dicts, enforces the same page rules and
counts what was sent, so unit tests can check the bytes a cycle costs.

Every store error reaches callers as ``StoreError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from harness.replication.core import MAX_PUT, PAGE

REPLICAS = "replicas"
POINTS = "recoverypoints"


class StoreError(Exception):
    """A store operation failed (network, service or missing object)."""


class NotFound(StoreError):
    """The blob or snapshot does not exist."""


class PageStore(Protocol):
    """The operations on a storage account that replication needs."""

    def ensure_blob(self, name: str, size: int) -> bool:
        """Create the page blob ``name`` of ``size`` bytes if missing; True if it existed."""

    def put_page(self, name: str, offset: int, data: bytes) -> None:
        """One Put Page: page-aligned, at most MAX_PUT bytes."""

    def read(self, name: str, offset: int, length: int, snapshot: str | None = None) -> bytes:
        """Bytes of the blob (or one of its snapshots); unwritten pages read as zeros."""

    def valid_ranges(self, name: str, snapshot: str | None = None) -> list[tuple[int, int]]:
        """(offset, length) of the pages ever written (the rest reads as zeros)."""

    def snapshot(self, name: str) -> str:
        """Snapshot the blob; the snapshot's id."""

    def snapshots(self, name: str) -> list[str]:
        """The ids of the blob's snapshots."""

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        """Delete one snapshot (no error if it is gone)."""

    def put_manifest(self, name: str, data: bytes) -> None:
        """Write a manifest blob (whole, in one request)."""

    def get_manifest(self, name: str) -> bytes:
        """Read a manifest blob (NotFound if absent)."""

    def manifests(self, prefix: str) -> list[str]:
        """Manifest blob names starting with ``prefix``, sorted."""

    def delete_manifest(self, name: str) -> None:
        """Delete a manifest (no error if it is gone)."""


def _check_put(offset: int, data: bytes, size: int) -> None:
    if offset % PAGE or len(data) % PAGE or not data:
        raise StoreError(f"Put Page at {offset} (+{len(data)}) is not page-aligned")
    if len(data) > MAX_PUT:
        raise StoreError(f"Put Page of {len(data)} bytes is over Azure's 4 MiB limit")
    if offset + len(data) > size:
        raise StoreError(f"Put Page at {offset} (+{len(data)}) is past the blob's end ({size})")


class MemoryPageStore:
    """A PageStore in memory; counts Put Page calls and bytes (for tests)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytearray] = {}
        self.written: dict[str, set[int]] = {}
        self.snaps: dict[str, dict[str, bytes]] = {}
        self.docs: dict[str, bytes] = {}
        self.puts = 0
        self.bytes_put = 0
        self.fail_after: int | None = None  # fail every Put Page once this many succeeded
        self._snap_counter = 0

    def ensure_blob(self, name: str, size: int) -> bool:
        if name in self.blobs:
            return True
        self.blobs[name] = bytearray(size)
        self.written[name] = set()
        self.snaps[name] = {}
        return False

    def put_page(self, name: str, offset: int, data: bytes) -> None:
        blob = self._blob(name)
        _check_put(offset, data, len(blob))
        if self.fail_after is not None and self.puts >= self.fail_after:
            raise StoreError("injected failure")
        blob[offset : offset + len(data)] = data
        self.written[name].update(range(offset // PAGE, (offset + len(data)) // PAGE))
        self.puts += 1
        self.bytes_put += len(data)

    def _blob(self, name: str) -> bytearray:
        if name not in self.blobs:
            raise NotFound(f"no blob {name}")
        return self.blobs[name]

    def read(self, name: str, offset: int, length: int, snapshot: str | None = None) -> bytes:
        data: bytes | bytearray = self._blob(name)
        if snapshot is not None:
            if snapshot not in self.snaps[name]:
                raise NotFound(f"no snapshot {snapshot} of {name}")
            data = self.snaps[name][snapshot]
        return bytes(data[offset : offset + length])

    def valid_ranges(self, name: str, snapshot: str | None = None) -> list[tuple[int, int]]:
        self._blob(name)
        pages = sorted(self.written[name])
        out: list[tuple[int, int]] = []
        for p in pages:
            if out and out[-1][0] + out[-1][1] == p * PAGE:
                out[-1] = (out[-1][0], out[-1][1] + PAGE)
            else:
                out.append((p * PAGE, PAGE))
        return out

    def snapshot(self, name: str) -> str:
        self._snap_counter += 1
        sid = f"snap-{self._snap_counter:06d}"
        self.snaps[name][sid] = bytes(self._blob(name))
        return sid

    def snapshots(self, name: str) -> list[str]:
        return sorted(self.snaps.get(name, {}))

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        self.snaps.get(name, {}).pop(snapshot, None)

    def put_manifest(self, name: str, data: bytes) -> None:
        self.docs[name] = bytes(data)

    def get_manifest(self, name: str) -> bytes:
        if name not in self.docs:
            raise NotFound(f"no manifest {name}")
        return self.docs[name]

    def manifests(self, prefix: str) -> list[str]:
        return sorted(n for n in self.docs if n.startswith(prefix))

    def delete_manifest(self, name: str) -> None:
        self.docs.pop(name, None)


class AzurePageStore:
    """A PageStore on a storage account (Azurite), authenticated with the account key.

    The SDK's own retries are kept short: the replicator decides when to try again, and a
    partitioned tunnel must show as a failed cycle within seconds, not minutes.
    """

    def __init__(
        self,
        endpoint: str,
        account: str,
        key: str,
        *,
        connection_timeout: float = 2,
        read_timeout: float = 10,
        retries: int = 1,
    ) -> None:
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        # The storage SDK's own retry policy ignores azure-core's retry_backoff_factor and
        # waits 15 s before its first retry by default: after a partition heals, replication
        # would sit idle that long. Retry once, quickly; the replicator's cycle does the rest.
        policy = ExponentialRetry(
            initial_backoff=0.2,  # type: ignore[arg-type]
            increment_base=2,
            retry_total=retries,
            random_jitter_range=0,
        )
        self.service = BlobServiceClient(
            account_url=endpoint,
            credential={"account_name": account, "account_key": key},
            connection_timeout=connection_timeout,
            read_timeout=read_timeout,
            retry_policy=policy,
        )
        self.replicas = self.service.get_container_client(REPLICAS)
        self.points = self.service.get_container_client(POINTS)

    def ensure_containers(self) -> None:
        """Create the two containers if they are missing."""
        from azure.core.exceptions import ResourceExistsError

        with _translated("creating containers"):
            for c in (self.replicas, self.points):
                with contextlib.suppress(ResourceExistsError):
                    c.create_container()

    def ensure_blob(self, name: str, size: int) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self.replicas.get_blob_client(name)
        with _translated(f"creating page blob {name}"):
            try:
                props = blob.get_blob_properties()
            except ResourceNotFoundError:
                blob.create_page_blob(size)
                return False
        if props.size != size:
            raise StoreError(f"page blob {name} has {props.size} bytes, the disk {size}")
        return True

    def put_page(self, name: str, offset: int, data: bytes) -> None:
        blob = self.replicas.get_blob_client(name)
        if offset % PAGE or len(data) % PAGE or not data or len(data) > MAX_PUT:
            raise StoreError(f"Put Page at {offset} (+{len(data)}) breaks the page rules")
        with _translated(f"Put Page {name} at {offset}"):
            blob.upload_page(data, offset=offset, length=len(data))

    def read(self, name: str, offset: int, length: int, snapshot: str | None = None) -> bytes:
        blob = self.replicas.get_blob_client(name, snapshot=snapshot)
        with _translated(f"reading {name}"):
            data: bytes = blob.download_blob(offset=offset, length=length).readall()
        return data

    def valid_ranges(self, name: str, snapshot: str | None = None) -> list[tuple[int, int]]:
        blob = self.replicas.get_blob_client(name, snapshot=snapshot)
        with _translated(f"listing page ranges of {name}"):
            ranges = list(blob.list_page_ranges())
        return [
            (int(r.start or 0), int(r.end or 0) - int(r.start or 0) + 1)
            for r in ranges
            if not r.cleared
        ]

    def snapshot(self, name: str) -> str:
        with _translated(f"snapshotting {name}"):
            res: dict[str, Any] = self.replicas.get_blob_client(name).create_snapshot()
        return str(res["snapshot"])

    def snapshots(self, name: str) -> list[str]:
        with _translated(f"listing snapshots of {name}"):
            items = self.replicas.list_blobs(name_starts_with=name, include=["snapshots"])
            found = sorted(str(b.snapshot) for b in items if b.name == name and b.snapshot)
        return found

    def delete_snapshot(self, name: str, snapshot: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with (
            _translated(f"deleting snapshot {snapshot} of {name}"),
            contextlib.suppress(ResourceNotFoundError),
        ):
            self.replicas.get_blob_client(name, snapshot=snapshot).delete_blob()

    def put_manifest(self, name: str, data: bytes) -> None:
        with _translated(f"writing manifest {name}"):
            self.points.get_blob_client(name).upload_blob(data, overwrite=True)

    def get_manifest(self, name: str) -> bytes:
        with _translated(f"reading manifest {name}"):
            data: bytes = self.points.get_blob_client(name).download_blob().readall()
        return data

    def manifests(self, prefix: str) -> list[str]:
        with _translated("listing manifests"):
            found = sorted(str(b.name) for b in self.points.list_blobs(name_starts_with=prefix))
        return found

    def delete_manifest(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with _translated(f"deleting manifest {name}"), contextlib.suppress(ResourceNotFoundError):
            self.points.get_blob_client(name).delete_blob()


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn SDK and transport errors into StoreError / NotFound, naming the action."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    try:
        yield
    except ResourceNotFoundError as exc:
        raise NotFound(f"{action}: not found") from exc
    except (AzureError, OSError) as exc:
        msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise StoreError(f"{action}: {msg}") from exc


def iter_pieces(offset: int, length: int, piece: int = MAX_PUT) -> Iterator[tuple[int, int]]:
    """(offset, length) pieces of at most ``piece`` bytes covering a range."""
    end = offset + length
    while offset < end:
        n = min(piece, end - offset)
        yield offset, n
        offset += n
