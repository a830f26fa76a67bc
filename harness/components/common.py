"""What every host component shares: the base container spec, routes and HTTP checks."""

from __future__ import annotations

import socket

import requests

from harness import naming
from harness.plan import HostPlan, LabPlan
from harness.runtime import Attachment, ContainerSpec, Runtime

HTTP_CHECK_TIMEOUT_S = 1.0


def base_spec(plan: LabPlan, hp: HostPlan, role_image: str, **extra: object) -> ContainerSpec:
    """A host's container: its role image, its networks, labels and identity env."""
    networks = [Attachment(hp.network, hp.address)]
    if hp.public_address:
        networks.append(Attachment(plan.networks["internet"].name, hp.public_address))
    env = {"DRILL_HOST": hp.name, "DRILL_SITE": hp.site or "internet", "DRILL_LAB": plan.lab}
    env.update(extra.pop("env", {}) or {})  # type: ignore[call-overload]
    # Site hosts set their own routes to the gateway; `exec --privileged` fails on some kernels.
    if hp.site is not None:
        extra.setdefault("cap_add", ("NET_ADMIN",))
    if hp.host.disks:  # data disks, mounted on the harness host (see harness.disks)
        from harness import disks

        binds = dict(extra.pop("binds", {}) or {})  # type: ignore[call-overload]
        extra["binds"] = {**disks.binds(plan, hp), **binds}
    return ContainerSpec(
        name=hp.container,
        image=naming.image_ref(role_image),
        hostname=hp.name,
        networks=tuple(networks),
        labels=plan.object_labels("host", hp.name, hp.site),
        env=env,
        **extra,  # type: ignore[arg-type]
    )


def routes_for(plan: LabPlan, hp: HostPlan) -> list[str]:
    """The subnets a site host reaches through its site gateway (all but its own)."""
    if hp.site is None:
        return []
    own = plan.networks[_key_of(plan, hp.network)].subnet
    subnets = []
    for sname in plan.topology.sites:
        subnets += [s for s in plan.site_subnets(sname) if s != own]
    return subnets


def _key_of(plan: LabPlan, network_name: str) -> str:
    return next(k for k, spec in plan.networks.items() if spec.name == network_name)


def route_script(plan: LabPlan, hp: HostPlan) -> str:
    """Shell lines routing every other site subnet via the host's site gateway ("" if none)."""
    if hp.gateway is None:
        return ""
    return "\n".join(f"ip route replace {s} via {hp.gateway}" for s in routes_for(plan, hp))


def add_routes(rt: Runtime, plan: LabPlan, hp: HostPlan) -> None:
    """Route every other site subnet via the host's own site gateway (no other path exists)."""
    script = route_script(plan, hp)
    if not script:
        return
    # One exec for all routes: each exec is three engine round trips.
    res = rt.exec(hp.container, ["sh", "-ec", script])
    if not res.ok:
        from harness.errors import HarnessError

        raise HarnessError(f"adding routes via {hp.gateway} in {hp.name}: {res.output.strip()}")


def http_ready(url: str, expect: int | None = 200) -> str | None:
    """None if ``url`` answers (with ``expect`` when given), else why not."""
    try:
        r = requests.get(url, timeout=HTTP_CHECK_TIMEOUT_S)
    except requests.RequestException as exc:
        return f"GET {url}: {type(exc).__name__}"
    if expect is not None and r.status_code != expect:
        return f"GET {url}: HTTP {r.status_code}"
    return None


def tcp_ready(host: str, port: int) -> str | None:
    """None if a TCP connection to host:port succeeds, else why not."""
    try:
        with socket.create_connection((host, port), timeout=HTTP_CHECK_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"connect {host}:{port}: {exc}"
