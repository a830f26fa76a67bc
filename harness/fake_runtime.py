"""An in-memory Runtime for fast unit tests of lab logic. Never proof that a feature works.

It keeps containers, networks and volumes as dictionaries, enforces unique names and
non-overlapping subnets like the engine does, and answers ``exec`` with success (or what a test
scripted in ``exec_results``); ``test`` commands fail, as a fake container holds no files.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from harness.errors import EngineError
from harness.runtime import ContainerInfo, ContainerSpec, ExecResult, NetworkInfo, NetworkSpec


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(k in labels and (not v or labels[k] == v) for k, v in selector.items())


@dataclass
class FakeRuntime:
    """Containers, networks and volumes in dictionaries."""

    containers_: dict[str, tuple[ContainerSpec, str]] = field(default_factory=dict)
    networks_: dict[str, NetworkSpec] = field(default_factory=dict)
    volumes_: dict[str, Mapping[str, str]] = field(default_factory=dict)
    foreign_subnets: list[str] = field(default_factory=list)
    exec_results: Callable[[str, Sequence[str]], ExecResult] | None = None
    fail_run: set[str] = field(default_factory=set)
    execs: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create_network(self, spec: NetworkSpec) -> None:
        with self._lock:
            if spec.name in self.networks_:
                raise EngineError(f"network with name {spec.name} already exists")
            new = ipaddress.ip_network(spec.subnet)
            for s in self.all_subnets_unlocked():
                if new.overlaps(ipaddress.ip_network(s)):
                    raise EngineError("Pool overlaps with other one on this address space")
            self.networks_[spec.name] = spec

    def run(self, spec: ContainerSpec) -> None:
        with self._lock:
            if spec.name in self.containers_:
                raise EngineError(f"Conflict. The container name {spec.name} is already in use")
            for att in spec.networks:
                if att.network not in self.networks_:
                    raise EngineError(f"network {att.network} not found")
            if spec.name in self.fail_run:
                self.containers_[spec.name] = (spec, "exited")
                return
            self.containers_[spec.name] = (spec, "running")

    def exec(self, name: str, cmd: Sequence[str], *, privileged: bool = False) -> ExecResult:
        with self._lock:
            if name not in self.containers_ or self.containers_[name][1] != "running":
                raise EngineError(f"container {name} is not running")
            self.execs.append((name, tuple(cmd)))
        if self.exec_results:
            return self.exec_results(name, cmd)
        if cmd and cmd[0] == "test":  # a fake container holds no files
            return ExecResult(1, "")
        return ExecResult(0, "")

    def run_task(self, spec: ContainerSpec, timeout_s: float = 30) -> ExecResult:
        with self._lock:
            self.execs.append((spec.name, tuple(spec.command or ())))
        return ExecResult(0, "")

    def stop(self, name: str, timeout_s: int = 2) -> None:
        with self._lock:
            spec, _ = self.containers_[name]
            self.containers_[name] = (spec, "exited")

    def start(self, name: str) -> None:
        with self._lock:
            spec, _ = self.containers_[name]
            self.containers_[name] = (spec, "running")

    def logs(self, name: str, tail: int = 30) -> str:
        return f"(fake logs of {name})"

    def containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        with self._lock:
            return [
                ContainerInfo(
                    name=name,
                    state=st,
                    labels=dict(spec.labels),
                    addresses={a.network: a.address for a in spec.networks},
                )
                for name, (spec, st) in self.containers_.items()
                if _matches(spec.labels, labels)
            ]

    def networks(self, labels: Mapping[str, str]) -> list[NetworkInfo]:
        with self._lock:
            return [
                NetworkInfo(n.name, n.subnet, dict(n.labels), id=f"{abs(hash(n.name)):012x}")
                for n in self.networks_.values()
                if _matches(n.labels, labels)
            ]

    def all_subnets_unlocked(self) -> list[str]:
        return [n.subnet for n in self.networks_.values()] + list(self.foreign_subnets)

    def all_subnets(self) -> list[str]:
        with self._lock:
            return self.all_subnets_unlocked()

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        with self._lock:
            self.volumes_[name] = dict(labels)

    def remove_container(self, name: str) -> None:
        with self._lock:
            self.containers_.pop(name, None)

    def remove_network(self, name: str) -> None:
        with self._lock:
            for spec, _ in self.containers_.values():
                if any(a.network == name for a in spec.networks):
                    raise EngineError(f"network {name} has active endpoints")
            self.networks_.pop(name, None)

    def remove_volumes(self, labels: Mapping[str, str]) -> int:
        with self._lock:
            gone = [n for n, lab in self.volumes_.items() if _matches(lab, labels)]
            for n in gone:
                del self.volumes_[n]
            return len(gone)
