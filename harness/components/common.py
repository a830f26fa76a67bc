"""What every host component shares: the base container spec, routes and readiness checks."""

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
    routes = routes_env(plan, hp)
    if routes:
        env["DRILL_ROUTES"] = routes
    env.update(extra.pop("env", {}) or {})  # type: ignore[call-overload]
    # Site hosts set their own routes to the gateway (the image's entrypoint reads
    # DRILL_ROUTES); `exec --privileged` fails on some kernels.
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


def routes_env(plan: LabPlan, hp: HostPlan) -> str:
    """``DRILL_ROUTES`` for the base image's entrypoint: every other site subnet via the host's
    site gateway, as ``SUBNET=GATEWAY`` pairs ("" if it has no gateway).

    The container sets them itself as it starts: no exec per host during ``up`` (each costs the
    engine three round trips), and a restarted host gets them back.
    """
    if hp.gateway is None:
        return ""
    return " ".join(f"{s}={hp.gateway}" for s in routes_for(plan, hp))


def container_state(rt: Runtime, plan: LabPlan, container: str) -> str | None:
    """The state of one container of this lab's run (None if it is not there)."""
    states = {c.name: c.state for c in rt.containers({naming.RUN: plan.run_id})}
    return states.get(container)


def running_ready(rt: Runtime, plan: LabPlan, container: str) -> str | None:
    """None if the container runs, else why not: the readiness of a host that serves nothing."""
    state = container_state(rt, plan, container)
    return None if state == "running" else f"the container is {state or 'missing'}"


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
