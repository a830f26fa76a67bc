"""The runtime: the only container operations the harness uses, behind one narrow interface.

``Runtime`` is a Protocol with two implementations: ``DockerRuntime`` (the real engine, through
the docker SDK; every Docker error is translated into ``EngineError`` here and nowhere else) and
``FakeRuntime`` in ``harness.fake_runtime`` (in memory, for fast unit tests only).

Specs are plain frozen dataclasses so that a lab plan can be built, compared and printed without
an engine.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import docker
import docker.errors
import requests

from harness.errors import EngineError


@dataclass(frozen=True)
class NetworkSpec:
    """A bridge network with a fixed subnet."""

    name: str
    subnet: str
    gateway: str
    labels: Mapping[str, str]
    internal: bool = True


@dataclass(frozen=True)
class Attachment:
    """A container's address on one network."""

    network: str
    address: str


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create and start one container."""

    name: str
    image: str
    hostname: str
    networks: tuple[Attachment, ...]
    labels: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None
    cap_add: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    binds: Mapping[str, str] = field(default_factory=dict)  # host path -> "container:mode"
    dns: tuple[str, ...] = ()
    privileged: bool = False
    cpu_shares: int | None = None  # relative CPU weight (Docker's default is 1024)
    network_mode: str | None = None  # e.g. "host" for one-off tasks; then networks is empty


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a command run inside a container."""

    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class ContainerInfo:
    """What the harness needs to know about an existing container."""

    name: str
    state: str  # created | running | exited | paused | ...
    labels: Mapping[str, str]
    addresses: Mapping[str, str]  # network name -> IPv4
    started_at: str = ""


@dataclass(frozen=True)
class NetworkInfo:
    """What the harness needs to know about an existing network."""

    name: str
    subnet: str
    labels: Mapping[str, str]
    id: str = ""

    @property
    def bridge(self) -> str:
        """The Linux bridge Docker made for this network."""
        return f"br-{self.id[:12]}"


class Runtime(Protocol):
    """The container operations the harness uses, and nothing more."""

    def create_network(self, spec: NetworkSpec) -> None:
        """Create a network; EngineError if its name or subnet is taken."""

    def run(self, spec: ContainerSpec) -> None:
        """Create, attach to every network, and start a container."""

    def exec(self, name: str, cmd: Sequence[str], *, privileged: bool = False) -> ExecResult:
        """Run a command in a running container and wait for it."""

    def run_task(self, spec: ContainerSpec, timeout_s: float = 30) -> ExecResult:
        """Run a one-off container to completion, return its exit code and output, remove it."""

    def stop(self, name: str, timeout_s: int = 2) -> None:
        """Stop a container (SIGTERM, then SIGKILL after timeout)."""

    def start(self, name: str) -> None:
        """Start a stopped container."""

    def logs(self, name: str, tail: int = 30) -> str:
        """The last lines of a container's output."""

    def containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers carrying all the given labels (running or not)."""

    def networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        """Networks carrying all the given labels."""

    def all_subnets(self) -> list[str]:
        """The subnets of every network on the engine, ours or not."""

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        """Create a named volume with labels."""

    def remove_container(self, name: str) -> None:
        """Force-remove a container (and its anonymous volumes); no error if absent."""

    def remove_network(self, name: str) -> None:
        """Remove a network; no error if absent."""

    def remove_volumes(self, labels: Mapping[str, str]) -> int:
        """Remove volumes carrying the labels; returns how many."""


def _label_filter(labels: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" if v else k for k, v in labels.items()]


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn docker SDK and transport errors into EngineError, naming the action."""
    try:
        yield
    except docker.errors.APIError as exc:
        reason = exc.explanation or str(exc)
        raise EngineError(f"{action}: {reason}") from exc
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        raise EngineError(f"{action}: {exc}") from exc


class DockerRuntime:
    """The real engine, through the docker SDK."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    @property
    def api(self) -> Any:
        return self.client.api

    def create_network(self, spec: NetworkSpec) -> None:
        with _translated(f"creating network {spec.name} ({spec.subnet})"):
            ipam = docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=spec.subnet, gateway=spec.gateway)]
            )
            self.client.networks.create(
                spec.name,
                driver="bridge",
                internal=spec.internal,
                ipam=ipam,
                labels=dict(spec.labels),
                check_duplicate=True,
            )

    def run(self, spec: ContainerSpec) -> None:
        self._create(spec)
        with _translated(f"starting container {spec.name}"):
            self.api.start(spec.name)

    def run_task(self, spec: ContainerSpec, timeout_s: float = 30) -> ExecResult:
        self._create(spec)
        try:
            with _translated(f"running task {spec.name}"):
                self.api.start(spec.name)
                code = self.api.wait(spec.name, timeout=timeout_s)["StatusCode"]
                out = self.api.logs(spec.name, stdout=True, stderr=True)
        finally:
            self.remove_container(spec.name)
        return ExecResult(int(code), out.decode("utf-8", "replace"))

    def _create(self, spec: ContainerSpec) -> None:
        with _translated(f"creating container {spec.name}"):
            host_config = self.api.create_host_config(
                cap_add=list(spec.cap_add) or None,
                devices=[f"{d}:{d}:rwm" for d in spec.devices] or None,
                sysctls=dict(spec.sysctls) or None,
                binds={h: _bind(c) for h, c in spec.binds.items()} or None,
                dns=list(spec.dns) or None,
                privileged=spec.privileged,
                cpu_shares=spec.cpu_shares,
                init=False,
                network_mode=spec.network_mode,
            )
            net_config = None
            if spec.networks:
                first = spec.networks[0]
                net_config = self.api.create_networking_config(
                    {first.network: self.api.create_endpoint_config(ipv4_address=first.address)}
                )
            self.api.create_container(
                spec.image,
                command=list(spec.command) if spec.command else None,
                name=spec.name,
                hostname=spec.hostname or None,  # none when sharing a namespace
                environment=dict(spec.env),
                labels=dict(spec.labels),
                host_config=host_config,
                networking_config=net_config,
                detach=True,
            )
        for att in spec.networks[1:]:
            with _translated(f"attaching {spec.name} to {att.network}"):
                self.api.connect_container_to_network(
                    spec.name, att.network, ipv4_address=att.address
                )

    def exec(self, name: str, cmd: Sequence[str], *, privileged: bool = False) -> ExecResult:
        with _translated(f"running {' '.join(cmd)!r} in {name}"):
            exec_id = self.api.exec_create(name, list(cmd), privileged=privileged)["Id"]
            out = self._exec_output(exec_id)
            code = self.api.exec_inspect(exec_id)["ExitCode"]
        text = out.decode("utf-8", "replace")
        return ExecResult(int(code if code is not None else -1), text)

    def _exec_output(self, exec_id: str) -> bytes:
        """Start an exec and read its output (stdout and stderr, as the engine sent them).

        Not the SDK's exec_start: it reads the raw socket, behind the buffer the response's
        headers were parsed from, where a quick command's first output may already sit
        (docker/docker-py#2042). Here it lost about 3% of `echo`s' output under load.
        """
        api = self.api
        res = api._post_json(
            api._url("/exec/{0}/start", exec_id),
            headers={"Connection": "Upgrade", "Upgrade": "tcp"},
            data={"Tty": False, "Detach": False},
            stream=True,
        )
        try:
            api._raise_for_status(res)
            stream: bytes = res.raw._fp.fp.read()  # the buffered reader, up to the end
        finally:
            res.close()
        return demux_stream(stream)

    def stop(self, name: str, timeout_s: int = 2) -> None:
        with _translated(f"stopping {name}"):
            self.api.stop(name, timeout=timeout_s)

    def start(self, name: str) -> None:
        with _translated(f"starting {name}"):
            self.api.start(name)

    def logs(self, name: str, tail: int = 30) -> str:
        try:
            out = self.api.logs(name, tail=tail, stdout=True, stderr=True)
        except (docker.errors.DockerException, requests.RequestException):
            return "(no logs available)"
        return out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)

    def containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        with _translated("listing containers"):
            raw = self.api.containers(all=True, filters={"label": _label_filter(labels)})
        out = []
        for c in raw:
            nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
            out.append(
                ContainerInfo(
                    name=c["Names"][0].lstrip("/"),
                    state=c["State"],
                    labels=c.get("Labels") or {},
                    addresses={n: v.get("IPAddress", "") for n, v in nets.items()},
                    started_at=str(c.get("Created", "")),
                )
            )
        return out

    def networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        with _translated("listing networks"):
            raw = self.api.networks(filters={"label": _label_filter(labels)})
        return [_network_info(n) for n in raw]

    def all_subnets(self) -> list[str]:
        with _translated("listing networks"):
            raw = self.api.networks()
        return [s for n in raw for s in _subnets(n)]

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        with _translated(f"creating volume {name}"):
            self.api.create_volume(name=name, labels=dict(labels))

    def remove_container(self, name: str) -> None:
        try:
            with _translated(f"removing container {name}"):
                self.api.remove_container(name, force=True, v=True)
        except EngineError as exc:
            if "No such container" in str(exc) or "is already in progress" in str(exc):
                return
            raise

    def remove_network(self, name: str) -> None:
        for attempt in range(20):
            try:
                with _translated(f"removing network {name}"):
                    self.api.remove_network(name)
                return
            except EngineError as exc:
                text = str(exc)
                if "not found" in text or "No such network" in text:
                    return
                # Endpoints of just-removed containers can linger for a moment.
                if "active endpoints" in text and attempt < 19:
                    if attempt == 10:
                        self._drop_stale_endpoints(name)
                    time.sleep(0.1)
                    continue
                if "active endpoints" in text and not self._endpoints(name):
                    raise EngineError(
                        f"network {name} counts endpoints although no container is attached: "
                        "a Docker engine bug (moby/moby#42119) seen when a container is removed "
                        "while it is being connected (an interrupted or killed `up`). Restarting "
                        "the engine clears it (`drill engine stop && drill engine ensure` for "
                        "drill's private engine, once no other lab runs), then `drill down --all`."
                    ) from exc
                raise

    def _endpoints(self, network: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.api.inspect_network(network).get("Containers") or {}
        except (docker.errors.DockerException, requests.RequestException):
            return {}
        return found

    def _drop_stale_endpoints(self, network: str) -> None:
        """Force-disconnect endpoints whose container is gone (by endpoint name, as Docker
        wants for those)."""
        for key, ep in self._endpoints(network).items():
            name = ep.get("Name") or key
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                self.api.disconnect_container_from_network(name, network, force=True)

    def remove_volumes(self, labels: Mapping[str, str]) -> int:
        with _translated("listing volumes"):
            vols = self.api.volumes(filters={"label": _label_filter(labels)}).get("Volumes") or []
        for v in vols:
            with _translated(f"removing volume {v['Name']}"):
                self.api.remove_volume(v["Name"], force=True)
        return len(vols)


def demux_stream(stream: bytes) -> bytes:
    """The payloads of a multiplexed exec/attach stream: frames of an 8-byte header (stream
    type, 3 zero bytes, big-endian size) and that many bytes."""
    out = bytearray()
    at = 0
    while at + 8 <= len(stream):
        (size,) = struct.unpack(">L", stream[at + 4 : at + 8])
        out += stream[at + 8 : at + 8 + size]
        at += 8 + size
    return bytes(out)


def _bind(container_spec: str) -> dict[str, str]:
    path, _, mode = container_spec.partition(":")
    return {"bind": path, "mode": mode or "rw"}


def _subnets(raw: Mapping[str, Any]) -> list[str]:
    cfg = ((raw.get("IPAM") or {}).get("Config")) or []
    return [c["Subnet"] for c in cfg if c.get("Subnet")]


def _network_info(raw: Mapping[str, Any]) -> NetworkInfo:
    subs = _subnets(raw)
    return NetworkInfo(
        raw["Name"], subs[0] if subs else "", raw.get("Labels") or {}, raw.get("Id", "")
    )
