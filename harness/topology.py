"""Topology: the description of a lab, as strict, frozen, typed data.

A topology file (YAML, ``topologies/*.yaml``) describes the design being rehearsed:

    addressing   the lab's /16 address space, the ``wan`` subnet (gateways only) and the
                 ``internet`` subnet (DNS, synthetic users, public endpoints)
    sites        ``primary`` (on-prem) and ``recovery`` (Azure VNet) sites, each with named
                 subnets, a VPN gateway and hosts
    internet     hosts outside both sites (the Traffic Manager DNS server, synthetic users)
    tunnel       the site-to-site VPN between the two gateways
    traffic_manager, protection, recovery_plans
                 the DNS failover profile, the Site Recovery policy and the recovery plans
    identity     the on-prem directory, its replica in the recovery site, the sync interval,
                 groups and users (passwords are made per lab at ``up``, never written here)

Loading is side-effect free and happens in three passes, all before any container exists:
YAML parsing (duplicate keys rejected), schema validation (unknown keys and wrong types
rejected) and one cross-reference pass (names exist, subnets do not overlap, addresses are inside
their subnets and unique, ...). Every problem is reported with its dotted path in the file.

Names: host, site and subnet names match ``naming.NAME_RE``; host names are unique across the
whole topology because they name containers.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from harness.errors import Problem, TopologyError
from harness.naming import NAME_RE

Name = Annotated[str, StringConstraints(pattern=NAME_RE.pattern)]
IPv4 = ipaddress.IPv4Address
Net = ipaddress.IPv4Network

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_STATUS_RANGE_RE = re.compile(r"^(\d{3})(?:-(\d{3}))?$")


def parse_size(value: object) -> int:
    """Parse ``64MiB`` / ``4096`` into bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (m := _SIZE_RE.match(value)):
        return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    raise ValueError(
        "a size is a whole number of bytes or a string like '64MiB' (B, KiB, MiB, GiB)"
    )


class Model(BaseModel):
    """Base of every topology model: frozen, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


# --- sites and hosts -------------------------------------------------------------------------


class Disk(Model):
    """A data disk: a raw image of ``size`` bytes with a filesystem, mounted at ``mount``."""

    name: Name = "data"
    size: int = Field(default=64 * 1024**2, description="bytes, or a string like '64MiB'")
    mount: str = "/data"

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: object) -> int:
        return parse_size(v)

    @field_validator("size")
    @classmethod
    def _size_rules(cls, v: int) -> int:
        if v <= 0 or v % 512:
            raise ValueError("disk size must be a positive multiple of 512 bytes")
        if v < 8 * 1024**2:
            raise ValueError("disk size must be at least 8MiB (room for a filesystem)")
        if v > 8 * 1024**4:
            raise ValueError("disk size must be at most 8TiB (a page blob's limit)")
        return v


class Placement(Model):
    """Where a protected host comes up in the recovery site after failover."""

    subnet: Name
    address: IPv4
    public_address: IPv4 | None = None


class StorageAccount(Model):
    """The Blob storage account a storage host serves (Azurite)."""

    account: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]{3,24}$")]
    key: str = Field(description="base64 account key; never the well-known development key")

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        import base64
        import binascii

        try:
            raw = base64.b64decode(v, validate=True)
        except binascii.Error as exc:
            raise ValueError("key must be base64") from exc
        if len(raw) < 32:
            raise ValueError("key must decode to at least 32 bytes")
        if v.startswith("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq"):
            raise ValueError("use a key of your own, not Azurite's well-known development key")
        return v


Role = Literal["web", "app", "storage", "dns", "client", "directory"]


class Host(Model):
    """A host (container) in a site or on the internet."""

    role: Role
    subnet: Name | None = Field(
        default=None, description="the site subnet; omitted for internet hosts"
    )
    address: IPv4
    public_address: IPv4 | None = Field(
        default=None, description="a second address on the internet network (public endpoint)"
    )
    app: Literal["documents", "records"] | None = Field(
        default=None, description="app role: SharePoint stand-in (documents) or CRM (records)"
    )
    disks: tuple[Disk, ...] = ()
    recovery: Placement | None = None
    storage: StorageAccount | None = None
    backends: dict[Name, Name] = Field(
        default={}, description="web hosts: path prefix -> app host it is proxied to"
    )
    description: str = ""


class Gateway(Model):
    """A site's VPN gateway: one address on every site subnet and one on the wan."""

    wan_address: IPv4
    addresses: dict[Name, IPv4] = Field(description="subnet name -> the gateway's address there")


class Site(Model):
    """A site: on-prem (primary) or the recovery VNet."""

    kind: Literal["primary", "recovery"]
    description: str = ""
    subnets: dict[Name, Net]
    gateway: Gateway
    hosts: dict[Name, Host] = {}


class Internet(Model):
    """The network outside both sites: DNS, synthetic users and the sites' public endpoints."""

    hosts: dict[Name, Host] = {}


class Addressing(Model):
    """The lab's address space; a lab is relocated to another /16 when this one is taken."""

    space: Net
    wan: Net
    internet: Net

    @field_validator("space")
    @classmethod
    def _space(cls, v: Net) -> Net:
        if v.prefixlen != 16:
            raise ValueError("the address space must be a /16")
        if not v.is_private:
            raise ValueError("the address space must be private (RFC 1918)")
        return v


class Tunnel(Model):
    """The site-to-site VPN (WireGuard) between the two sites' gateways."""

    port: int = Field(default=51820, ge=1, le=65535)
    mtu: int = Field(default=1420, ge=1280, le=1500)
    keepalive_s: int = Field(default=5, ge=1, le=3600)
    handshake_bound_s: float = Field(
        default=30,
        ge=1,
        le=180,
        description="the tunnel counts as down when the peer was silent this long "
        "(its keepalives arrive every keepalive_s)",
    )


# --- Traffic Manager --------------------------------------------------------------------------


class Monitor(Model):
    """Traffic Manager endpoint monitoring settings."""

    protocol: Literal["HTTP", "HTTPS", "TCP"] = "HTTP"
    port: int = Field(default=80, ge=1, le=65535)
    path: str | None = "/"
    headers: dict[str, str] = {}
    expected_status: tuple[str, ...] = ("200-200",)
    interval_s: float = 30
    timeout_s: float = 10
    tolerated_failures: int = Field(default=3, ge=0, le=9)

    @field_validator("expected_status")
    @classmethod
    def _ranges(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            m = _STATUS_RANGE_RE.match(item)
            if not m:
                raise ValueError(f"status range {item!r} is not like '200' or '200-299'")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if not 100 <= lo <= hi <= 599:
                raise ValueError(f"status range {item!r} must lie within 100-599, low to high")
        return v


class Endpoint(Model):
    """A Traffic Manager endpoint: a host's public address in one site."""

    target: Name = Field(description="a host name")
    site: Name = Field(description="the site whose copy of the host this endpoint names")
    priority: int | None = Field(default=None, ge=1, le=1000)
    weight: int = Field(default=1, ge=1, le=1000)
    enabled: bool = True
    always_serve: bool = False


class TrafficManager(Model):
    """A Traffic Manager profile served by the lab's DNS host."""

    profile: str = Field(description="the profile's DNS name, e.g. contoso.trafficmanager.test")
    vanity: str | None = Field(default=None, description="the app's name, a CNAME to the profile")
    dns_host: Name = Field(description="the internet host (role dns) that serves the profile")
    enabled: bool = True
    routing: Literal["priority", "weighted", "multivalue"] = "priority"
    ttl_s: int = Field(default=30, ge=0, le=2_147_483_647)
    max_answers: int = Field(default=2, ge=1, le=10, description="multivalue record count")
    seed: int = Field(default=0, description="seed of weighted routing's random choices")
    monitor: Monitor = Monitor()
    endpoints: dict[Name, Endpoint]


# --- Site Recovery ----------------------------------------------------------------------------


class Policy(Model):
    """The replication policy (ASR), in seconds so that drills can run fast."""

    crash_consistent_s: float = Field(default=300, gt=0)
    app_consistent_s: float | None = Field(default=None, gt=0)
    retention_s: float = Field(default=86400, ge=0)
    rpo_threshold_s: float = Field(default=3600, gt=0)


class ProcessServer(Model):
    """Where the replicator (ASR's process server) runs: an address in the primary site."""

    subnet: Name
    address: IPv4


class Protection(Model):
    """Which hosts Site Recovery protects, where to, and how."""

    recovery_site: Name
    storage_host: Name = Field(description="the recovery-site host (role storage) for replicas")
    policy: Policy = Policy()
    hosts: tuple[Name, ...]
    groups: dict[Name, tuple[Name, ...]] = Field(
        default={}, description="replication groups: multi-VM consistent points"
    )
    process_server: ProcessServer | None = Field(
        default=None, description="where the replicator runs; without it nothing replicates"
    )


class ScriptAction(Model):
    """A plan action that runs ``sh -c script`` in a host's container (Azure: a runbook).

    The container is the host's recovery copy when one runs, else the host itself; a non-zero
    exit is a failure, which stops a planned failover and is only logged in an unplanned one.
    """

    script: str = Field(min_length=1)
    container: Name = Field(description="the host whose container runs the script")


class ManualAction(Model):
    """A plan action someone does by hand: the plan waits for ``drill plan confirm``."""

    manual: str = Field(min_length=1, description="what to do, shown while the plan waits")


PlanAction = ScriptAction | ManualAction


class PlanGroup(Model):
    """One group of a recovery plan: its hosts start in parallel, between its actions."""

    hosts: tuple[Name, ...]
    pre_actions: tuple[PlanAction, ...] = Field(
        default=(), description="run in order before the group's hosts start"
    )
    post_actions: tuple[PlanAction, ...] = Field(
        default=(), description="run in order once the group's hosts are healthy"
    )


class RecoveryPlan(Model):
    """An ordered recovery plan (at most 7 groups, as in Azure)."""

    groups: tuple[PlanGroup, ...] = Field(min_length=1, max_length=7)
    timeout_s: float = Field(default=600, gt=0)


# --- identity ---------------------------------------------------------------------------------

UserName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9._-]{0,31}$")]
Domain = Annotated[
    str,
    StringConstraints(
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
    ),
]
RESERVED_GROUPS = frozenset({"disabled"})
"""Group names the directory keeps for itself (``disabled`` marks disabled accounts)."""
AZURE_MIN_SYNC_INTERVAL_S = 1800
"""Azure AD Connect's default (and the fastest it supports) sync cycle: 30 minutes."""


class DirectoryUser(Model):
    """A user seeded into the on-prem directory. Passwords never live in the topology."""

    groups: tuple[Name, ...] = ()
    disabled: bool = False
    synthetic: bool = Field(default=False, description="drills' synthetic users log in as this")
    display_name: str = ""


class Identity(Model):
    """The on-prem directory (AD stand-in) and its replica in the recovery site (Azure AD)."""

    domain: Domain = Field(description="the directory's DNS domain; the suffix follows it")
    directory: Name = Field(description="the on-prem directory host (role directory)")
    replica: Name | None = Field(default=None, description="the recovery-site replica host")
    sync_interval_s: int = Field(
        default=AZURE_MIN_SYNC_INTERVAL_S,
        ge=1,
        description="how often the replica pulls changes (Azure AD Connect: 30 minutes)",
    )
    groups: tuple[Name, ...] = ("readers", "editors")
    read_groups: tuple[Name, ...] = Field(
        default=("readers", "editors"), description="members may read (GET) in the apps"
    )
    write_groups: tuple[Name, ...] = Field(
        default=("editors",), description="members may write (POST) in the apps"
    )
    users: dict[UserName, DirectoryUser] = {}


# --- the whole topology -----------------------------------------------------------------------


class Topology(Model):
    """A whole lab design."""

    name: Name
    description: str = ""
    timing: Literal["azure", "fast"] = Field(
        default="azure", description="fast allows intervals and TTLs below Azure's minimums"
    )
    addressing: Addressing
    sites: dict[Name, Site]
    internet: Internet = Internet()
    tunnel: Tunnel = Tunnel()
    traffic_manager: TrafficManager | None = None
    protection: Protection | None = None
    recovery_plans: dict[Name, RecoveryPlan] = {}
    identity: Identity | None = None

    # Derived views -----------------------------------------------------------------------

    @cached_property
    def primary_site(self) -> str:
        """The on-prem site's name."""
        return next(n for n, s in self.sites.items() if s.kind == "primary")

    @cached_property
    def recovery_site(self) -> str:
        """The recovery site's name."""
        return next(n for n, s in self.sites.items() if s.kind == "recovery")

    def hosts(self) -> Iterator[tuple[str | None, str, Host]]:
        """Every host as (site or None for the internet, name, host)."""
        for site_name, site in self.sites.items():
            for name, host in site.hosts.items():
                yield site_name, name, host
        for name, host in self.internet.hosts.items():
            yield None, name, host

    def host(self, name: str) -> Host:
        """The host called ``name`` (KeyError if none)."""
        for _, n, h in self.hosts():
            if n == name:
                return h
        raise KeyError(name)

    def site_of(self, name: str) -> str | None:
        """The site of host ``name`` (None for internet hosts)."""
        for s, n, _ in self.hosts():
            if n == name:
                return s
        raise KeyError(name)


# --- loading ----------------------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def schema_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append(Problem(_path(loc), msg))
    return problems


def parse(data: object, source: str = "<topology>") -> Topology:
    """Validate already-parsed data into a Topology, or raise TopologyError with every problem."""
    if not isinstance(data, Mapping):
        raise TopologyError(source, [Problem("", "a topology is a mapping of keys")])
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(source, schema_problems(exc)) from None
    problems = cross_check(topo)
    if problems:
        raise TopologyError(source, problems)
    return topo


def load(path: str | Path) -> Topology:
    """Load and fully validate a topology file; nothing is created."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(str(p), [Problem("", "file not found")]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise TopologyError(str(p), [Problem("", f"cannot read file: {exc}")]) from None
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        ctx = getattr(exc, "context", None)
        msg = f"malformed YAML: {problem}" + (f" ({ctx})" if ctx else "")
        raise TopologyError(str(p), [Problem(where, msg)]) from None
    return parse(data, str(p))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of topology files, for editors."""
    schema = Topology.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "drill topology"
    return schema


# --- cross-reference checks -------------------------------------------------------------------

_FAST_MIN = {"interval_s": 0.5, "timeout_s": 0.2}


def cross_check(t: Topology) -> list[Problem]:
    """Every consistency rule that spans more than one field; returns all problems found."""
    problems: list[Problem] = []

    def add(path: str, msg: str) -> None:
        problems.append(Problem(path, msg))

    kinds = [s.kind for s in t.sites.values()]
    if kinds.count("primary") != 1 or kinds.count("recovery") != 1:
        add("sites", "exactly one site of kind 'primary' and one of kind 'recovery' are needed")

    _check_subnets(t, add)
    _check_hosts(t, add)
    if t.tunnel.handshake_bound_s <= t.tunnel.keepalive_s:
        add("tunnel.handshake_bound_s", "must exceed keepalive_s, or a live tunnel looks down")
    if t.traffic_manager is not None:
        _check_traffic_manager(t, t.traffic_manager, add)
    if t.protection is not None:
        _check_protection(t, t.protection, add)
    for pname, plan in t.recovery_plans.items():
        _check_plan(t, pname, plan, add)
    if t.identity is not None:
        _check_identity(t, t.identity, add)
    return problems


def _check_subnets(t: Topology, add: Any) -> None:
    space = t.addressing.space
    named: list[tuple[str, Net]] = [
        ("addressing.wan", t.addressing.wan),
        ("addressing.internet", t.addressing.internet),
    ]
    for sname, site in t.sites.items():
        if not site.subnets:
            add(f"sites.{sname}.subnets", "a site needs at least one subnet")
        for subname, net in site.subnets.items():
            named.append((f"sites.{sname}.subnets.{subname}", net))
    for path, net in named:
        if not net.subnet_of(space):
            add(path, f"{net} is outside the address space {space}")
        if net.prefixlen > 29:
            add(path, f"{net} is too small (at most /29)")
    for i, (pa, na) in enumerate(named):
        for pb, nb in named[i + 1 :]:
            if na.overlaps(nb):
                add(pb, f"{nb} overlaps {na} ({pa})")


def _usable(net: Net, addr: IPv4) -> str | None:
    """Why ``addr`` cannot be a container address on ``net``, or None."""
    if addr not in net:
        return f"{addr} is not inside {net}"
    if addr in (net.network_address, net.broadcast_address):
        return f"{addr} is the network or broadcast address of {net}"
    if addr == net.network_address + 1:
        return f"{addr} is reserved for the engine's bridge on {net}"
    return None


def _check_hosts(t: Topology, add: Any) -> None:
    seen_names: dict[str, str] = {}
    seen_addr: dict[IPv4, str] = {}

    def claim(addr: IPv4, path: str) -> None:
        if addr in seen_addr:
            add(path, f"address {addr} is already used by {seen_addr[addr]}")
        else:
            seen_addr[addr] = path

    for sname, site in t.sites.items():
        gw = site.gateway
        gpath = f"sites.{sname}.gateway"
        if set(gw.addresses) != set(site.subnets):
            missing = sorted(set(site.subnets) - set(gw.addresses))
            extra = sorted(set(gw.addresses) - set(site.subnets))
            if missing:
                add(f"{gpath}.addresses", f"no gateway address for subnet(s) {', '.join(missing)}")
            for e in extra:
                add(f"{gpath}.addresses.{e}", f"unknown subnet {e!r} of site {sname!r}")
        for subname, addr in gw.addresses.items():
            if subname in site.subnets:
                if why := _usable(site.subnets[subname], addr):
                    add(f"{gpath}.addresses.{subname}", why)
                claim(addr, f"{gpath}.addresses.{subname}")
        if why := _usable(t.addressing.wan, gw.wan_address):
            add(f"{gpath}.wan_address", why)
        claim(gw.wan_address, f"{gpath}.wan_address")

    for site_name, hname, host in t.hosts():
        hpath = f"sites.{site_name}.hosts.{hname}" if site_name else f"internet.hosts.{hname}"
        if hname in seen_names:
            add(hpath, f"host name {hname!r} is already used at {seen_names[hname]}")
        else:
            seen_names[hname] = hpath
        if site_name is None:
            if host.subnet is not None:
                add(f"{hpath}.subnet", "internet hosts have no site subnet")
            if why := _usable(t.addressing.internet, host.address):
                add(f"{hpath}.address", why)
            if host.public_address is not None:
                add(f"{hpath}.public_address", "internet hosts are public already")
            if host.recovery is not None:
                add(f"{hpath}.recovery", "only site hosts can be protected")
        else:
            site = t.sites[site_name]
            if host.subnet is None:
                add(f"{hpath}.subnet", "required key is missing")
            elif host.subnet not in site.subnets:
                add(f"{hpath}.subnet", f"unknown subnet {host.subnet!r} of site {site_name!r}")
            elif why := _usable(site.subnets[host.subnet], host.address):
                add(f"{hpath}.address", why)
            if host.public_address is not None and (
                why := _usable(t.addressing.internet, host.public_address)
            ):
                add(f"{hpath}.public_address", why)
        claim(host.address, f"{hpath}.address")
        if host.public_address is not None:
            claim(host.public_address, f"{hpath}.public_address")
        _check_role(host, hpath, add)
        _check_backends(t, site_name, host, hpath, add)
        if host.recovery is not None:
            _check_placement(t, site_name, host.recovery, f"{hpath}.recovery", add, claim)
        disk_names = [d.name for d in host.disks]
        for i, dname in enumerate(disk_names):
            if dname in disk_names[:i]:
                add(f"{hpath}.disks[{i}].name", f"duplicate disk name {dname!r}")
    ps = t.protection.process_server if t.protection else None
    if ps is not None:
        _check_process_server(t, ps, add, claim)


def _check_process_server(t: Topology, ps: ProcessServer, add: Any, claim: Any) -> None:
    path = "protection.process_server"
    site = t.sites.get(t.primary_site) if "primary" in [s.kind for s in t.sites.values()] else None
    if site is None:
        return
    if ps.subnet not in site.subnets:
        add(f"{path}.subnet", f"unknown subnet {ps.subnet!r} of site {t.primary_site!r}")
    elif why := _usable(site.subnets[ps.subnet], ps.address):
        add(f"{path}.address", why)
    claim(ps.address, f"{path}.address")


def _check_backends(t: Topology, site: str | None, host: Host, hpath: str, add: Any) -> None:
    for prefix, target in host.backends.items():
        path = f"{hpath}.backends.{prefix}"
        try:
            backend = t.host(target)
        except KeyError:
            add(path, f"unknown host {target!r}")
            continue
        if backend.role != "app" or t.site_of(target) != site:
            add(path, f"{target!r} must be an app host in the same site")
        elif host.recovery is not None and backend.recovery is None:
            add(path, f"{target!r} needs a recovery placement: this web host fails over")


def _check_role(host: Host, hpath: str, add: Any) -> None:
    if host.role == "app" and host.app is None:
        add(f"{hpath}.app", "an app host needs app: documents or records")
    if host.role != "app" and host.app is not None:
        add(f"{hpath}.app", "only app hosts take app")
    if host.backends and host.role != "web":
        add(f"{hpath}.backends", "only web hosts proxy to backends")
    if host.role == "storage" and host.storage is None:
        add(f"{hpath}.storage", "a storage host needs its account and key")
    if host.role != "storage" and host.storage is not None:
        add(f"{hpath}.storage", "only storage hosts take storage")


def _check_placement(
    t: Topology, site_name: str | None, p: Placement, path: str, add: Any, claim: Any
) -> None:
    if site_name is None or site_name == t.recovery_site:
        add(path, "only hosts of the primary site are placed in the recovery site")
        return
    rsite = t.sites[t.recovery_site]
    if p.subnet not in rsite.subnets:
        add(f"{path}.subnet", f"unknown subnet {p.subnet!r} of site {t.recovery_site!r}")
    elif why := _usable(rsite.subnets[p.subnet], p.address):
        add(f"{path}.address", why)
    claim(p.address, f"{path}.address")
    if p.public_address is not None:
        if why := _usable(t.addressing.internet, p.public_address):
            add(f"{path}.public_address", why)
        claim(p.public_address, f"{path}.public_address")


def _check_traffic_manager(t: Topology, tm: TrafficManager, add: Any) -> None:
    base = "traffic_manager"
    try:
        dns = t.host(tm.dns_host)
        if dns.role != "dns" or t.site_of(tm.dns_host) is not None:
            add(f"{base}.dns_host", f"{tm.dns_host!r} must be an internet host of role dns")
    except KeyError:
        add(f"{base}.dns_host", f"unknown host {tm.dns_host!r}")
    m = tm.monitor
    mp = f"{base}.monitor"
    if m.protocol == "TCP" and m.path is not None:
        add(f"{mp}.path", "path is only allowed with HTTP or HTTPS (set path: null for TCP)")
    if m.protocol != "TCP" and not (m.path or "").startswith("/"):
        add(f"{mp}.path", "HTTP(S) monitoring needs a path starting with '/'")
    if m.protocol == "TCP" and (m.headers or m.expected_status != ("200-200",)):
        add(mp, "custom headers and expected status codes are only for HTTP or HTTPS")
    if len(m.headers) > 8:
        add(f"{mp}.headers", "at most 8 custom headers")
    if any("*" in v for k, v in m.headers.items() if k.lower() == "host"):
        add(f"{mp}.headers", "'*' in the Host header is not supported")
    if len(m.expected_status) > 8:
        add(f"{mp}.expected_status", "at most 8 status code ranges")
    if t.timing == "azure":
        if m.interval_s not in (10, 30):
            add(f"{mp}.interval_s", "Azure allows 10 or 30 seconds (timing: fast allows less)")
        hi = 9 if m.interval_s == 10 else 10
        if not 5 <= m.timeout_s <= hi:
            add(f"{mp}.timeout_s", f"Azure allows 5-{hi} s at this interval (timing: fast)")
    else:
        if m.interval_s < _FAST_MIN["interval_s"]:
            add(f"{mp}.interval_s", f"at least {_FAST_MIN['interval_s']} s even with fast timing")
        if m.timeout_s < _FAST_MIN["timeout_s"]:
            add(f"{mp}.timeout_s", f"at least {_FAST_MIN['timeout_s']} s even with fast timing")
    if m.timeout_s >= m.interval_s:
        add(f"{mp}.timeout_s", "the probe timeout must be shorter than the probing interval")
    priorities: dict[int, str] = {}
    for ename, ep in tm.endpoints.items():
        ep_path = f"{base}.endpoints.{ename}"
        _check_endpoint_target(t, ep, ep_path, add)
        prio = ep.priority
        if tm.routing == "priority" and prio is None:
            add(f"{ep_path}.priority", "priority routing needs a priority on every endpoint")
        if prio is not None:
            if prio in priorities:
                add(f"{ep_path}.priority", f"priority {prio} is already used by {priorities[prio]}")
            priorities[prio] = ename
    if not tm.endpoints:
        add(f"{base}.endpoints", "a profile needs at least one endpoint")


def _check_endpoint_target(t: Topology, ep: Endpoint, path: str, add: Any) -> None:
    try:
        host = t.host(ep.target)
        home = t.site_of(ep.target)
    except KeyError:
        add(f"{path}.target", f"unknown host {ep.target!r}")
        return
    if ep.site not in t.sites:
        add(f"{path}.site", f"unknown site {ep.site!r}")
    elif ep.site == home:
        if host.public_address is None:
            add(f"{path}.target", f"{ep.target!r} has no public_address in site {ep.site!r}")
    elif host.recovery is None or ep.site != t.recovery_site:
        add(f"{path}.site", f"{ep.target!r} has no placement in site {ep.site!r}")
    elif host.recovery.public_address is None:
        add(f"{path}.target", f"{ep.target!r} has no recovery public_address")


def _check_protection(t: Topology, p: Protection, add: Any) -> None:
    base = "protection"
    if p.recovery_site not in t.sites:
        add(f"{base}.recovery_site", f"unknown site {p.recovery_site!r}")
    elif t.sites[p.recovery_site].kind != "recovery":
        add(f"{base}.recovery_site", f"site {p.recovery_site!r} is not of kind recovery")
    try:
        sh = t.host(p.storage_host)
        if sh.role != "storage" or t.site_of(p.storage_host) != p.recovery_site:
            add(f"{base}.storage_host", "must be a storage host in the recovery site")
    except KeyError:
        add(f"{base}.storage_host", f"unknown host {p.storage_host!r}")
    for i, hname in enumerate(p.hosts):
        try:
            h = t.host(hname)
        except KeyError:
            add(f"{base}.hosts[{i}]", f"unknown host {hname!r}")
            continue
        if h.recovery is None:
            add(f"{base}.hosts[{i}]", f"{hname!r} has no recovery placement")
        if not h.disks:
            add(f"{base}.hosts[{i}]", f"{hname!r} has no data disk to replicate")
        if hname in p.hosts[:i]:
            add(f"{base}.hosts[{i}]", f"{hname!r} is listed twice")
    grouped: dict[str, str] = {}
    for gname, members in p.groups.items():
        if len(members) > 16:
            add(f"{base}.groups.{gname}", "a replication group holds at most 16 hosts")
        for i, hname in enumerate(members):
            if hname not in p.hosts:
                add(f"{base}.groups.{gname}[{i}]", f"{hname!r} is not a protected host")
            if hname in grouped:
                add(
                    f"{base}.groups.{gname}[{i}]", f"{hname!r} is already in group {grouped[hname]}"
                )
            grouped[hname] = gname
    pol = p.policy
    if t.timing == "azure" and pol.crash_consistent_s != 300:
        add(f"{base}.policy.crash_consistent_s", "Azure fixes this at 300 s (timing: fast)")
    if pol.app_consistent_s is not None and pol.app_consistent_s < pol.crash_consistent_s:
        add(f"{base}.policy.app_consistent_s", "must not be shorter than crash_consistent_s")


def _check_plan(t: Topology, pname: str, plan: RecoveryPlan, add: Any) -> None:
    protected = set(t.protection.hosts) if t.protection else set()
    known = {n for _, n, _ in t.hosts()}
    seen: set[str] = set()
    for gi, group in enumerate(plan.groups):
        for hi, hname in enumerate(group.hosts):
            path = f"recovery_plans.{pname}.groups[{gi}].hosts[{hi}]"
            if hname not in protected:
                add(path, f"{hname!r} is not a protected host")
            if hname in seen:
                add(path, f"{hname!r} appears twice in the plan")
            seen.add(hname)
        for kind in ("pre_actions", "post_actions"):
            for ai, action in enumerate(getattr(group, kind)):
                if isinstance(action, ScriptAction) and action.container not in known:
                    add(
                        f"recovery_plans.{pname}.groups[{gi}].{kind}[{ai}].container",
                        f"unknown host {action.container!r}",
                    )


def _check_identity(t: Topology, ident: Identity, add: Any) -> None:
    base = "identity"
    hosts = [("directory", ident.directory, "primary")]
    if ident.replica is not None:
        hosts.append(("replica", ident.replica, "recovery"))
    for key, hname, kind in hosts:
        try:
            host = t.host(hname)
            site = t.site_of(hname)
        except KeyError:
            add(f"{base}.{key}", f"unknown host {hname!r}")
            continue
        if host.role != "directory":
            add(f"{base}.{key}", f"{hname!r} is not a host of role directory")
        if site is None or t.sites[site].kind != kind:
            add(f"{base}.{key}", f"{hname!r} must be in the {kind} site")
    if t.timing == "azure" and ident.sync_interval_s < AZURE_MIN_SYNC_INTERVAL_S:
        add(
            f"{base}.sync_interval_s",
            f"Azure AD Connect syncs every {AZURE_MIN_SYNC_INTERVAL_S} s at the fastest "
            "(timing: fast allows less)",
        )
    for i, g in enumerate(ident.groups):
        if g in RESERVED_GROUPS:
            add(f"{base}.groups[{i}]", f"{g!r} is reserved (disabled accounts are its members)")
        if g in ident.groups[:i]:
            add(f"{base}.groups[{i}]", f"group {g!r} is listed twice")
    for key in ("read_groups", "write_groups"):
        for i, g in enumerate(getattr(ident, key)):
            if g not in ident.groups:
                add(f"{base}.{key}[{i}]", f"unknown group {g!r}")
    for uname, user in ident.users.items():
        for i, g in enumerate(user.groups):
            if g not in ident.groups:
                add(f"{base}.users.{uname}.groups[{i}]", f"unknown group {g!r}")
            elif g in user.groups[:i]:
                add(f"{base}.users.{uname}.groups[{i}]", f"group {g!r} is listed twice")
