"""Traffic Manager: the profile the lab's DNS host serves, its control and its status.

The harness renders the topology's profile into ``<lab state>/dns/tm/profile.json`` (endpoint
addresses after relocation, monitor settings, and the control flags set with ``drill dns``); the
prober in the dns container (``containers/dns/tmprober.py``) probes the endpoints and writes
``state.json`` (what CoreDNS's ``trafficmanager`` plugin answers) and ``status.json`` (monitor
statuses and probe history). The folder is bind-mounted, so the harness reads status without
entering the container.

Timing: after a failure, an endpoint is Degraded at most ``interval * (tolerated + 1) + timeout``
later (Azure's documented timeline), and CoreDNS answers from the new decision within
``UPDATE_BOUND_S``; clients move when their cached answer's TTL runs out.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from harness import state
from harness.errors import UsageError
from harness.lab import LabRef, open_lab
from harness.plan import LabPlan
from harness.topology import Monitor, TrafficManager

UPDATE_BOUND_S = 0.2
"""Prober decision to CoreDNS answer: the plugin re-reads state.json at most 50 ms after it
changes; the rest is margin for the prober's write."""

DNS_PORT = 53


def config_dir(lab: str) -> Path:
    """Where the lab's Traffic Manager files live on the host (mounted into the dns host)."""
    return state.lab_dir(lab) / "dns" / "tm"


def profile_of(plan: LabPlan) -> TrafficManager:
    """The lab's profile; UsageError if its topology has none."""
    tm = plan.topology.traffic_manager
    if tm is None:
        raise UsageError(f"lab {plan.lab!r} has no traffic_manager in its topology")
    return tm


def endpoint_address(plan: LabPlan, target: str, site: str) -> str:
    """The public address an endpoint names: the host's own, or its recovery placement's."""
    hp = plan.hosts[target]
    if site == hp.site:
        assert hp.public_address is not None  # validated
        return hp.public_address
    placement = hp.host.recovery
    assert placement is not None and placement.public_address is not None  # validated
    return plan.addr(placement.public_address)


def _controls(lab: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((config_dir(lab) / "controls.json").read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault("endpoints", {})
    return data


def render_profile(plan: LabPlan, controls: dict[str, Any]) -> dict[str, Any]:
    """profile.json for the prober: the topology's profile with the control flags applied."""
    tm = profile_of(plan)
    eps = {}
    for name, ep in tm.endpoints.items():
        ctl = controls["endpoints"].get(name, {})
        eps[name] = {
            "target": ep.target,
            "site": ep.site,
            "address": endpoint_address(plan, ep.target, ep.site),
            "host_header": f"{ep.target}.{ep.site}.drill.test",
            "priority": ep.priority,
            "weight": ep.weight,
            "enabled": ctl.get("enabled", ep.enabled),
            "stopped": ctl.get("stopped", False),
            "always_serve": ep.always_serve,
        }
    m = tm.monitor
    return {
        "profile": tm.profile,
        "vanity": tm.vanity,
        "enabled": controls.get("enabled", tm.enabled),
        "routing": tm.routing,
        "ttl_s": tm.ttl_s,
        "max_answers": tm.max_answers,
        "seed": controls.get("seed", tm.seed),
        "monitor": {
            "protocol": m.protocol,
            "port": m.port,
            "path": m.path,
            "headers": dict(m.headers),
            "expected_status": list(m.expected_status),
            "interval_s": m.interval_s,
            "timeout_s": m.timeout_s,
            "tolerated_failures": m.tolerated_failures,
        },
        "endpoints": eps,
    }


def write_profile(plan: LabPlan) -> None:
    """(Re)write profile.json from the topology and the lab's control flags."""
    d = config_dir(plan.lab)
    d.mkdir(parents=True, exist_ok=True)
    state.write_json_atomic(d / "profile.json", render_profile(plan, _controls(plan.lab)))


def _set_controls(ref: LabRef, update: dict[str, Any]) -> None:
    controls = _controls(ref.plan.lab)
    for key, value in update.items():
        if key == "endpoints":
            for ep, flags in value.items():
                controls["endpoints"].setdefault(ep, {}).update(flags)
        else:
            controls[key] = value
    state.write_json_atomic(config_dir(ref.plan.lab) / "controls.json", controls)
    write_profile(ref.plan)


def set_endpoint(
    lab: str, endpoint: str, *, enabled: bool | None = None, stopped: bool | None = None
) -> None:
    """Enable/disable an endpoint, or mark its resource stopped/started (Azure's Stopped)."""
    ref = open_lab(lab)
    tm = profile_of(ref.plan)
    if endpoint not in tm.endpoints:
        raise UsageError(
            f"unknown endpoint {endpoint!r}; the profile's endpoints are {', '.join(tm.endpoints)}"
        )
    flags = {k: v for k, v in (("enabled", enabled), ("stopped", stopped)) if v is not None}
    _set_controls(ref, {"endpoints": {endpoint: flags}})


def set_profile(lab: str, *, enabled: bool) -> None:
    """Enable or disable the whole profile (disabled: NXDOMAIN)."""
    ref = open_lab(lab)
    profile_of(ref.plan)
    _set_controls(ref, {"enabled": enabled})


# --- timing ----------------------------------------------------------------------------------


def degrade_bound_s(m: Monitor) -> float:
    """Worst case from an endpoint failing to the prober marking it Degraded."""
    return m.interval_s * (m.tolerated_failures + 1) + m.timeout_s


def azure_monitor(m: Monitor) -> Monitor:
    """The nearest settings Azure would accept (fast timing allows shorter ones)."""
    interval = 10.0 if m.interval_s <= 10 else 30.0
    hi = 9.0 if interval == 10 else 10.0
    timeout = min(max(m.timeout_s, 5.0), hi)
    return m.model_copy(update={"interval_s": interval, "timeout_s": timeout})


@dataclass(frozen=True)
class Timing:
    """How long until clients move, here and in real Traffic Manager."""

    emulator_degraded_s: float
    emulator_answer_s: float
    emulator_clients_move_s: float
    azure_interval_s: float
    azure_timeout_s: float
    azure_degraded_s: float
    azure_clients_move_s: float
    ttl_s: int


def timing(tm: TrafficManager) -> Timing:
    """The emulator's bounds next to Azure's documented worst case for the same profile."""
    own = degrade_bound_s(tm.monitor)
    az = azure_monitor(tm.monitor)
    az_degraded = degrade_bound_s(az)
    return Timing(
        emulator_degraded_s=own,
        emulator_answer_s=own + UPDATE_BOUND_S,
        emulator_clients_move_s=own + UPDATE_BOUND_S + tm.ttl_s,
        azure_interval_s=az.interval_s,
        azure_timeout_s=az.timeout_s,
        azure_degraded_s=az_degraded,
        azure_clients_move_s=az_degraded + tm.ttl_s,
        ttl_s=tm.ttl_s,
    )


# --- queries and status ----------------------------------------------------------------------


def dns_address(plan: LabPlan) -> str:
    """The address of the DNS host serving the profile."""
    return plan.hosts[profile_of(plan).dns_host].address


@dataclass(frozen=True)
class Answer:
    """One DNS answer as a client sees it."""

    name: str
    rcode: str
    addresses: list[str]
    cname: str | None
    ttl: int | None


def query(server: str, name: str, timeout_s: float = 1.0) -> Answer:
    """Ask the lab's DNS server for the A records of ``name``."""
    msg = dns.message.make_query(name, dns.rdatatype.A)
    resp = dns.query.udp(msg, server, port=DNS_PORT, timeout=timeout_s)
    addrs, cname, ttl = [], None, None
    for rrset in resp.answer:
        if rrset.rdtype == dns.rdatatype.CNAME:
            cname = str(rrset[0].target).rstrip(".")
        elif rrset.rdtype == dns.rdatatype.A:
            addrs += [r.address for r in rrset]
            ttl = rrset.ttl
    return Answer(name, dns.rcode.to_text(resp.rcode()), addrs, cname, ttl)


@dataclass(frozen=True)
class EndpointStatus:
    """One endpoint: where it points and what the prober thinks of it."""

    name: str
    target: str
    site: str
    address: str
    priority: int | None
    weight: int
    enabled: bool
    stopped: bool
    status: str
    consecutive_failures: int
    last_probes: list[dict[str, Any]]


@dataclass(frozen=True)
class DnsStatus:
    """The profile, its endpoints, the current answer and the timing comparison."""

    lab: str
    profile: str
    vanity: str | None
    routing: str
    ttl_s: int
    enabled: bool
    profile_status: str
    endpoints: list[EndpointStatus]
    answer: Answer | None
    prober_age_s: float | None
    timing: Timing
    answer_error: str | None = None
    serving: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_status(lab: str) -> dict[str, Any]:
    """The prober's last status.json ({} if it has written none yet)."""
    try:
        data: dict[str, Any] = json.loads((config_dir(lab) / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def status(lab: str) -> DnsStatus:
    """Each endpoint's monitor status and last probes, the profile status and current answer."""
    ref = open_lab(lab)
    tm = profile_of(ref.plan)
    prof = render_profile(ref.plan, _controls(lab))
    st = read_status(lab)
    eps = []
    for name, ep in prof["endpoints"].items():
        s = st.get("endpoints", {}).get(name, {})
        eps.append(
            EndpointStatus(
                name=name,
                target=ep["target"],
                site=ep["site"],
                address=ep["address"],
                priority=ep["priority"],
                weight=ep["weight"],
                enabled=ep["enabled"],
                stopped=ep["stopped"],
                status=s.get("status", "unknown"),
                consecutive_failures=s.get("consecutive_failures", 0),
                last_probes=s.get("history", [])[-3:],
            )
        )
    answer, error = None, None
    try:
        answer = query(dns_address(ref.plan), tm.profile)
    except Exception as exc:  # any DNS failure is reported, not raised
        error = f"{type(exc).__name__}: {exc}"
    updated = st.get("updated_at")
    return DnsStatus(
        lab=lab,
        profile=tm.profile,
        vanity=tm.vanity,
        routing=tm.routing,
        ttl_s=tm.ttl_s,
        enabled=prof["enabled"],
        profile_status=st.get("profile_status", "unknown"),
        endpoints=eps,
        answer=answer,
        prober_age_s=None if updated is None else max(0.0, time.time() - float(updated)),
        timing=timing(tm),
        answer_error=error,
        serving=[e["name"] for e in st.get("state", {}).get("endpoints", [])],
    )
