"""Directory hosts: OpenLDAP (slapd), for AD on-prem and Azure AD in the recovery site."""

from __future__ import annotations

from harness.components.common import add_routes, base_spec, tcp_ready
from harness.plan import HostPlan, LabPlan
from harness.runtime import ContainerSpec, Runtime

LDAP_PORT = 389


def spec(plan: LabPlan, hp: HostPlan) -> ContainerSpec:
    """slapd with the lab's suffix."""
    return base_spec(plan, hp, "directory", env={"LDAP_DOMAIN": "contoso.test"})


def configure(rt: Runtime, plan: LabPlan, hp: HostPlan) -> None:
    """Routes to the other subnets via the site gateway."""
    add_routes(rt, plan, hp)


def check_ready(rt: Runtime, plan: LabPlan, hp: HostPlan) -> str | None:
    """Ready when LDAP accepts connections."""
    return tcp_ready(hp.address, LDAP_PORT)
