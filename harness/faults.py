"""Faults: reversible disasters injected into a running lab, each recorded with start and end.

Kinds (``KINDS``):

    partition       no packet crosses the wan between the gateways (iptables DROP both ways)
    degrade         delay, jitter and loss in user space (``wanem`` relay in the primary gateway,
                    seeded so the same seed gives the same drops) and a rate limit with the
                    kernel's ``tbf`` on both gateways' wan interfaces
    gateway-down    one site's gateway container is stopped
    mtu-blackhole   tunnel packets larger than an MTU are silently dropped on the wan
    site-outage     every container of a site (default: the primary) stops: hosts, gateway and
                    anything else the lab runs there
    host-outage     one host's container stops
    storage-outage  the storage account's host stops
    dns-outage      the DNS host serving Traffic Manager stops

Healing an outage starts the containers again and redoes what their start-up did (routes,
tunnel), then waits (bounded) until they are ready.

Records live in ``<lab state>/faults.json`` (one list, newest last), each with an id
``f<N>-<kind>``, its parameters, ``started_at`` and, once healed, ``ended_at`` (epoch seconds), so
that a drill can place every fault on its timeline. Bad requests raise FaultError (CLI exit 2)
and change nothing.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from harness import state
from harness.components import gateway, replicator
from harness.errors import FaultError, HarnessError
from harness.lab import LabRef, open_lab
from harness.plan import GatewayPlan

FaultKind = Literal[
    "partition",
    "degrade",
    "gateway-down",
    "mtu-blackhole",
    "site-outage",
    "host-outage",
    "storage-outage",
    "dns-outage",
]
KINDS: tuple[str, ...] = get_args(FaultKind)
HEAL_READY_TIMEOUT_S = 30.0
CHAIN = "DRILL-FAULTS"
WANEM_PORT = 51821  # the relay's wan-side port; WireGuard's own port is the topology's


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault."""

    id: str
    kind: str
    params: dict[str, Any]
    started_at: float
    ended_at: float | None = None
    undo: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def public(self) -> dict[str, Any]:
        """The record without internal undo data, for output."""
        data = asdict(self)
        data.pop("undo")
        data["active"] = self.active
        return data


# --- records ---------------------------------------------------------------------------------


@contextmanager
def _records(lab: str) -> Iterator[list[FaultRecord]]:
    """The lab's fault records under an exclusive lock; saved when the block ends normally."""
    path = state.lab_dir(lab) / "faults.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(state.lab_dir(lab) / ".faults.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            raw = json.loads(path.read_text()) if path.exists() else []
        except ValueError:
            raw = []
        records = [FaultRecord(**r) for r in raw]
        yield records
        state.write_json_atomic(path, [asdict(r) for r in records])


def history(lab: str) -> list[FaultRecord]:
    """Every fault of the lab, active or healed, oldest first."""
    path = state.lab_dir(lab) / "faults.json"
    if not path.exists():
        return []
    return [FaultRecord(**r) for r in json.loads(path.read_text())]


def active(lab: str) -> list[FaultRecord]:
    """The faults in force now."""
    return [r for r in history(lab) if r.active]


# --- validation ------------------------------------------------------------------------------


def _number(params: dict[str, Any], key: str, lo: float, hi: float, unit: str) -> float | None:
    v = params.get(key)
    if v is None:
        return None
    try:
        num = float(v)
    except (TypeError, ValueError):
        raise FaultError(f"{key} must be a number of {unit}, not {v!r}") from None
    if not lo <= num <= hi:
        raise FaultError(f"{key} must be between {lo:g} and {hi:g} {unit}, not {num:g}")
    return num


def validate(ref: LabRef, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Checked, normalised parameters for a fault; FaultError on anything wrong."""
    if kind not in KINDS:
        raise FaultError(f"unknown fault {kind!r}; faults are {', '.join(KINDS)}")
    allowed = {
        "partition": set(),
        "degrade": {"delay_ms", "jitter_ms", "loss_pct", "rate_mbit", "seed"},
        "gateway-down": {"site"},
        "mtu-blackhole": {"mtu"},
        "site-outage": {"site"},
        "host-outage": {"host"},
        "storage-outage": set(),
        "dns-outage": set(),
    }[kind]
    given = {k for k, v in params.items() if v is not None}
    if extra := given - allowed:
        raise FaultError(f"{kind} takes no {', '.join(sorted(extra))}")
    out: dict[str, Any] = {}
    if kind == "degrade":
        out["delay_ms"] = _number(params, "delay_ms", 0, 10_000, "ms") or 0.0
        out["jitter_ms"] = _number(params, "jitter_ms", 0, 10_000, "ms") or 0.0
        out["loss_pct"] = _number(params, "loss_pct", 0, 100, "%") or 0.0
        rate = params.get("rate_mbit")
        out["rate_mbit"] = (
            None if rate is None else _number(params, "rate_mbit", 0.01, 100_000, "Mbit/s")
        )
        if rate is not None and float(rate) <= 0:
            raise FaultError("rate_mbit must be above 0")
        out["seed"] = int(params.get("seed") or 0)
        if out["jitter_ms"] > out["delay_ms"]:
            raise FaultError("jitter_ms must not exceed delay_ms")
        if not (out["delay_ms"] or out["loss_pct"] or out["rate_mbit"]):
            raise FaultError("degrade needs at least one of delay, loss or rate")
    elif kind == "gateway-down":
        site = params.get("site")
        if site not in ref.plan.gateways:
            raise FaultError(
                f"gateway-down needs a site: one of {', '.join(ref.plan.gateways)}, not {site!r}"
            )
        out["site"] = site
    elif kind == "mtu-blackhole":
        out["mtu"] = int(_number(params, "mtu", 576, 9000, "bytes") or 1280)
    elif kind == "site-outage":
        site = params.get("site") or ref.plan.topology.primary_site
        if site not in ref.plan.topology.sites:
            raise FaultError(
                f"unknown site {site!r}; sites are {', '.join(ref.plan.topology.sites)}"
            )
        out["site"] = site
    elif kind == "host-outage":
        host = params.get("host")
        if host not in ref.plan.hosts:
            raise FaultError(f"host-outage needs a host: one of {', '.join(ref.plan.hosts)}")
        out["host"] = host
    elif kind in ("storage-outage", "dns-outage"):
        role = "storage" if kind == "storage-outage" else "dns"
        if not any(hp.role == role for hp in ref.plan.hosts.values()):
            raise FaultError(f"{kind}: the lab has no {role} host")
    return out


def _outage_targets(ref: LabRef, kind: str, p: dict[str, Any]) -> list[str]:
    """Containers an outage stops, in start order (gateways first)."""
    plan = ref.plan
    if kind == "site-outage":
        running = ref.rt.containers({"drill.lab": plan.lab, "drill.site": p["site"]})
        gw = plan.gateways[p["site"]].container
        rest = sorted(c.name for c in running if c.name != gw)
        return [gw, *rest]
    if kind == "host-outage":
        return [plan.hosts[p["host"]].container]
    role = "storage" if kind == "storage-outage" else "dns"
    return [hp.container for hp in plan.hosts.values() if hp.role == role]


def _restart(ref: LabRef, containers: list[str]) -> None:
    """Start stopped containers and redo their start-up configuration, then wait until ready."""
    from harness.components import ROLES

    by_container = {hp.container: hp for hp in ref.plan.hosts.values()}
    gateways = {gp.container: gp for gp in ref.plan.gateways.values()}
    for name in containers:
        ref.rt.start(name)
    for name in containers:
        if name in gateways:
            gateway.configure(ref.rt, ref.plan, gateways[name])
        elif name in by_container:
            ROLES[by_container[name].role].configure(ref.rt, ref.plan, by_container[name])
    deadline = time.monotonic() + HEAL_READY_TIMEOUT_S
    for name in containers:
        if name in by_container:
            hp = by_container[name]
            check = ROLES[hp.role].check_ready
            while (why := check(ref.rt, ref.plan, hp)) is not None:
                if time.monotonic() > deadline:
                    raise HarnessError(f"{hp.name} not ready after healing: {why}")
                time.sleep(0.1)


# --- inject and heal -------------------------------------------------------------------------


def _sh(ref: LabRef, gp: GatewayPlan, script: str, what: str) -> str:
    res = ref.rt.exec(gp.container, ["sh", "-ec", script])
    if not res.ok:
        raise HarnessError(f"{what} on {gp.container}: {res.output.strip()[-300:]}")
    return res.output


def _chain_rules(rules: list[str], tag: str) -> str:
    """Shell adding ``rules`` to the fault chain (made on first use), tagged for removal."""
    lines = [
        f"iptables -N {CHAIN} 2>/dev/null || true",
        f"iptables -C INPUT -j {CHAIN} 2>/dev/null || iptables -I INPUT -j {CHAIN}",
        f"iptables -C OUTPUT -j {CHAIN} 2>/dev/null || iptables -I OUTPUT -j {CHAIN}",
    ]
    lines += [f'iptables -A {CHAIN} {r} -m comment --comment "{tag}" -j DROP' for r in rules]
    return "\n".join(lines)


def _unchain(tag: str) -> str:
    # iptables -S quotes a comment only when it needs to: match both spellings.
    return (
        f"iptables -S {CHAIN} 2>/dev/null | grep -E -- '--comment \"?{tag}\"? ' | "
        "sed 's/^-A /-D /' | while read -r rule; do eval \"iptables $rule\"; done"
    )


def _wan_iface(ref: LabRef, gp: GatewayPlan) -> str:
    out = _sh(ref, gp, f"ip -o -4 addr show to {gp.wan_address}/32", "finding the wan interface")
    try:
        return out.split()[1]
    except IndexError:
        raise HarnessError(f"no wan interface with {gp.wan_address} on {gp.container}") from None


def _inject(ref: LabRef, rec_id: str, kind: str, p: dict[str, Any]) -> dict[str, Any]:
    gws = list(ref.plan.gateways.values())
    if kind == "partition":
        for gp in gws:
            peer = gateway.peer_of(ref.plan, gp.site).wan_address
            _sh(ref, gp, _chain_rules([f"-s {peer}", f"-d {peer}"], rec_id), "partitioning")
        return {}
    if kind == "mtu-blackhole":
        for gp in gws:
            peer = gateway.peer_of(ref.plan, gp.site).wan_address
            rule = f"-d {peer} -p udp -m length --length {p['mtu'] + 1}:65535"
            _sh(ref, gp, _chain_rules([rule], rec_id), "adding the MTU black hole")
        return {}
    if kind == "gateway-down":
        gp = ref.plan.gateways[p["site"]]
        ref.rt.stop(gp.container, timeout_s=2)
        return {}
    if kind in ("site-outage", "host-outage", "storage-outage", "dns-outage"):
        targets = _outage_targets(ref, kind, p)
        for name in reversed(targets):
            if name == replicator.container(ref.plan):
                replicator.stop(ref.rt, ref.plan, timeout_s=1)
            else:
                ref.rt.stop(name, timeout_s=1)
        return {"containers": targets}
    # degrade
    undo: dict[str, Any] = {}
    if p["rate_mbit"]:
        for gp in gws:
            iface = _wan_iface(ref, gp)
            rate_kbit = max(8, int(p["rate_mbit"] * 1000))
            burst = max(1600, rate_kbit * 1000 // 8 // 100)  # ~10 ms worth, at least a packet
            _sh(
                ref,
                gp,
                f"tc qdisc replace dev {iface} root tbf rate {rate_kbit}kbit "
                f"burst {burst} latency 200ms",
                "adding the rate limit",
            )
            undo[gp.site] = iface
    if p["delay_ms"] or p["loss_pct"]:
        _start_wanem(ref, p)
        undo["wanem"] = True
    return undo


def _primary_gateway(ref: LabRef) -> GatewayPlan:
    return ref.plan.gateways[ref.plan.topology.primary_site]


def _start_wanem(ref: LabRef, p: dict[str, Any]) -> None:
    """Route the primary gateway's tunnel packets through the user-space WAN emulator."""
    gp = _primary_gateway(ref)
    peer = gateway.peer_of(ref.plan, gp.site)
    port = ref.plan.topology.tunnel.port
    cmd = (
        f"python3 /usr/local/bin/wanem --listen 127.0.0.1:{WANEM_PORT} "
        f"--wan {gp.wan_address}:{WANEM_PORT} --peer {peer.wan_address}:{port} "
        f"--local 127.0.0.1:{port} --delay-ms {p['delay_ms']} --jitter-ms {p['jitter_ms']} "
        f"--loss-pct {p['loss_pct']} --seed {p['seed']}"
    )
    script = "\n".join(
        [
            f"nohup {cmd} > /var/log/wanem.log 2>&1 &",
            "echo $! > /run/wanem.pid",
            # Wait for the relay's socket before pointing WireGuard at it.
            f"for i in $(seq 50); do ss -lun | grep -q ':{WANEM_PORT} ' && break; sleep 0.05; done",
            f"ss -lun | grep -q ':{WANEM_PORT} '",
            f"wg set {gateway.INTERFACE} peer $(wg show {gateway.INTERFACE} peers) "
            f"endpoint 127.0.0.1:{WANEM_PORT}",
        ]
    )
    _sh(ref, gp, script, "starting the WAN emulator")


def _stop_wanem(ref: LabRef) -> None:
    gp = _primary_gateway(ref)
    peer = gateway.peer_of(ref.plan, gp.site)
    port = ref.plan.topology.tunnel.port
    script = "\n".join(
        [
            f"wg set {gateway.INTERFACE} peer $(wg show {gateway.INTERFACE} peers) "
            f"endpoint {peer.wan_address}:{port}",
            "[ -f /run/wanem.pid ] && kill $(cat /run/wanem.pid) 2>/dev/null || true",
            "rm -f /run/wanem.pid",
        ]
    )
    _sh(ref, gp, script, "stopping the WAN emulator")
    # The peer learnt the relay's port as our endpoint (roaming): point it back at once.
    back = f"wg set {gateway.INTERFACE} peer $(wg show {gateway.INTERFACE} peers) " + (
        f"endpoint {gp.wan_address}:{port}"
    )
    _sh(ref, peer, back, "restoring the peer's endpoint")


def _heal(ref: LabRef, rec: FaultRecord) -> None:
    gws = list(ref.plan.gateways.values())
    if rec.kind in ("partition", "mtu-blackhole"):
        for gp in gws:
            _sh(ref, gp, _unchain(rec.id), "removing fault rules")
    elif rec.kind == "gateway-down":
        gp = ref.plan.gateways[rec.params["site"]]
        ref.rt.start(gp.container)
        gateway.configure(ref.rt, ref.plan, gp)
    elif rec.kind in ("site-outage", "host-outage", "storage-outage", "dns-outage"):
        _restart(ref, list(rec.undo["containers"]))
    elif rec.kind == "degrade":
        if rec.undo.get("wanem"):
            _stop_wanem(ref)
        for gp in gws:
            if iface := rec.undo.get(gp.site):
                _sh(ref, gp, f"tc qdisc del dev {iface} root 2>/dev/null || true", "removing tbf")


_EXCLUSIVE = {
    "partition",
    "degrade",
    "mtu-blackhole",
    "site-outage",
    "storage-outage",
    "dns-outage",
}


def inject(
    lab: str, kind: str, *, now: Callable[[], float] = time.time, **params: Any
) -> FaultRecord:
    """Inject a fault into a running lab and record it; FaultError for a bad request."""
    ref = open_lab(lab)
    p = validate(ref, kind, params)
    with _records(lab) as records:
        for r in records:
            if r.active and r.kind == kind and (kind in _EXCLUSIVE or r.params == p):
                raise FaultError(f"{kind} is already active as {r.id}; heal it first")
        rec_id = f"f{len(records) + 1}-{kind}"
        started = now()
        undo = _inject(ref, rec_id, kind, p)
        rec = FaultRecord(rec_id, kind, p, started, None, undo)
        records.append(rec)
    return rec


def heal(
    lab: str, fault_id: str | None = None, *, now: Callable[[], float] = time.time
) -> list[FaultRecord]:
    """Undo one active fault (or all of them); FaultError if there is nothing to heal."""
    ref = open_lab(lab)
    healed = []
    with _records(lab) as records:
        targets = [r for r in records if r.active and (fault_id is None or r.id == fault_id)]
        if not targets:
            if fault_id is None:
                raise FaultError(f"no fault is active in lab {lab!r}")
            known = ", ".join(r.id for r in records if r.active) or "none"
            raise FaultError(f"no active fault {fault_id!r} (active: {known})")
        for rec in reversed(targets):
            _heal(ref, rec)
            done = FaultRecord(rec.id, rec.kind, rec.params, rec.started_at, now(), rec.undo)
            records[records.index(rec)] = done
            healed.append(done)
    return healed


def end_all(lab: str, *, now: Callable[[], float] = time.time) -> list[FaultRecord]:
    """Record every active fault as ended without undoing it: the lab is being removed, which
    ends them all (healing a site only to delete it would only slow teardown down)."""
    ended = []
    with _records(lab) as records:
        for i, rec in enumerate(records):
            if rec.active:
                done = FaultRecord(rec.id, rec.kind, rec.params, rec.started_at, now(), rec.undo)
                records[i] = done
                ended.append(done)
    return ended
