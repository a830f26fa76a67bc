"""The lab's DNS server: CoreDNS on the internet network, answering like Traffic Manager.

The lab writes its configuration into ``<lab state>/dns/`` (a Corefile, a hosts file naming
every host as ``<host>.<site>.drill.test``, and ``tm/profile.json`` for the Traffic Manager
prober, see ``harness.trafficmanager``) and mounts that folder at /etc/coredns. CoreDNS forwards
nothing: a lab never resolves names outside itself.
"""

from __future__ import annotations

from pathlib import Path

from harness import state
from harness.components.common import base_spec, http_ready
from harness.plan import HostPlan, LabPlan
from harness.runtime import ContainerSpec, Runtime

READY_PORT = 8181
LAB_ZONE = "drill.test"


def config_dir(plan: LabPlan) -> Path:
    """Where the lab's CoreDNS configuration lives on the host."""
    return state.lab_dir(plan.lab) / "dns"


def hosts_file(plan: LabPlan) -> str:
    """``address name`` lines for every host and gateway of the lab."""
    lines = []
    for hp in plan.hosts.values():
        where = hp.site or "internet"
        lines.append(f"{hp.address} {hp.name}.{where}.{LAB_ZONE}")
        if hp.public_address:
            lines.append(f"{hp.public_address} {hp.name}.public.{LAB_ZONE}")
    for gp in plan.gateways.values():
        lines.append(f"{gp.wan_address} gateway.{gp.site}.{LAB_ZONE}")
    return "\n".join(lines) + "\n"


COREFILE = f"""\
. {{
    trafficmanager /etc/coredns/tm/state.json
    hosts /etc/coredns/hosts {LAB_ZONE} {{
        reload 1s
    }}
    health :8080
    ready :{READY_PORT}
    errors
}}
"""


def prepare(plan: LabPlan, hp: HostPlan) -> None:
    """Write the Corefile and hosts file the container will mount."""
    d = config_dir(plan)
    d.mkdir(parents=True, exist_ok=True)
    (d / "Corefile").write_text(COREFILE, encoding="utf-8")
    (d / "hosts").write_text(hosts_file(plan), encoding="utf-8")
    if plan.topology.traffic_manager is not None:
        from harness import trafficmanager  # late: trafficmanager builds on the lab module

        trafficmanager.write_profile(plan)


def spec(plan: LabPlan, hp: HostPlan) -> ContainerSpec:
    """CoreDNS with the lab's configuration folder mounted."""
    return base_spec(plan, hp, "dns", binds={str(config_dir(plan)): "/etc/coredns:rw"})


def configure(rt: Runtime, plan: LabPlan, hp: HostPlan) -> None:
    """Nothing: the internet host needs no routes."""


def check_ready(rt: Runtime, plan: LabPlan, hp: HostPlan) -> str | None:
    """Ready when CoreDNS's ready plugin answers 200 and the prober has decided once."""
    why = http_ready(f"http://{hp.address}:{READY_PORT}/ready")
    decided = (config_dir(plan) / "tm" / "state.json").exists()
    if why is None and plan.topology.traffic_manager is not None and not decided:
        return "the Traffic Manager prober has not published its first decision"
    return why
