"""Labs: a topology brought to life as containers on networks, and taken down again.

``up`` turns a topology into a live lab in a fixed order (networks, volumes, gateways, hosts),
configures routes, and waits for every host's own readiness check. If anything fails, or the run
is interrupted (Ctrl-C, SIGTERM), it removes everything this run created, found by its run id
label, within a bounded time, and re-raises. ``down`` removes a lab by its lab label, ``down_all``
every lab, even with the topology file and state folder gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from harness import disks, naming, signals, state
from harness import topology as topo_mod
from harness.components import ROLES, START_ORDER, forwarding, gateway, replicator
from harness.components.common import container_state, running_ready
from harness.errors import EngineError, HarnessError, ReadinessError, TeardownError, UsageError
from harness.plan import GatewayPlan, HostPlan, LabPlan, candidate_spaces, make_plan
from harness.runtime import ContainerInfo, DockerRuntime, Runtime
from harness.topology import Topology

Progress = Callable[[str], None]
READY_TIMEOUT_S = 90.0
TEARDOWN_TIMEOUT_S = 60.0
WORKERS = 8
TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "topologies"


def _quiet(_: str) -> None:
    pass


def open_runtime() -> DockerRuntime:
    """A runtime on the engine that answers (see ``harness.engine``)."""
    from harness import engine

    return DockerRuntime(engine.connect())


def resolve_topology(ref: str | Path | None) -> Path:
    """A topology file from a path, or a bare name looked up in ``topologies/``."""
    if ref is None:
        ref = "enterprise"
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in str(ref):
        return p
    return TOPOLOGY_DIR / f"{ref}.yaml"


def check_lab_name(name: str) -> str:
    """The name if it is a valid lab name, else UsageError."""
    if not naming.NAME_RE.match(name):
        raise UsageError(
            f"invalid lab name {name!r}: use 1-24 lowercase letters, digits and '-', "
            "starting with a letter"
        )
    return name


# --- status ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostStatus:
    """One container of a lab as it is now."""

    name: str
    site: str | None
    role: str
    container: str
    addresses: dict[str, str]
    state: str
    health: str  # ok | starting | failing: <why> | stopped | missing


@dataclass(frozen=True)
class LabStatus:
    """A lab as it is now."""

    lab: str
    run_id: str
    topology: str
    space: str
    created_at: float
    hosts: list[HostStatus] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return bool(self.hosts) and all(h.health == "ok" for h in self.hosts)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


# --- up --------------------------------------------------------------------------------------


def up(
    topology: str | Path | Topology | None = None,
    name: str = "default",
    *,
    runtime: Runtime | None = None,
    progress: Progress = _quiet,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> LabStatus:
    """Bring a lab up and wait until every host is ready; on any failure remove what was made."""
    check_lab_name(name)
    if isinstance(topology, Topology):
        topo, source = topology, "<api>"
    else:
        path = resolve_topology(topology)
        topo, source = topo_mod.load(path), str(path)
    rt = runtime or open_runtime()
    _refuse_existing(rt, name)
    _refuse_missing_images(rt, topo)
    run_id = naming.new_run_id()
    started = time.monotonic()
    progress(f"up: lab {name!r} from topology {topo.name!r} (run {run_id})")
    plan: LabPlan | None = None
    lock = _NetworksLock()
    try:
        plan = _create_networks(rt, topo, name, run_id, progress, lock)
        state.save(
            state.LabRecord(
                lab=name,
                run_id=run_id,
                topology_name=topo.name,
                topology_source=source,
                space=str(plan.space),
                created_at=time.time(),
                topology=topo.model_dump(mode="json"),
            )
        )
        _start_all(rt, plan, progress, ready_timeout_s, lock)
    except BaseException:
        lock.release()
        progress(f"up: failed or interrupted; removing what run {run_id} created")
        _teardown(rt, {naming.RUN: run_id}, progress, lab=name)
        record = state.load(name)
        if record is None or record.run_id == run_id:
            state.remove(name)
        raise
    progress(f"up: lab {name!r} ready in {time.monotonic() - started:.1f}s")
    return status(name, runtime=rt, checked=True)


def _refuse_existing(rt: Runtime, name: str) -> None:
    existing = rt.containers({naming.LAB: name}) or rt.networks({naming.LAB: name})
    if existing:
        raise UsageError(
            f"a lab named {name!r} already exists; take it down with `drill down --name {name}` "
            "or choose another name with --name"
        )


def _refuse_missing_images(rt: Runtime, topo: Topology) -> None:
    from harness import images

    client = getattr(rt, "client", None)
    if client is None:
        return
    roles = {"gateway"} | {h.role for _, _, h in topo.hosts()}
    if topo.protection is not None and topo.protection.process_server is not None:
        roles.add("replicator")
    missing = sorted(set(images.missing_images(client)) & roles)
    if missing:
        raise UsageError(
            f"images missing for role(s) {', '.join(missing)}: run `drill images build` "
            "(or `make images`) first"
        )


class _NetworksLock:
    """One lab at a time picks its address space and creates its networks (every drill on
    this machine shares the lock file), so that labs starting together never race for a space.

    ``up`` creates the networks of the hosts that start first, starts them, and creates the
    rest while they boot; the lock is held until the last network exists.
    """

    PATH = Path(tempfile.gettempdir()) / "drill-networks.lock"

    def __init__(self) -> None:
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        if self._file is None:
            try:
                self._file = open(self.PATH, "a")  # noqa: SIM115 (held across two functions)
            except PermissionError:  # another user's file: a lock needs only a read handle
                self._file = open(self.PATH)  # noqa: SIM115
            fcntl.flock(self._file, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


def _early_starters(plan: LabPlan) -> set[str]:
    """Containers started before the others: those slowest to get ready once started, the
    storage account (Azurite's start-up) and the replicator (loading the storage SDK)."""
    early = {hp.container for hp in plan.hosts.values() if hp.role == "storage"}
    if replicator.enabled(plan):
        early.add(replicator.container(plan))
    return early


def _early_networks(plan: LabPlan) -> list[str]:
    """Keys of the networks the early starters join, in plan order."""
    early = _early_starters(plan)
    specs = [ROLES[hp.role].spec(plan, hp) for hp in plan.hosts.values() if hp.container in early]
    if replicator.enabled(plan):
        specs.append(replicator.spec(plan))
    names = {att.network for spec in specs for att in spec.networks}
    # At least one: the space is taken in _create_networks' loop, where an overlap moves on.
    return [key for key, spec in plan.networks.items() if spec.name in names] or [
        next(iter(plan.networks))
    ]


def _create_networks(
    rt: Runtime, topo: Topology, name: str, run_id: str, progress: Progress, lock: _NetworksLock
) -> LabPlan:
    """Take the first free /16 and create the early starters' networks in it (the lock is
    acquired here); the rest come from ``_create_rest_networks``."""
    lock.acquire()
    for space in candidate_spaces(topo):
        used = [ipaddress.ip_network(s, strict=False) for s in rt.all_subnets() if ":" not in s]
        if any(space.overlaps(u) for u in used):
            continue
        plan = make_plan(topo, name, run_id, space)
        made: list[str] = []
        try:
            for key in _early_networks(plan):
                rt.create_network(plan.networks[key])
                made.append(plan.networks[key].name)
        except EngineError as exc:
            for n in made:
                rt.remove_network(n)
            if "overlap" in str(exc).lower():
                continue  # something outside drill took this space meanwhile
            raise
        if space != topo.addressing.space:
            progress(f"up: {topo.addressing.space} is taken; lab placed in {space}")
        return plan
    raise HarnessError("no free /16 left for another lab; take some labs down")


def _create_rest_networks(rt: Runtime, plan: LabPlan, lock: _NetworksLock) -> None:
    """The networks ``_create_networks`` left, one at a time (creating them in parallel gains
    nothing: the engine serialises them); then the lock is released."""
    early = set(_early_networks(plan))
    try:
        for key, spec in plan.networks.items():
            if key not in early:
                rt.create_network(spec)
    finally:
        lock.release()


def _ordered_hosts(plan: LabPlan) -> list[list[HostPlan]]:
    """Hosts grouped by start order; each group starts in parallel."""
    groups = []
    for role in START_ORDER:
        members = [hp for hp in plan.hosts.values() if hp.role == role]
        if members:
            groups.append(members)
    return groups


def _start_all(
    rt: Runtime, plan: LabPlan, progress: Progress, ready_timeout_s: float, lock: _NetworksLock
) -> None:
    for hp in plan.hosts.values():
        mod = ROLES[hp.role]
        for vname, vlabels in getattr(mod, "volumes", lambda *_: {})(plan, hp).items():
            rt.create_volume(vname, vlabels)
        if hasattr(mod, "prepare"):
            mod.prepare(plan, hp)
        if _local_disks(rt):
            disks.attach(plan, hp)
    with_replicator = replicator.enabled(plan)
    if with_replicator:
        replicator.prepare(plan)
    gws = list(plan.gateways.values())
    for gp in gws:
        gateway.prepare(plan, gp)
    hosts = [hp for group in _ordered_hosts(plan) for hp in group]
    progress(f"up: starting {len(gws)} gateways and {len(hosts)} hosts")
    tasks: list[tuple[Any, Callable[[], None]]] = [
        (gateway.spec(plan, gp), functools.partial(gateway.configure, rt, plan, gp)) for gp in gws
    ]
    tasks += [
        (ROLES[hp.role].spec(plan, hp), functools.partial(ROLES[hp.role].configure, rt, plan, hp))
        for hp in hosts
    ]
    if with_replicator:
        tasks.append((replicator.spec(plan), functools.partial(replicator.configure, rt, plan)))
    checks = {container: (comp, check) for comp, (container, check) in _checks(rt, plan).items()}
    waiting = Waiting(deadline=time.monotonic() + ready_timeout_s, started=time.monotonic())
    # Two pools: containers start on one while those already running are configured and
    # checked on the other, so a slow configure (the directory's seeding) or a host still
    # getting ready never holds back another container's start.
    finishing: list[Future[None]] = []
    with (
        ThreadPoolExecutor(max_workers=WORKERS) as starter,
        ThreadPoolExecutor(max_workers=WORKERS) as finisher,
    ):

        def start(spec: Any, configure: Callable[[], None]) -> None:
            rt.run(spec)
            comp, check = checks.get(spec.name, (spec.name, None))
            finishing.append(
                finisher.submit(_finish, rt, plan, spec, configure, comp, check, waiting)
            )

        try:
            # The slowest to get ready start while the other networks are created.
            early = _early_starters(plan)
            first = [t for t in tasks if t[0].name in early]
            rest = [t for t in tasks if t[0].name not in early]
            starts = [starter.submit(start, spec, configure) for spec, configure in first]
            _create_rest_networks(rt, plan, lock)
            site_nets = {spec.name for key, spec in plan.networks.items() if "." in key}
            run_nets = rt.networks({naming.RUN: plan.run_id})
            bridges = [n.bridge for n in run_nets if n.name in site_nets]
            starts.append(starter.submit(forwarding.allow, rt, plan, bridges))
            starts += [starter.submit(start, spec, configure) for spec, configure in rest]
            _raise_first_done(starts)
            _raise_first_done(finishing)
        except BaseException:
            waiting.stop.set()  # pollers give up at once; the caller tears everything down
            raise
    progress(f"up: all hosts ready {time.monotonic() - waiting.started:.1f}s after the first start")


@dataclass(frozen=True)
class Waiting:
    """What every readiness wait of one ``up`` shares: its deadline, and a way to stop."""

    deadline: float
    started: float
    stop: threading.Event = field(default_factory=threading.Event)


def _finish(
    rt: Runtime,
    plan: LabPlan,
    spec: Any,
    configure: Callable[[], None],
    comp: str,
    check: Callable[[], str | None] | None,
    waiting: Waiting,
) -> None:
    """Configure one running container, then wait for its readiness check."""
    try:
        configure()
    except (EngineError, HarnessError):
        if container_state(rt, plan, spec.name) != "running":
            raise ReadinessError(
                what=f"host {spec.labels.get(naming.COMPONENT, spec.name)}",
                where=spec.name,
                waited_s=0.0,
                hint="the container is not running right after start; see its logs",
                last_logs=rt.logs(spec.name, tail=20),
            ) from None
        raise
    if check is not None:
        _wait_ready(rt, plan, comp, spec.name, check, waiting)


def _wait_ready(
    rt: Runtime,
    plan: LabPlan,
    comp: str,
    container: str,
    check: Callable[[], str | None],
    waiting: Waiting,
) -> None:
    """Poll one component's readiness check, quickly at first, until it passes.

    ReadinessError when its container exits or the deadline passes; returns early when the
    wait is stopped (another component failed, or the run was interrupted).
    """
    delay = 0.02
    next_state_check = time.monotonic() + 1.0
    while not waiting.stop.is_set():
        why = _safe(check)
        if why is None:
            return
        now = time.monotonic()
        dead = False
        if now >= next_state_check:
            dead = container_state(rt, plan, container) not in ("running", None)
            next_state_check = now + 1.0
        if dead or now > waiting.deadline:
            raise ReadinessError(
                what=f"host {comp}",
                where=container,
                waited_s=now - waiting.started,
                hint="the container exited; see its logs" if dead else f"last check: {why}",
                last_logs=rt.logs(container, tail=20),
            )
        waiting.stop.wait(delay)
        # At most 0.1 s apart: the last host's wait is the lab's, and the checks that cost an
        # exec (gateways, directories) mostly pass at their first or second try by now.
        delay = min(0.1, delay * 1.5)


def _raise_first_done(futures: list[Future[Any]]) -> None:
    """Wait for every future; raise the first error as soon as it happens."""
    done, _ = wait(futures, return_when=FIRST_EXCEPTION)
    for f in done:
        err = f.exception()
        if err is not None:
            raise err


def _local_disks(rt: Runtime) -> bool:
    """Disks are loop devices on this machine: only with the real engine, which runs here."""
    return isinstance(rt, DockerRuntime)


def _checks(rt: Runtime, plan: LabPlan) -> dict[str, tuple[str, Callable[[], str | None]]]:
    """Readiness checks by component name: (container, check)."""
    checks: dict[str, tuple[str, Callable[[], str | None]]] = {}
    for gp in plan.gateways.values():
        checks[f"{gp.site}-gw"] = (gp.container, _bind_check(gateway.check_ready, rt, plan, gp))
    for hp in plan.hosts.values():
        checks[hp.name] = (hp.container, _bind_check(ROLES[hp.role].check_ready, rt, plan, hp))
    if replicator.enabled(plan):
        checks[replicator.COMPONENT] = (
            replicator.container(plan),
            lambda: replicator.check_ready(rt, plan),
        )
    if not isinstance(rt, DockerRuntime):
        # A fake runtime's addresses are on no network: probing them would send packets off
        # this machine. Its containers are ready when it says they run.
        return {
            comp: (container, functools.partial(running_ready, rt, plan, container))
            for comp, (container, _) in checks.items()
        }
    return checks


def _bind_check(
    fn: Callable[..., str | None], rt: Runtime, plan: LabPlan, target: HostPlan | GatewayPlan
) -> Callable[[], str | None]:
    return lambda: fn(rt, plan, target)


def _safe(check: Callable[[], str | None]) -> str | None:
    try:
        return check()
    except (EngineError, OSError) as exc:
        return str(exc)


# --- down ------------------------------------------------------------------------------------


def down(
    name: str = "default", *, runtime: Runtime | None = None, progress: Progress = _quiet
) -> int:
    """Remove every object of one lab; returns how many were removed."""
    check_lab_name(name)
    rt = runtime or open_runtime()
    removed = _teardown(rt, {naming.LAB: name}, progress, lab=name)
    state.remove(name)
    return removed


def down_all(*, runtime: Runtime | None = None, progress: Progress = _quiet) -> int:
    """Remove every object of every lab, by label alone; returns how many were removed."""
    rt = runtime or open_runtime()
    removed = _teardown(rt, {naming.LAB: ""}, progress, lab=None)
    for lab in state.known_labs():
        state.remove(lab)
    return removed


def _teardown(
    rt: Runtime,
    selector: Mapping[str, str],
    progress: Progress,
    lab: str | None,
    timeout_s: float = TEARDOWN_TIMEOUT_S,
) -> int:
    """Remove containers, forwarding rules, networks and volumes, within a time limit.

    ``lab`` names the lab whose forwarding rules go (None: every lab's).
    """
    deadline = time.monotonic() + timeout_s
    removed = 0
    while True:
        containers = rt.containers(selector)
        # The replicator goes first, then every freeze is undone (its, or a reprotect's whose
        # process was killed): a host writing to a frozen filesystem cannot be killed.
        freezers = [c for c in containers if c.labels.get(naming.COMPONENT) == replicator.COMPONENT]
        for c in freezers:
            rt.remove_container(c.name)
        if containers and _local_disks(rt):
            disks.thaw(lab)
        rest = [c.name for c in containers if c not in freezers]
        if rest:
            with ThreadPoolExecutor(max_workers=WORKERS) as pool:
                list(pool.map(rt.remove_container, rest))
        removed += len(containers)
        nets = rt.networks(selector)
        if nets:
            forwarding.remove(rt, lab, {naming.LAB: lab or "all", naming.KIND: "task"})
        stuck: list[EngineError] = []
        for n in nets:
            try:
                rt.remove_network(n.name)
                removed += 1
            except EngineError as exc:
                stuck.append(exc)
        removed += rt.remove_volumes(selector)
        if stuck:
            # A network the engine will not let go (see runtime.remove_network) must not also
            # leave the lab's disks mounted: everything else goes first, then the error.
            if _local_disks(rt):
                if lab:
                    disks.detach(lab)
                else:
                    disks.detach_all()
            raise stuck[0]
        # Creation may still have been in flight on another thread: look again once.
        if not rt.containers(selector) and not rt.networks(selector):
            break
        if time.monotonic() > deadline:
            left = [c.name for c in rt.containers(selector)] + [
                n.name for n in rt.networks(selector)
            ]
            raise TeardownError(f"could not remove within {timeout_s:.0f}s: {', '.join(left)}")
    # Disks last: no container holds their filesystems any more.
    if _local_disks(rt):
        removed += disks.detach(lab) if lab else disks.detach_all()
    if removed:
        progress(f"down: removed {removed} objects")
    return removed


# --- status ----------------------------------------------------------------------------------


def status(
    name: str = "default", *, runtime: Runtime | None = None, checked: bool = False
) -> LabStatus:
    """The lab's hosts with their state and health; UsageError if there is no such lab.

    ``checked``: every readiness check has just passed (``up``), so running hosts are ok
    without checking them again.
    """
    check_lab_name(name)
    rt = runtime or open_runtime()
    containers = {c.name: c for c in rt.containers({naming.LAB: name})}
    record = state.load(name)
    if not containers and record is None:
        raise UsageError(f"no lab named {name!r} is up (see `drill ls`)")
    if record is None:
        return _status_from_labels(name, containers)
    topo = record.load_topology()
    plan = make_plan(topo, name, record.run_id, ipaddress.IPv4Network(record.space))
    checks = _checks(rt, plan)
    kinds: dict[str, tuple[str | None, str]] = {
        f"{gp.site}-gw": (gp.site, "gateway") for gp in plan.gateways.values()
    }
    kinds.update({hp.name: (hp.site, hp.role) for hp in plan.hosts.values()})
    kinds[replicator.COMPONENT] = (topo.primary_site, "replicator")
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {
            comp: pool.submit(
                _health, containers.get(container), (lambda: None) if checked else check
            )
            for comp, (container, check) in checks.items()
        }
    hosts = []
    for comp, (container, _) in checks.items():
        info = containers.get(container)
        site, role = kinds[comp]
        hosts.append(
            HostStatus(
                name=comp,
                site=site,
                role=role,
                container=container,
                addresses=dict(info.addresses) if info else {},
                state=info.state if info else "missing",
                health=futures[comp].result(),
            )
        )
    return LabStatus(name, record.run_id, topo.name, record.space, record.created_at, hosts)


def _health(info: ContainerInfo | None, check: Callable[[], str | None]) -> str:
    if info is None:
        return "missing"
    if info.state != "running":
        return "stopped"
    why = _safe(check)
    return "ok" if why is None else f"failing: {why}"


def _status_from_labels(name: str, containers: Mapping[str, ContainerInfo]) -> LabStatus:
    """Status of a lab whose state folder is gone: what the labels tell."""
    any_c = next(iter(containers.values()))
    hosts = [
        HostStatus(
            name=c.labels.get(naming.COMPONENT, c.name),
            site=c.labels.get(naming.SITE),
            role=c.labels.get(naming.KIND, "?"),
            container=c.name,
            addresses=dict(c.addresses),
            state=c.state,
            health="unknown (no state folder)",
        )
        for c in containers.values()
    ]
    return LabStatus(
        name,
        any_c.labels.get(naming.RUN, "?"),
        any_c.labels.get(naming.TOPOLOGY, "?"),
        "?",
        0,
        hosts,
    )


@dataclass(frozen=True)
class LabSummary:
    """One line of ``drill ls``."""

    lab: str
    topology: str
    run_id: str
    containers: int
    running: int
    created_at: float


def list_labs(*, runtime: Runtime | None = None) -> list[LabSummary]:
    """Every lab on the engine, found by label."""
    rt = runtime or open_runtime()
    by_lab: dict[str, list[ContainerInfo]] = {}
    for c in rt.containers({naming.LAB: ""}):
        by_lab.setdefault(c.labels.get(naming.LAB, "?"), []).append(c)
    out = []
    for lab, cs in sorted(by_lab.items()):
        rec = state.load(lab)
        out.append(
            LabSummary(
                lab=lab,
                topology=cs[0].labels.get(naming.TOPOLOGY, "?"),
                run_id=cs[0].labels.get(naming.RUN, "?"),
                containers=len(cs),
                running=sum(c.state == "running" for c in cs),
                created_at=rec.created_at if rec else 0.0,
            )
        )
    return out


# --- opening a running lab -------------------------------------------------------------------


@dataclass(frozen=True)
class LabRef:
    """A running lab as later commands see it: its plan and a runtime to act on it."""

    plan: LabPlan
    rt: Runtime
    record: state.LabRecord

    @property
    def name(self) -> str:
        """The lab's name."""
        return self.plan.lab


def open_lab(name: str, *, runtime: Runtime | None = None) -> LabRef:
    """The running lab called ``name``; UsageError if it is not up."""
    check_lab_name(name)
    record = state.load(name)
    rt = runtime or open_runtime()
    if record is None or not rt.containers({naming.LAB: name, naming.RUN: record.run_id}):
        raise UsageError(f"lab {name!r} is not up (start it with `drill up --name {name}`)")
    plan = make_plan(
        record.load_topology(), name, record.run_id, ipaddress.IPv4Network(record.space)
    )
    return LabRef(plan, rt, record)


@contextlib.contextmanager
def running(
    topology: str | Path | Topology | None,
    name: str,
    *,
    keep: bool = False,
    runtime: Runtime | None = None,
    progress: Progress = _quiet,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[LabRef]:
    """A lab that is up for the block and removed after it, whatever ends the block.

    ``keep`` leaves it up (for debugging; ``drill down --name NAME`` removes it). Removal is
    bounded (``TEARDOWN_TIMEOUT_S``); Ctrl-C or SIGTERM while it runs is reported and ignored,
    so an impatient user cannot leave half a lab behind. ``up`` itself removes what it made if
    it fails or is interrupted. This is what the pytest plugin's ``dr_lab`` wraps.
    """
    up(topology, name, runtime=runtime, progress=progress, ready_timeout_s=ready_timeout_s)
    try:
        yield open_lab(name, runtime=runtime)
    finally:
        if not keep:
            with signals.shielded("drill: still removing the lab, please wait"):
                down(name, runtime=runtime, progress=progress)
