"""Web and app hosts: nginx web servers and the SharePoint/CRM stand-in apps.

Both answer ``GET /health`` on port 80; app hosts keep their documents or records in /data and,
in a site with a directory (topology ``identity``), require logins checked against it.
"""

from __future__ import annotations

from harness import identity
from harness.components.common import base_spec, http_ready
from harness.plan import HostPlan, LabPlan
from harness.runtime import ContainerSpec, Runtime


def spec(plan: LabPlan, hp: HostPlan) -> ContainerSpec:
    """nginx for web hosts, the stand-in app for app hosts."""
    if hp.role == "app":
        env: dict[str, str] = {"APP_KIND": hp.host.app or "documents"}
        # Logins against the site's own directory, when the topology has one there.
        env.update(identity.app_env(plan, hp.site))
        return base_spec(plan, hp, "app", env=env)
    return base_spec(plan, hp, "web", env={"DRILL_BACKENDS": backends(plan, hp)})


def backends(plan: LabPlan, hp: HostPlan) -> str:
    """DRILL_BACKENDS: each proxied prefix and the app host's address in this host's site."""
    home = plan.hosts[hp.name].site
    out = []
    for prefix, target in hp.host.backends.items():
        backend = plan.hosts[target]
        if hp.site == home:
            addr = backend.address
        else:  # a recovery copy proxies to the recovered copy of its backend
            placement = backend.host.recovery
            assert placement is not None  # validated
            addr = plan.addr(placement.address)
        out.append(f"{prefix}={addr}")
    return ",".join(out)


def configure(rt: Runtime, plan: LabPlan, hp: HostPlan) -> None:
    """Nothing: the container routes the other subnets via its site gateway as it starts."""


def check_ready(rt: Runtime, plan: LabPlan, hp: HostPlan) -> str | None:
    """Ready when /health answers 200."""
    return http_ready(f"http://{hp.address}/health")
