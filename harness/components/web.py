"""Web and app hosts: nginx web servers and the SharePoint/CRM stand-in apps.

Both answer ``GET /health`` on port 80; app hosts keep their documents or records in /data.
"""

from __future__ import annotations

from harness.components.common import add_routes, base_spec, http_ready
from harness.plan import HostPlan, LabPlan
from harness.runtime import ContainerSpec, Runtime


def spec(plan: LabPlan, hp: HostPlan) -> ContainerSpec:
    """nginx for web hosts, the stand-in app for app hosts."""
    if hp.role == "app":
        return base_spec(plan, hp, "app", env={"APP_KIND": hp.host.app or "documents"})
    return base_spec(plan, hp, "web")


def configure(rt: Runtime, plan: LabPlan, hp: HostPlan) -> None:
    """Routes to the other subnets via the site gateway."""
    add_routes(rt, plan, hp)


def check_ready(rt: Runtime, plan: LabPlan, hp: HostPlan) -> str | None:
    """Ready when /health answers 200."""
    return http_ready(f"http://{hp.address}/health")
