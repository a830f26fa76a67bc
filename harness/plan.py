"""The lab plan: a topology made concrete for one lab, with no side effects.

A plan fixes the lab's /16 (the topology's own, or another one from ``SLOT_POOL`` when that is
taken by another lab on the engine), the Docker networks and their names, and every host's
addresses after relocation. Relocation keeps the host part: 10.64.1.10 in 10.64.0.0/16 becomes
10.65.1.10 in 10.65.0.0/16.

Network keys: ``<site>.<subnet>`` for site subnets, ``wan`` and ``internet``; their Docker names
are ``drill-<lab>-<site>-<subnet>``, ``drill-<lab>-wan`` and ``drill-<lab>-internet``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness import naming
from harness.runtime import NetworkSpec
from harness.topology import Host, Topology

SLOT_POOL = ipaddress.IPv4Network("10.64.0.0/10")
"""Where labs are relocated to when their own /16 is taken: 64 slots of /16."""


def relocate(
    addr: ipaddress.IPv4Address, old: ipaddress.IPv4Network, new: ipaddress.IPv4Network
) -> ipaddress.IPv4Address:
    """The address with the same host part in the new space."""
    return new.network_address + (int(addr) - int(old.network_address))


def relocate_net(
    net: ipaddress.IPv4Network, old: ipaddress.IPv4Network, new: ipaddress.IPv4Network
) -> ipaddress.IPv4Network:
    """The subnet with the same position in the new space."""
    return ipaddress.IPv4Network((relocate(net.network_address, old, new), net.prefixlen))


def candidate_spaces(topology: Topology) -> list[ipaddress.IPv4Network]:
    """The /16s a lab may use, the topology's own first."""
    own = topology.addressing.space
    return [own] + [s for s in SLOT_POOL.subnets(new_prefix=16) if s != own]


def free_space(topology: Topology, used: Iterable[str]) -> ipaddress.IPv4Network | None:
    """The first candidate /16 that overlaps no existing network, or None."""
    taken = [ipaddress.ip_network(s, strict=False) for s in used if ":" not in s]
    for space in candidate_spaces(topology):
        if not any(space.overlaps(t) for t in taken):
            return space
    return None


@dataclass(frozen=True)
class HostPlan:
    """One host of the lab with its concrete addresses."""

    name: str
    site: str | None
    host: Host
    container: str
    network: str  # Docker name of its primary network
    address: str
    public_address: str | None
    gateway: str | None  # its site gateway's address on its subnet

    @property
    def role(self) -> str:
        return self.host.role


@dataclass(frozen=True)
class GatewayPlan:
    """A site's VPN gateway with its concrete addresses."""

    site: str
    container: str
    wan_address: str
    lan: dict[str, str]  # Docker network name -> address
    lan_subnets: tuple[str, ...]  # the site's subnets (CIDR)


@dataclass(frozen=True)
class LabPlan:
    """Everything about a lab that can be decided without an engine."""

    lab: str
    run_id: str
    topology: Topology
    space: ipaddress.IPv4Network
    networks: dict[str, NetworkSpec] = field(default_factory=dict)  # key -> spec
    hosts: dict[str, HostPlan] = field(default_factory=dict)
    gateways: dict[str, GatewayPlan] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return naming.lab_labels(self.lab, self.run_id, self.topology.name)

    def addr(self, ip: ipaddress.IPv4Address) -> str:
        """An address of the topology, relocated into this lab's space."""
        return str(relocate(ip, self.topology.addressing.space, self.space))

    def net(self, net: ipaddress.IPv4Network) -> str:
        """A subnet of the topology, relocated into this lab's space."""
        return str(relocate_net(net, self.topology.addressing.space, self.space))

    def network_name(self, key: str) -> str:
        """Docker name of a network by its key (``site.subnet``, ``wan``, ``internet``)."""
        return naming.object_name(self.lab, key.replace(".", "-"))

    def site_subnets(self, site: str) -> list[str]:
        """A site's subnets (CIDR, relocated)."""
        return [self.net(n) for n in self.topology.sites[site].subnets.values()]

    def object_labels(self, kind: str, component: str, site: str | None = None) -> dict[str, str]:
        """Labels for one object of this lab."""
        labels = dict(self.labels)
        labels[naming.KIND] = kind
        labels[naming.COMPONENT] = component
        if site:
            labels[naming.SITE] = site
        return labels


def make_plan(topology: Topology, lab: str, run_id: str, space: ipaddress.IPv4Network) -> LabPlan:
    """Make the plan of a lab in the given /16."""
    plan = LabPlan(lab=lab, run_id=run_id, topology=topology, space=space)
    t = topology

    def add_network(key: str, subnet: ipaddress.IPv4Network, site: str | None) -> None:
        cidr = plan.net(subnet)
        gw = str(ipaddress.IPv4Network(cidr).network_address + 1)
        name = plan.network_name(key)
        plan.networks[key] = NetworkSpec(
            name=name,
            subnet=cidr,
            gateway=gw,
            labels=plan.object_labels("network", key, site),
            internal=True,
        )

    for sname, site in t.sites.items():
        for subname, subnet in site.subnets.items():
            add_network(f"{sname}.{subname}", subnet, sname)
    add_network("wan", t.addressing.wan, None)
    add_network("internet", t.addressing.internet, None)

    for sname, site in t.sites.items():
        gw = site.gateway
        plan.gateways[sname] = GatewayPlan(
            site=sname,
            container=naming.object_name(lab, f"{sname}-gw"),
            wan_address=plan.addr(gw.wan_address),
            lan={
                plan.networks[f"{sname}.{sub}"].name: plan.addr(a)
                for sub, a in gw.addresses.items()
            },
            lan_subnets=tuple(plan.site_subnets(sname)),
        )

    for site_name, hname, host in t.hosts():
        if site_name is None:
            network = plan.networks["internet"].name
            gateway = None
        else:
            assert host.subnet is not None  # guaranteed by validation
            network = plan.networks[f"{site_name}.{host.subnet}"].name
            gateway = plan.addr(t.sites[site_name].gateway.addresses[host.subnet])
        plan.hosts[hname] = HostPlan(
            name=hname,
            site=site_name,
            host=host,
            container=naming.object_name(lab, hname),
            network=network,
            address=plan.addr(host.address),
            public_address=plan.addr(host.public_address) if host.public_address else None,
            gateway=gateway,
        )
    return plan
