"""Synthetic user hosts: outside both sites, resolving names through the lab's DNS."""

from __future__ import annotations

from pathlib import Path

from harness import state
from harness.components.common import base_spec, running_ready
from harness.plan import HostPlan, LabPlan
from harness.runtime import ContainerSpec, Runtime

LOG_DIR = "/var/lib/drill"


def log_dir(plan: LabPlan, hp: HostPlan) -> Path:
    """Where the client's request logs appear on the host (mounted at LOG_DIR)."""
    return state.lab_dir(plan.lab) / "clients" / hp.name


def prepare(plan: LabPlan, hp: HostPlan) -> None:
    """Make the log folder the container mounts."""
    log_dir(plan, hp).mkdir(parents=True, exist_ok=True)


def spec(plan: LabPlan, hp: HostPlan) -> ContainerSpec:
    """A client container whose resolver is the lab's DNS host, logging into the lab state."""
    dns = [p.address for p in plan.hosts.values() if p.role == "dns" and p.site is None]
    return base_spec(
        plan, hp, "client", dns=tuple(dns), binds={str(log_dir(plan, hp)): f"{LOG_DIR}:rw"}
    )


def configure(rt: Runtime, plan: LabPlan, hp: HostPlan) -> None:
    """Nothing to configure: internet hosts need no routes."""


def check_ready(rt: Runtime, plan: LabPlan, hp: HostPlan) -> str | None:
    """Ready when its container runs (it runs nothing but the commands drills give it)."""
    return running_ready(rt, plan, hp.container)
