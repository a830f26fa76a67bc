"""pytest plugin: failover tests of your own, in pytest, against real labs.

Installed with the package (entry point ``pytest11``: ``drill = "harness.pytest_plugin"``), so
``pip install drill`` is all it takes. Nothing happens until a test asks for a fixture:
``pytest_addoption`` and ``pytest_configure`` only register options and markers.

Fixtures (each overridable in a ``conftest.py`` the usual way):

    dr_topology    the topology a test wants: its ``dr_topology`` marker, else ``--dr-topology``
                   (default ``minimal``)
    dr_lab         a running lab of that topology (``harness.lab.LabRef``), shared by the whole
                   session: one lab per topology per session (per xdist worker)
    dr_fresh_lab   a lab of its own for one test, removed after it; use it for tests that fail
                   over, since a failover changes a lab for good
    dr_drill       a ``Drill`` bound to the test's lab (``dr_fresh_lab`` if the test asks for
                   it, else ``dr_lab``): faults, failovers, users, waits, measurements and
                   assertions; it heals its faults and stops its users after the test

Markers (declared, so ``--strict-markers`` accepts them): ``dr_topology(name)``.
Options: ``--dr-topology NAME``, ``--dr-keep`` (leave labs up after the run and say how to
remove them). Otherwise every lab is removed at the end, also when tests fail or the run is
interrupted (Ctrl-C, SIGTERM).

Lab names are ``pt-<worker>-<6 hex>``: ``<worker>`` is the xdist worker id (``gw0`` without
xdist), so parallel workers never share a lab; ``harness.lab`` places each lab in a free /16, so
their subnets never collide either.

Outside pytest, ``harness.lab.running(topology, name)`` is the same lab lifecycle, and
``Drill(ref)`` works on any ``LabRef``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from harness import measure
from harness.errors import DrillError, UsageError

if TYPE_CHECKING:  # the rest of the harness is imported when a fixture is first used
    from harness import faults, users
    from harness.failover import Job
    from harness.lab import LabRef

T = TypeVar("T")
DEFAULT_TOPOLOGY = "minimal"
STEADY_TIMEOUT_S = 60.0
"""How long a lab may take to look as it did before a test (after healing), or after ``up``."""
POLL_S = 0.2

KEPT_KEY = pytest.StashKey[list[str]]()
"""Lines saying which labs ``--dr-keep`` left up, printed in the terminal summary."""


# --- options and markers ---------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--dr-topology`` and ``--dr-keep``."""
    group = parser.getgroup("drill", "drill disaster-recovery labs")
    group.addoption(
        "--dr-topology",
        default=DEFAULT_TOPOLOGY,
        metavar="NAME",
        help="topology of dr_lab where a test has no dr_topology marker "
        f"(a name in topologies/ or a file; default {DEFAULT_TOPOLOGY})",
    )
    group.addoption(
        "--dr-keep",
        action="store_true",
        default=False,
        help="leave labs up after the run for debugging (the summary says how to remove them)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Declare the markers (so ``--strict-markers`` knows them)."""
    config.addinivalue_line(
        "markers",
        "dr_topology(name): the topology of the drill lab this test (module, class) runs on",
    )
    config.stash[KEPT_KEY] = []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say which labs were kept and how to remove them (workers' lines come via xdist)."""
    kept = config.stash.get(KEPT_KEY, [])
    if kept:
        terminalreporter.section("drill: labs kept (--dr-keep)")
        for line in kept:
            terminalreporter.write_line(line)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist: collect the kept-lab lines a worker reported, for the controller's summary."""
    lines = getattr(node, "workeroutput", {}).get("dr_kept", [])
    node.config.stash.setdefault(KEPT_KEY, []).extend(lines)


# --- names -----------------------------------------------------------------------------------


def worker_id() -> str:
    """The xdist worker id (``gw0``, ``gw1``, ...), ``gw0`` when not under xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER", "gw0")


def lab_name() -> str:
    """A fresh lab name for this worker: ``pt-<worker>-<6 hex>``."""
    return f"pt-{worker_id()}-{secrets.token_hex(3)}"


def removal_hint(name: str) -> str:
    """The command that removes a kept lab (with this run's state folder, when it is not the
    default one, so the lab's disks and records go too)."""
    env = os.environ.get("DRILL_STATE_DIR")
    prefix = f"DRILL_STATE_DIR={env} " if env else ""
    return f"{prefix}drill down --name {name}"


# --- waits -----------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T], *, within: float, what: str, interval: float = POLL_S
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; AssertionError
    naming ``what``, the time waited and the last value seen if it never does."""
    started = time.monotonic()
    while True:
        last = predicate()
        if last:
            return last
        waited = time.monotonic() - started
        if waited >= within:
            raise AssertionError(f"{what}: not true after {waited:.1f} s (last seen: {last!r})")
        time.sleep(min(interval, max(0.0, within - waited)))


def _steady_answer(ref: LabRef) -> tuple[str, set[str]] | None:
    """(name, addresses) the app's name resolves to in steady state: the primary site's
    endpoints; None where the topology has no Traffic Manager or no endpoint there."""
    from harness import trafficmanager

    tm = ref.plan.topology.traffic_manager
    if tm is None:
        return None
    primary = ref.plan.topology.primary_site
    addrs = {
        trafficmanager.endpoint_address(ref.plan, ep.target, ep.site)
        for ep in tm.endpoints.values()
        if ep.site == primary and ep.enabled
    }
    return (tm.vanity or tm.profile, addrs) if addrs else None


def _resolves_to(ref: LabRef, name: str, addrs: set[str]) -> bool:
    from harness import trafficmanager

    try:
        answer = trafficmanager.query(trafficmanager.dns_address(ref.plan), name)
    except Exception:  # no answer yet is simply "not yet"
        return False
    return bool(answer.addresses) and set(answer.addresses) <= addrs


def wait_steady(ref: LabRef, within: float = STEADY_TIMEOUT_S) -> None:
    """Wait until users would be sent to the primary site, as in a lab nobody has touched.

    ``up`` returns when every host is ready, but Traffic Manager's monitor needs a few probes
    before it answers with the primary site; a test that starts earlier would see a transient.
    """
    steady = _steady_answer(ref)
    if steady is not None:
        name, addrs = steady
        wait_until(
            lambda: _resolves_to(ref, name, addrs),
            within=within,
            what=f"lab {ref.name!r}: {name} to resolve to {', '.join(sorted(addrs))} "
            "(the primary site, as before any fault)",
        )


# --- labs ------------------------------------------------------------------------------------


@contextlib.contextmanager
def dr_running(topology: str, name: str | None = None, *, keep: bool = False) -> Iterator[LabRef]:
    """``harness.lab.running`` plus the wait for steady state; what the fixtures wrap."""
    from harness import lab

    name = name or lab_name()
    with lab.running(topology, name, keep=keep) as ref:
        wait_steady(ref)
        yield ref


@dataclass
class LabPool:
    """The session's labs, one per topology, removed when the session ends (unless kept).

    SIGTERM (how CI cancels a job) is turned into KeyboardInterrupt while labs are up, so it
    unwinds through the same teardown as Ctrl-C; the old handler comes back afterwards.
    """

    keep: bool
    kept: list[str] = field(default_factory=list)
    labs: dict[str, LabRef] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def get(self, topology: str) -> LabRef:
        """The session's lab of ``topology``, brought up on first use."""
        if topology not in self.labs:
            if not self.labs:
                self.stack.enter_context(_sigterm_interrupts())
            name = lab_name()
            self.labs[topology] = self.stack.enter_context(
                _announced(dr_running(topology, name, keep=self.keep), name, topology, self.kept)
            )
        return self.labs[topology]

    def close(self) -> None:
        """Remove every lab (in reverse order of creation), or record that it was kept."""
        self.labs.clear()
        self.stack.close()


@contextlib.contextmanager
def _announced(
    cm: contextlib.AbstractContextManager[LabRef],
    name: str,
    topology: str,
    kept: list[str],
) -> Iterator[LabRef]:
    """The lab of ``cm``; when it is kept, a line for the summary saying how to remove it."""
    with cm as ref:
        yield ref
    if _is_up(name):
        kept.append(f"kept lab {name} ({topology}); remove it with: {removal_hint(name)}")


def _is_up(name: str) -> bool:
    from harness import state

    return state.load(name) is not None


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield  # someone else handles it: leave theirs alone
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# --- the drill object ------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """RTO, RPO and error rate from the users' own request log, as the drill runner computes
    them (``harness.measure``)."""

    fault_at: float
    requests: int
    error_rate: float
    rto: measure.Rto
    rpo: measure.Rpo
    serving_address: str | None
    recovery_addresses: frozenset[str]

    @property
    def rto_s(self) -> float | None:
        return self.rto.rto_s

    @property
    def rpo_s(self) -> float | None:
        return self.rpo.rpo_s

    @property
    def acknowledged_writes_lost(self) -> int:
        return self.rpo.acknowledged_writes_lost


class Drill:
    """Drill steps against one running lab, for tests: what ``drill run`` does, one call each.

    ``shared`` says the lab outlives the test (``dr_lab``): then a failover, which changes a lab
    for good, is refused, and ``cleanup`` heals faults and waits until the lab is as it was.
    """

    def __init__(self, ref: LabRef, *, shared: bool = False) -> None:
        self.ref = ref
        self.shared = shared
        self.fault_records: list[faults.FaultRecord] = []
        self.users_run: users.UsersRun | None = None
        self.users_path = "/documents"
        self.failover_at: float | None = None
        self.jobs: list[Job] = []

    @property
    def name(self) -> str:
        """The lab's name."""
        return self.ref.name

    # faults

    def fault(self, kind: str, **params: Any) -> faults.FaultRecord:
        """Inject a fault (``docs/faults.md``); its record, with ``id`` and ``started_at``."""
        from harness import faults

        rec = faults.inject(self.name, kind, **params)
        self.fault_records.append(rec)
        return rec

    def heal(self, id: str | None = None) -> list[faults.FaultRecord]:
        """Heal one fault, or every active one; waits (bounded) until healed hosts are ready."""
        from harness import faults

        return faults.heal(self.name, id)

    # failover

    def failover(
        self, *, planned: bool = False, point: str = "latest", plan: str | None = None
    ) -> Job:
        """Fail over to the recovery site (manual plan actions confirmed at once)."""
        from harness import failover

        if self.shared:
            raise UsageError(
                f"a failover changes lab {self.name!r} for good, and it is shared by the "
                "session (dr_lab): ask for the dr_fresh_lab fixture in this test"
            )
        self.failover_at = time.time()
        job = failover.failover(
            self.name, planned=planned, point=point, plan=plan, auto_confirm=True
        )
        self.jobs.append(job)
        return job

    def test_failover(self, point: str = "latest") -> Job:
        """Bring copies up in an isolated test network (production untouched); removed with
        ``cleanup_test_failover`` or at the end of the test."""
        from harness import failover

        job = failover.test_failover(self.name, point)
        self.jobs.append(job)
        return job

    def cleanup_test_failover(self) -> Job:
        """Remove the test failover's copies and network."""
        from harness import failover

        return failover.cleanup_test(self.name)

    # users

    def start_users(
        self,
        rate: float = 10.0,
        write_ratio: float = 0.5,
        *,
        path: str = "/documents",
        timeout_s: float = 1.0,
        seed: int = 0,
    ) -> users.UsersRun:
        """Start synthetic users (one run per test) and wait until their first request."""
        from harness import users

        if self.users_run is not None:
            raise UsageError("synthetic users are running already; stop_users() first")
        cfg = users.UsersConfig(rate, write_ratio, path, timeout_s, seed)
        run = users.start(self.ref, cfg, f"pt-{secrets.token_hex(4)}")
        self.users_run, self.users_path = run, path
        users.wait_for_requests(run, 1)
        return run

    def stop_users(self) -> None:
        """Stop the users (their log stays readable: ``requests()``, ``measure()``)."""
        from harness import users

        if self.users_run is not None:
            users.stop(self.ref, self.users_run)

    def requests(self) -> list[measure.Request]:
        """Every request the users logged so far."""
        from harness import users

        return users.read(self.users_run) if self.users_run is not None else []

    # waits

    def wait_until(
        self, predicate: Callable[[], T], *, within: float, what: str, interval: float = POLL_S
    ) -> T:
        """Poll until ``predicate`` is truthy; AssertionError naming ``what`` if not in time."""
        return wait_until(predicate, within=within, what=what, interval=interval)

    def wait_protected(self, within: float = 120.0) -> None:
        """Wait until every protected disk has a recovery point (Protected)."""
        from harness.replication import control

        started = time.monotonic()
        while True:
            st = control.status(self.name, runtime=self.ref.rt)
            waiting = [f"{d.host}/{d.disk}" for d in st.disks if d.latest_point is None]
            if not waiting:
                return
            waited = time.monotonic() - started
            if waited >= within:
                raise AssertionError(
                    f"initial replication in lab {self.name!r}: {', '.join(waiting)} had no "
                    f"recovery point after {waited:.1f} s (replicator: {st.replicator})"
                )
            time.sleep(POLL_S)

    def wait_recovered(self, within: float = 60.0) -> float:
        """Wait until the users are served by the recovery site after the fault; the RTO."""
        from harness import runner

        fault_at = self._fault_at(None)
        recovery = runner.recovery_addresses(self.ref)

        def recovered() -> measure.Rto | None:
            r = measure.rto(self.requests(), fault_at, recovery)
            return r if r.rto_s is not None else None

        found = wait_until(
            recovered,
            within=within,
            what=f"users served by the recovery site ({', '.join(sorted(recovery))})",
        )
        assert found is not None and found.rto_s is not None
        return found.rto_s

    # measurements

    def _fault_at(self, fault_at: float | None) -> float:
        if fault_at is not None:
            return fault_at
        if self.fault_records:
            return self.fault_records[0].started_at
        if self.failover_at is not None:
            return self.failover_at
        raise AssertionError(
            "nothing to measure from: inject a fault or fail over first, or pass fault_at"
        )

    def measure(self, fault_at: float | None = None) -> Measurement:
        """Stop the users, then RTO and RPO from their log, counted from ``fault_at`` (default:
        the first fault this drill injected, else its failover), as ``drill run`` does."""
        from harness import runner

        if self.users_run is None:
            raise AssertionError("no synthetic users ran: start_users() before the fault")
        at = self._fault_at(fault_at)
        self.stop_users()
        reqs = self.requests()
        recovery = runner.recovery_addresses(self.ref)
        ok = [r for r in reqs if r["ok"] and r.get("address")]
        serving = ok[-1]["address"] if ok else None
        ids: list[str] = []
        if measure.acknowledged(reqs):
            if serving is None:
                raise AssertionError(
                    f"no user request succeeded in lab {self.name!r}: nothing to read back"
                )
            ids = runner.surviving_ids(serving, self.users_path, self._login())
        start = reqs[0]["start"] if reqs else at
        end = reqs[-1]["end"] if reqs else time.time()
        return Measurement(
            fault_at=at,
            requests=len(reqs),
            error_rate=measure.error_rate(reqs, start, end + 1),
            rto=measure.rto(reqs, at, recovery),
            rpo=measure.rpo(reqs, at, ids, start),
            serving_address=serving,
            recovery_addresses=frozenset(recovery),
        )

    def _login(self) -> tuple[str, str] | None:
        if self.ref.plan.topology.identity is None:
            return None
        from harness import identity

        logins = identity.synthetic_users(self.name)
        return logins[0].basic if logins else None

    # assertions

    def site_addresses(self, site: str) -> set[str]:
        """The public addresses of Traffic Manager's endpoints in ``site``."""
        from harness import trafficmanager

        tm = trafficmanager.profile_of(self.ref.plan)
        sites = sorted({ep.site for ep in tm.endpoints.values()})
        if site not in sites:
            raise UsageError(f"no Traffic Manager endpoint in site {site!r} (sites: {sites})")
        return {
            trafficmanager.endpoint_address(self.ref.plan, ep.target, ep.site)
            for ep in tm.endpoints.values()
            if ep.site == site
        }

    def _site_of(self, address: str) -> str:
        from harness import trafficmanager

        tm = trafficmanager.profile_of(self.ref.plan)
        for ep in tm.endpoints.values():
            if trafficmanager.endpoint_address(self.ref.plan, ep.target, ep.site) == address:
                return ep.site
        return "no endpoint"

    def _endpoints(self) -> str:
        """Every endpoint with its address and monitor status, for failure messages."""
        from harness import trafficmanager

        st = trafficmanager.read_status(self.name).get("endpoints", {})
        tm = trafficmanager.profile_of(self.ref.plan)
        return ", ".join(
            f"{n} ({trafficmanager.endpoint_address(self.ref.plan, ep.target, ep.site)}) "
            f"{st.get(n, {}).get('status', 'unknown')}"
            for n, ep in tm.endpoints.items()
        )

    def assert_resolves_to(self, name: str | None, site: str, *, within: float = 0.0) -> None:
        """The lab's DNS answers ``name`` (default: the app's) with ``site``'s endpoints within
        ``within`` seconds; AssertionError saying what it answered instead, and for how long."""
        from harness import trafficmanager

        tm = trafficmanager.profile_of(self.ref.plan)
        name = name or tm.vanity or tm.profile
        want = self.site_addresses(site)
        server = trafficmanager.dns_address(self.ref.plan)
        seen = "no answer"
        started = time.monotonic()
        while True:
            try:
                answer = trafficmanager.query(server, name)
                if answer.addresses and set(answer.addresses) <= want:
                    return
                seen = (
                    ", ".join(f"{a} ({self._site_of(a)})" for a in answer.addresses)
                    or f"no address ({answer.rcode})"
                )
            except Exception as exc:  # a DNS failure is an answer worth reporting
                seen = f"no answer ({type(exc).__name__}: {exc})"
            waited = time.monotonic() - started
            if waited >= within:
                raise AssertionError(
                    f"{name} still resolved to {seen} after {waited:.1f} s; expected {site} "
                    f"({', '.join(sorted(want))}). Endpoint statuses: {self._endpoints()}"
                )
            time.sleep(min(POLL_S, within - waited))

    def assert_rto_within(self, seconds: float, m: Measurement | None = None) -> Measurement:
        """Users were served by the recovery site within ``seconds`` of the fault."""
        m = m or self.measure()
        if m.rto_s is None:
            raise AssertionError(
                f"the recovery site ({', '.join(sorted(m.recovery_addresses))}) never served a "
                f"user after the fault; {m.rto.failed_requests} requests failed meanwhile, "
                f"last success was served by {m.serving_address}"
            )
        if m.rto_s > seconds:
            raise AssertionError(
                f"RTO {m.rto_s:.1f} s exceeds {seconds:.1f} s: users were first served by the "
                f"recovery site {m.rto_s:.1f} s after the fault; "
                f"{m.rto.failed_requests} requests failed before that"
            )
        return m

    def assert_rpo_within(self, seconds: float, m: Measurement | None = None) -> Measurement:
        """The newest acknowledged write that survived was at most ``seconds`` old at the fault."""
        m = m or self.measure()
        p = m.rpo
        if p.rpo_s is None:
            raise AssertionError(
                "no write was acknowledged before the fault, so there is no RPO to judge: start "
                "users with write_ratio > 0 and let them write before the fault"
            )
        if p.rpo_s > seconds:
            newest = (
                "no acknowledged write survived"
                if p.newest_survivor_ack is None
                else f"the newest surviving acknowledged write was {p.rpo_s:.1f} s old"
            )
            raise AssertionError(
                f"RPO {p.rpo_s:.1f} s exceeds {seconds:.1f} s: {newest} at the fault; "
                f"{p.acknowledged_writes_lost} of {p.acknowledged_before_fault} acknowledged "
                f"writes lost (first ids: {', '.join(p.lost_ids[:5]) or 'none'})"
            )
        return m

    def assert_no_acknowledged_write_lost(self, m: Measurement | None = None) -> Measurement:
        """Every write acknowledged before the fault is still held by the app serving users."""
        m = m or self.measure()
        p = m.rpo
        if p.acknowledged_writes_lost:
            age = (
                ""
                if p.oldest_lost_ack is None
                else (
                    f"; the oldest was acknowledged {m.fault_at - p.oldest_lost_ack:.1f} s "
                    "before the fault"
                )
            )
            raise AssertionError(
                f"{p.acknowledged_writes_lost} of {p.acknowledged_before_fault} acknowledged "
                f"writes were lost (not held by {m.serving_address}){age}; "
                f"ids: {', '.join(p.lost_ids[:10])}" + (" ..." if len(p.lost_ids) > 10 else "")
            )
        return m

    # cleanup

    def cleanup(self, *, lab_goes_away: bool = False) -> None:
        """Stop users, remove a test failover, heal faults; for a shared lab, wait until it is
        as before. Every step runs; errors are reported together."""
        errors: list[str] = []
        steps: list[tuple[str, Callable[[], None]]] = [
            ("stopping users", self.stop_users),
            ("removing the test failover", self._cleanup_test),
            ("healing faults", lambda: self._end_faults(lab_goes_away)),
        ]
        if self.shared:
            steps.append(("returning to steady state", lambda: wait_steady(self.ref)))
        for what, step in steps:
            try:
                step()
            except (DrillError, AssertionError) as exc:
                errors.append(f"{what}: {exc}")
        if errors:
            raise DrillCleanupError(self.name, errors)

    def _cleanup_test(self) -> None:
        from harness import failover

        if failover.read_state(self.name).get("test"):
            failover.cleanup_test(self.name)

    def _end_faults(self, lab_goes_away: bool) -> None:
        from harness import faults

        if not faults.active(self.name):
            return
        if lab_goes_away:  # removing the lab ends them; healing first would only be slower
            faults.end_all(self.name)
        else:
            faults.heal(self.name)


class DrillCleanupError(DrillError):
    """A lab could not be put back after a test (the lab is replaced for later tests)."""

    def __init__(self, lab_name: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"cleaning up lab {lab_name!r} after the test: " + "; ".join(errors))


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def dr_topology(request: pytest.FixtureRequest) -> str:
    """The topology of this test's lab: its ``dr_topology`` marker, else ``--dr-topology``."""
    marker = request.node.get_closest_marker("dr_topology")
    if marker is None:
        return str(request.config.getoption("--dr-topology"))
    if len(marker.args) != 1 or not isinstance(marker.args[0], str) or marker.kwargs:
        raise UsageError(
            f"dr_topology takes one topology name, e.g. @pytest.mark.dr_topology('minimal'); "
            f"got args={marker.args!r} kwargs={marker.kwargs!r}"
        )
    return marker.args[0]


@pytest.fixture(scope="session")
def dr_lab_pool(request: pytest.FixtureRequest) -> Iterator[LabPool]:
    """The session's labs by topology; all removed at the end of the session unless kept."""
    pool = LabPool(keep=bool(request.config.getoption("--dr-keep")))
    try:
        yield pool
    finally:
        try:
            pool.close()
        finally:
            _report_kept(request.config, pool.kept)


def _report_kept(config: pytest.Config, lines: list[str]) -> None:
    """Kept-lab lines to this process's summary, or to the xdist controller's."""
    if not lines:
        return
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput.setdefault("dr_kept", []).extend(lines)
    else:
        config.stash.setdefault(KEPT_KEY, []).extend(lines)


@pytest.fixture
def dr_lab(dr_lab_pool: LabPool, dr_topology: str) -> LabRef:
    """A running lab of ``dr_topology``, shared by every test of the session that uses it."""
    return dr_lab_pool.get(dr_topology)


@pytest.fixture
def dr_fresh_lab(request: pytest.FixtureRequest, dr_topology: str) -> Iterator[LabRef]:
    """A lab of ``dr_topology`` for this test alone, removed after it (unless ``--dr-keep``)."""
    keep = bool(request.config.getoption("--dr-keep"))
    name = lab_name()
    kept: list[str] = []
    try:
        with _announced(dr_running(dr_topology, name, keep=keep), name, dr_topology, kept) as r:
            yield r
    finally:
        _report_kept(request.config, kept)


@pytest.fixture
def dr_drill(request: pytest.FixtureRequest, dr_lab_pool: LabPool) -> Iterator[Drill]:
    """A ``Drill`` on this test's lab: ``dr_fresh_lab`` if the test uses it, else ``dr_lab``.

    After the test its users are stopped, a test failover removed and its faults healed; if the
    shared lab cannot be put back as it was, it is replaced so later tests start clean.
    """
    fresh = "dr_fresh_lab" in request.fixturenames
    ref: LabRef = request.getfixturevalue("dr_fresh_lab" if fresh else "dr_lab")
    d = Drill(ref, shared=not fresh)
    yield d
    keep = bool(request.config.getoption("--dr-keep"))
    try:
        d.cleanup(lab_goes_away=fresh and not keep)
    except DrillCleanupError:
        if not fresh:
            _discard(dr_lab_pool, ref)
        raise


def _discard(pool: LabPool, ref: LabRef) -> None:
    """Forget a shared lab that could not be put back; the next test gets a new one. It is
    removed now unless labs are kept for debugging (then it is left as it is)."""
    from harness import lab

    for topo, r in list(pool.labs.items()):
        if r.name == ref.name:
            del pool.labs[topo]
    if not pool.keep:
        with contextlib.suppress(DrillError):
            lab.down(ref.name)


__all__ = [
    "Drill",
    "DrillCleanupError",
    "LabPool",
    "Measurement",
    "dr_running",
    "lab_name",
    "wait_steady",
    "wait_until",
    "worker_id",
]
