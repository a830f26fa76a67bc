"""The drill runner: a journalled experiment against a real lab.

    setup          the lab comes up
    initial replication   where the lab replicates, until every disk has a recovery point
    steady-state   synthetic users work; their error rate must stay within the bound
    fault          the drill's faults at their times; heals where ``heal_after`` says
    recovery       the drill's recovery action ``after`` the first fault; with an RTO objective,
                   the runner waits until the recovery site serves users (the RTO clock)
    verification   users keep working for a while; then the data that survived is read back
    failback       optionally, home again
    rollback       always: users stopped, the lab taken down (which ends every fault); with
                   ``keep``, the faults are healed and the lab stays up

Every step is recorded with start, end, status and evidence. Measurements come from the users'
request log (``harness.measure``). The result is JSON first (``journal.json``); JUnit XML, the
HTML report and the Markdown summary are rendered from it (``harness.report``).

Exit codes: 0 every objective met; 1 an objective missed; 2 the harness failed (bad input or a
runtime failure). An objective missed is never a harness failure, and the reverse.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from harness import drill as drill_mod
from harness import failover, faults, lab, measure, users
from harness import topology as topo_mod
from harness.drill import Drill
from harness.errors import DrillError, HarnessError
from harness.lab import LabRef
from harness.topology import Topology

Progress = Callable[[str], None]
OUTAGE_KINDS = {"site-outage", "host-outage", "dns-outage", "storage-outage"}


@dataclass
class Step:
    """One journalled step."""

    name: str
    start: float
    end: float | None = None
    status: str = "running"  # ok | failed | deviated | skipped
    evidence: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Objective:
    """One objective, judged."""

    name: str
    target: float
    measured: float | None
    unit: str
    met: bool
    explanation: str


@dataclass
class Journal:
    """Everything a drill did and measured."""

    drill: str
    description: str
    topology: str
    lab: str
    seed: int
    started_at: float
    ended_at: float | None = None
    status: str = "running"  # met | missed | harness-error | interrupted
    exit_code: int = 2
    steps: list[Step] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    objectives: list[Objective] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    replication: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The journal without the raw request log (that goes to requests.jsonl)."""
        data = asdict(self)
        data.pop("requests")
        return data

    @contextlib.contextmanager
    def step(self, name: str, progress: Progress) -> Iterator[Step]:
        st = Step(name, time.time())
        self.steps.append(st)
        progress(f"[{st.start - self.started_at:7.1f}s] {name}")
        try:
            yield st
        except BaseException as exc:
            st.status = "failed"
            st.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            st.end = time.time()
            if st.status == "running":
                st.status = "ok"


class Clock:
    """Progress lines; in a terminal the outage clock updates in place, elsewhere every few s."""

    def __init__(self, progress: Progress, started_at: float) -> None:
        self.progress = progress
        self.started_at = started_at
        self.tty = sys.stderr.isatty() and not os.environ.get("CI")
        self.last = 0.0

    def tick(self, what: str) -> None:
        now = time.time()
        line = f"[{now - self.started_at:7.1f}s] {what}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(78))
            sys.stderr.flush()
        elif now - self.last >= 2.0:
            self.progress(line)
            self.last = now

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


class ReplicationSampler:
    """Samples every protected disk's replication RPO and state once a second, in a thread."""

    def __init__(self, ref: LabRef) -> None:
        self.ref = ref
        self.samples: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="replication-sampler", daemon=True)

    def __enter__(self) -> ReplicationSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        from harness.replication import control

        while not self.stop_event.is_set():
            try:
                st = control.status(self.ref.plan.lab, runtime=self.ref.rt)
                self.samples.append(
                    {
                        "t": time.time(),
                        "replicator": st.replicator,
                        "disks": {f"{d.host}/{d.disk}": [d.rpo_s, d.state] for d in st.disks},
                    }
                )
            except DrillError:
                pass  # the lab may be going down, or the site is out: a gap in the series
            self.stop_event.wait(1.0)

    def summary(self, fault_at: float) -> dict[str, Any]:
        """Max RPO and the states seen, before and after the fault."""
        rpos = [r for s in self.samples for r, _ in s["disks"].values() if r is not None]
        states = sorted({st for s in self.samples for _, st in s["disks"].values()})
        final = self.samples[-1]["disks"] if self.samples else {}
        return {
            "max_rpo_s": max(rpos) if rpos else None,
            "states_seen": states,
            "final": final,
            "samples": len(self.samples),
        }


def recovery_addresses(ref: LabRef) -> set[str]:
    """The public addresses of the profile's endpoints in the recovery site."""
    from harness import trafficmanager

    tm = ref.plan.topology.traffic_manager
    if tm is None:
        return set()
    rsite = ref.plan.topology.recovery_site
    return {
        trafficmanager.endpoint_address(ref.plan, ep.target, ep.site)
        for ep in tm.endpoints.values()
        if ep.site == rsite
    }


def held_items(
    address: str, path: str, auth: tuple[str, str] | None = None, timeout_s: float = 3.0
) -> dict[str, str]:
    """The items the app at ``address`` holds now: id -> the sha256 of its content."""
    r = requests.get(f"http://{address}{path}", auth=auth, timeout=timeout_s)
    r.raise_for_status()
    return {item["id"]: item.get("sha256", "") for item in r.json().get("items", [])}


def surviving_ids(
    address: str, path: str, auth: tuple[str, str] | None = None, timeout_s: float = 3.0
) -> list[str]:
    """The ids of the items the app at ``address`` holds now."""
    return list(held_items(address, path, auth, timeout_s))


def digest(lines: list[str]) -> str:
    """sha256 of the sorted lines: evidence a report can be checked against later."""
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def _serving_address(reqs: list[dict[str, Any]]) -> str | None:
    ok = [r for r in reqs if r["ok"] and r.get("address")]
    return ok[-1]["address"] if ok else None


# --- the run ---------------------------------------------------------------------------------


def run(
    drill_ref: str | Path,
    topology: str | Path | None = None,
    *,
    name: str = "drill",
    seed: int = 0,
    keep: bool = False,
    progress: Progress = lambda _: None,
) -> Journal:
    """Run a drill end to end; the journal says how it went. Bad input raises before anything."""
    d = drill_mod.load(drill_ref)
    topo_path = lab.resolve_topology(topology or d.topology)
    topo = topo_mod.load(topo_path)
    drill_mod.check_against(d, topo, str(drill_mod.resolve(drill_ref)))
    lab.check_lab_name(name)
    j = Journal(d.name, d.description, topo.name, name, seed, time.time())
    ref: LabRef | None = None
    users_run: users.UsersRun | None = None
    try:
        with j.step("setup", progress) as st:
            status = lab.up(topo, name, progress=progress)
            st.evidence = {"hosts": len(status.hosts), "space": status.space}
            # From here on the lab is ours to take down; a lab we did not make never is.
            ref = lab.open_lab(name)
        users_run = _execute(d, topo, ref, j, seed, progress)
    except KeyboardInterrupt:
        j.status, j.exit_code, j.error = "interrupted", 130, "interrupted by a signal"
    except DrillError as exc:
        j.status, j.exit_code, j.error = "harness-error", 2, str(exc)
    except Exception as exc:  # a bug or an unexpected failure is a harness failure, never "missed"
        j.status, j.exit_code = "harness-error", 2
        j.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
    finally:
        _rollback(j, ref, users_run, keep, progress)
    j.ended_at = time.time()
    if j.status == "running":
        missed = [o for o in j.objectives if not o.met]
        j.status, j.exit_code = ("missed", 1) if missed else ("met", 0)
    return j


def _execute(
    d: Drill, topo: Topology, ref: LabRef, j: Journal, seed: int, progress: Progress
) -> users.UsersRun:
    cfg = users.config_for(d.users, seed)
    run_id = f"{d.name}-{int(j.started_at)}"
    users_run = users.start(ref, cfg, run_id)
    sampler = ReplicationSampler(ref) if replicates(ref) else None
    with sampler or contextlib.nullcontext():
        fault_at, ids = _experiment(d, ref, j, users_run, progress)
    if sampler is not None:
        j.replication = sampler.samples
        j.measurements["replication"] = sampler.summary(fault_at)
    users.stop(ref, users_run)
    reqs = users.read(users_run)
    j.requests = reqs
    if fault_at:
        _measure(d, ref, j, reqs, fault_at, ids)

    if d.failback and fault_at:
        with j.step("failback", progress) as st:
            # The site is repaired first, as it would be before anyone fails back to it.
            if faults.active(ref.plan.lab):
                faults.heal(ref.plan.lab)
            st.evidence = failover.failback_all(ref.plan.lab, progress=progress)
    return users_run


INITIAL_REPLICATION_TIMEOUT_S = 300.0


def wait_protected(ref: LabRef, timeout_s: float) -> dict[str, Any]:
    """Wait until every protected disk has a recovery point (Protected); what it took."""
    from harness.replication import control

    t0 = time.monotonic()
    while True:
        st = control.status(ref.plan.lab, runtime=ref.rt)
        waiting = [f"{d.host}/{d.disk}" for d in st.disks if d.latest_point is None]
        if not waiting:
            return {"seconds": round(time.monotonic() - t0, 3), "disks": len(st.disks)}
        if time.monotonic() - t0 > timeout_s:
            raise HarnessError(
                f"initial replication of {', '.join(waiting)} did not finish in {timeout_s:.0f}s"
            )
        time.sleep(0.5)


def _login(ref: LabRef) -> tuple[str, str] | None:
    """The synthetic user's login where the apps require one."""
    if ref.plan.topology.identity is None:
        return None
    from harness import identity

    logins = identity.synthetic_users(ref.plan.lab)
    return logins[0].basic if logins else None


def replicates(ref: LabRef) -> bool:
    """Whether the lab runs a replicator."""
    p = ref.plan.topology.protection
    return p is not None and p.process_server is not None


def _experiment(
    d: Drill, ref: LabRef, j: Journal, users_run: users.UsersRun, progress: Progress
) -> tuple[float, list[str]]:
    """Steady state, faults and recovery, verification: (event time or 0, ids held after)."""

    if replicates(ref):
        with j.step("initial replication", progress) as st:
            st.evidence = wait_protected(ref, INITIAL_REPLICATION_TIMEOUT_S)
    with j.step("steady-state", progress) as st:
        users.wait_for_requests(users_run, 1)
        t0 = time.time()
        time.sleep(d.steady_state.duration)
        reqs = users.read(users_run)
        rate = measure.error_rate(reqs, t0, time.time())
        st.evidence = {
            "error_rate": rate,
            "requests": len(reqs),
            "bound": d.steady_state.max_error_rate,
        }
        if rate > d.steady_state.max_error_rate:
            st.status = "deviated"
            j.objectives.append(
                Objective(
                    "steady_state",
                    d.steady_state.max_error_rate,
                    rate,
                    "ratio",
                    False,
                    f"users failed {rate:.1%} of requests before any fault "
                    f"(bound {d.steady_state.max_error_rate:.1%}): the drill did not start",
                )
            )
            return 0.0, []

    fault_at = _fault_and_recover(d, ref, j, users_run, progress)

    with j.step("verification", progress) as st:
        time.sleep(d.verification.duration)
        reqs = users.read(users_run)
        serving = _serving_address(reqs)
        st.evidence = {"serving_address": serving}
        if serving is None:
            raise HarnessError("no user request succeeded during verification")
        ids: list[str] = []
        acked = measure.acknowledged(reqs)
        if acked:  # read the data back only where users wrote some
            held = held_items(serving, d.users.path, _login(ref))
            ids = list(held)
            hashes = {
                "held_items": len(held),
                "held_sha256": digest([f"{i}:{h}" for i, h in held.items()]),
            }
            st.evidence.update(hashes)
            j.measurements["data_hashes"] = hashes
    return fault_at, ids


def _fault_and_recover(
    d: Drill, ref: LabRef, j: Journal, users_run: users.UsersRun, progress: Progress
) -> float:
    """Inject the faults on schedule, run the recovery action, wait for recovery if an RTO
    objective is set; returns the first fault's start time."""
    recovery = recovery_addresses(ref)
    events: list[tuple[float, str, Any]] = []
    for i, f in enumerate(d.faults):
        events.append((f.at, "fault", i))
        if f.heal_after is not None:
            events.append((f.at + f.heal_after, "heal", i))
    first_at = d.faults[0].at if d.faults else 0.0
    if d.recovery.action != "none":
        events.append((first_at + d.recovery.after, "recover", None))
    events.sort(key=lambda e: e[0])
    clock = Clock(progress, j.started_at)
    injected: dict[int, str] = {}
    base = time.time()
    fault_at = base + first_at
    waiting_rto = d.objectives.rto is not None
    deadline = fault_at + d.recovery.after + d.recovery.timeout
    with j.step("fault", progress) as st:
        while events or waiting_rto:
            now = time.time()
            if events and now - base >= events[0][0]:
                _, what, arg = events.pop(0)
                if what == "fault":
                    f = d.faults[arg]
                    rec = faults.inject(ref.plan.lab, f.kind, **f.params)
                    injected[arg] = rec.id
                    if arg == 0:
                        fault_at = rec.started_at
                    progress(f"[{now - j.started_at:7.1f}s] fault {rec.id} injected")
                elif what == "heal":
                    faults.heal(ref.plan.lab, injected[arg])
                    progress(f"[{now - j.started_at:7.1f}s] fault {injected[arg]} healed")
                else:
                    if not d.faults:  # a planned migration or test: its start is the event
                        fault_at = time.time()
                    _recover(d, ref, j, progress)
                continue
            if waiting_rto and now >= fault_at:
                r = measure.rto(users.read(users_run), fault_at, recovery)
                if r.rto_s is not None:
                    waiting_rto = False
                    progress(f"[{now - j.started_at:7.1f}s] recovered: RTO {r.rto_s:.1f}s")
                    continue
                if now > deadline:
                    progress(f"[{now - j.started_at:7.1f}s] no recovery within the timeout")
                    waiting_rto = False
                    continue
                clock.tick(f"outage {now - fault_at:5.1f}s (RTO clock)")
            time.sleep(0.1)
        clock.done()
        st.evidence = {"faults": list(injected.values()), "fault_at": fault_at}
    return fault_at


def _recover(d: Drill, ref: LabRef, j: Journal, progress: Progress) -> None:
    with j.step(f"recovery: {d.recovery.action}", progress) as st:
        st.evidence = failover.run_recovery(
            ref.plan.lab,
            d.recovery.action,
            point=d.recovery.point,
            plan=d.recovery.plan,
            progress=progress,
        )


def _measure(
    d: Drill, ref: LabRef, j: Journal, reqs: list[dict[str, Any]], fault_at: float, ids: list[str]
) -> None:
    recovery = recovery_addresses(ref)
    run_start = reqs[0]["start"] if reqs else j.started_at
    end = reqs[-1]["end"] if reqs else time.time()
    r = measure.rto(reqs, fault_at, recovery)
    p = measure.rpo(reqs, fault_at, ids, run_start)
    rate = measure.error_rate(reqs, run_start, end + 1)
    j.measurements.update(
        {
            "fault_at": fault_at,
            "rto_s": r.rto_s,
            "rpo_s": p.rpo_s,
            "acknowledged_writes_lost": p.acknowledged_writes_lost,
            "acknowledged_before_fault": p.acknowledged_before_fault,
            "failed_requests_during_outage": r.failed_requests,
            "error_rate": rate,
            "requests": len(reqs),
            "lost_ids": p.lost_ids[:50],
            "recovery_addresses": sorted(recovery),
        }
    )
    j.measurements.update(_cross_check(j, reqs, fault_at, ids))
    if (
        "data_hashes" in j.measurements
    ):  # the writes the RPO is judged on: acknowledged by the fault
        acked_ids = [r["id"] for r in measure.acknowledged(reqs, until=fault_at)]
        j.measurements["data_hashes"]["acknowledged_ids_sha256"] = digest(acked_ids)
    j.timeline = measure.success_series(reqs, run_start, end + 1, step=1.0)
    j.faults = [rec.public() for rec in faults.history(ref.plan.lab)]
    o = d.objectives
    if o.rto is not None:
        met = r.rto_s is not None and r.rto_s <= o.rto
        why = (
            "the recovery site never served a user"
            if r.rto_s is None
            else f"users were served by the recovery site {r.rto_s:.1f}s after the fault"
        )
        j.objectives.append(Objective("rto", o.rto, r.rto_s, "s", met, why))
    if o.rpo is not None:
        met = p.rpo_s is not None and p.rpo_s <= o.rpo
        why = (
            "no write was acknowledged before the fault"
            if p.rpo_s is None
            else f"the newest surviving acknowledged write was {p.rpo_s:.1f}s old at the fault"
        )
        j.objectives.append(Objective("rpo", o.rpo, p.rpo_s, "s", met, why))
    if o.acknowledged_writes_lost is not None:
        met = p.acknowledged_writes_lost <= o.acknowledged_writes_lost
        j.objectives.append(
            Objective(
                "acknowledged_writes_lost",
                o.acknowledged_writes_lost,
                p.acknowledged_writes_lost,
                "writes",
                met,
                f"{p.acknowledged_writes_lost} of {p.acknowledged_before_fault} "
                "acknowledged writes are missing after recovery",
            )
        )
    if o.error_budget is not None:
        met = rate <= o.error_budget
        j.objectives.append(
            Objective(
                "error_budget",
                o.error_budget,
                rate,
                "ratio",
                met,
                f"{rate:.1%} of {len(reqs)} user requests failed over the whole drill",
            )
        )


POINT_MARGIN_S = 0.05
"""Writes acknowledged this close to a point's instant may fall either side of it."""


def _cross_check(
    j: Journal, reqs: list[dict[str, Any]], fault_at: float, ids: list[str]
) -> dict[str, Any]:
    """The data-plane RPO against the recovery point the failover used.

    Every write acknowledged before the point's instant must have survived, and every lost one
    must have been acknowledged after it; the point's age at the fault is the RPO Site Recovery
    would report.
    """
    serving = ("recovery: failover", "recovery: recovery-plan", "recovery: planned-failover")
    points = next((s.evidence.get("points") for s in j.steps if s.name in serving), None)
    if not points:
        return {}
    taken = min(float(p["taken_at"]) for p in points.values())
    alive = set(ids)
    acked = measure.acknowledged(reqs, until=fault_at)
    early_lost = [
        r["id"] for r in acked if r["end"] < taken - POINT_MARGIN_S and r["id"] not in alive
    ]
    late_kept = [r["id"] for r in acked if r["start"] > taken + POINT_MARGIN_S and r["id"] in alive]
    return {
        "recovery_point_taken_at": taken,
        # A planned failover's point is taken after the event: nothing to lose, so 0.
        "rpo_from_point_s": round(max(0.0, fault_at - taken), 3),
        "point_consistent": not early_lost and not late_kept,
        "lost_before_point": early_lost[:20],
        "kept_after_point": late_kept[:20],
    }


def _rollback(
    j: Journal,
    ref: LabRef | None,
    users_run: users.UsersRun | None,
    keep: bool,
    progress: Progress,
) -> None:
    """Always: stop users, heal faults, take the lab down unless kept. Bounded by each call."""
    st = Step("rollback", time.time())
    j.steps.append(st)
    errors = []
    if ref is not None:
        if users_run is not None:
            try:
                users.stop(ref, users_run)
            except DrillError as exc:
                errors.append(f"stopping users: {exc}")
        try:
            if faults.active(ref.plan.lab) and keep:
                st.evidence["healed"] = [r.id for r in faults.heal(ref.plan.lab)]
            elif faults.active(ref.plan.lab):  # the teardown ends them
                st.evidence["ended"] = [r.id for r in faults.end_all(ref.plan.lab)]
        except DrillError as exc:
            errors.append(f"healing: {exc}")
        if not j.faults:
            j.faults = [rec.public() for rec in faults.history(ref.plan.lab)]
    if not keep and ref is not None:
        try:
            st.evidence["removed"] = lab.down(j.lab, progress=progress)
        except DrillError as exc:
            errors.append(f"teardown: {exc}")
    st.end = time.time()
    st.status = "failed" if errors else "ok"
    st.error = "; ".join(errors) or None
    if errors and j.status == "running":
        j.status, j.exit_code, j.error = "harness-error", 2, st.error
