"""Training scenarios: a disaster injected into a learner's running sandbox, then graded.

A scenario (``scenarios/*.yaml``) is a drill with the operators taken out: ``start`` injects its
faults into a running lab and starts synthetic users, and the learner recovers with the normal
commands (``drill failover``, ``drill commit``, ...). ``grade`` then scores what they did against
the scenario's objectives, one explained line per objective:

    rto                          the recovery site served a user within this long after the fault
    rpo                          the newest surviving acknowledged write was at most this old at
                                 the fault
    acknowledged_writes_lost     at most this many writes acknowledged before the event are gone
    failed_back_and_reprotected  a failback and a reprotect after it succeeded, and the lab is
                                 ``protected`` again
    test_failovers_cleaned_up    at least one test failover was run, and none is left over

RTO and RPO are measured from the users' own request log exactly as drills measure them
(``harness.measure``). The *event* is the moment the faults were injected; a scenario without
faults (a DR test) has its event at the moment of grading, so "no acknowledged write lost" means
none acknowledged so far.

State: ``<lab state>/scenario.json`` (which scenario, when it started, the fault ids, the users'
run), so grading, status and the dashboard work from any later process. Every fault is injected
at the start: there is no background process to time faults (``at`` must be 0, no
``heal_after``); timed faults are what drills are for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from harness import state
from harness.drill import Duration, FaultStep, Model, Users
from harness.errors import DrillError, HarnessError, Problem, TopologyError, UsageError
from harness.failover import Job
from harness.topology import StrictLoader, Topology, schema_problems

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
Progress = Callable[[str], None]
Request = dict[str, Any]


def _quiet(_: str) -> None:
    pass


# --- the model -------------------------------------------------------------------------------


class ScenarioObjectives(Model):
    """What the learner must achieve; an unset objective is not graded."""

    rto: Duration | None = None
    rpo: Duration | None = None
    acknowledged_writes_lost: int | None = Field(default=None, ge=0)
    failed_back_and_reprotected: bool = False
    test_failovers_cleaned_up: bool = False


class Scenario(Model):
    """A whole scenario."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")
    description: str = ""
    topology: str = "minimal"
    users: Users = Users()
    warmup: Duration = Field(
        default=5.0, description="users work this long before the faults, so writes exist"
    )
    faults: tuple[FaultStep, ...] = ()
    objectives: ScenarioObjectives = ScenarioObjectives()


def resolve(ref: str | Path) -> Path:
    """A scenario file from a path, or a bare name looked up in ``scenarios/``."""
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or "/" in str(ref):
        return p
    return SCENARIO_DIR / f"{ref}.yaml"


def builtin() -> list[str]:
    """The names of the built-in scenarios."""
    return sorted(f.stem for f in SCENARIO_DIR.glob("*.yaml"))


def parse(data: object, source: str = "<scenario>") -> Scenario:
    """Validate parsed data into a Scenario, or raise TopologyError with every problem."""
    if not isinstance(data, dict):
        raise TopologyError(source, [Problem("", "a scenario is a mapping of keys")])
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(source, schema_problems(exc)) from None
    problems = []
    for i, f in enumerate(sc.faults):
        # Nothing runs in the background after `scenario start` returns to time them.
        if f.at != 0:
            problems.append(Problem(f"faults[{i}].at", "scenario faults start at once (0s)"))
        if f.heal_after is not None:
            problems.append(
                Problem(f"faults[{i}].heal_after", "healing is the learner's job in a scenario")
            )
    o = sc.objectives
    if not (
        o.rto is not None
        or o.rpo is not None
        or o.acknowledged_writes_lost is not None
        or o.failed_back_and_reprotected
        or o.test_failovers_cleaned_up
    ):
        problems.append(Problem("objectives", "a scenario needs at least one objective"))
    if (o.rto is not None or o.rpo is not None) and not sc.faults:
        problems.append(Problem("objectives", "rto and rpo are measured from a fault: add one"))
    if problems:
        raise TopologyError(source, problems)
    return sc


def load(ref: str | Path) -> Scenario:
    """Load and validate a scenario file; TopologyError (exit 2) if unknown or invalid."""
    p = resolve(ref)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError(
            str(p), [Problem("", f"unknown scenario (built-in: {', '.join(builtin())})")]
        ) from None
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        raise TopologyError(str(p), [Problem("", f"malformed YAML: {exc}")]) from None
    return parse(data, str(p))


def check_against(sc: Scenario, topo: Topology) -> None:
    """UsageError if a lab of ``topo`` lacks what the scenario needs; nothing is touched."""
    problems = []
    if topo.traffic_manager is None:
        problems.append("synthetic users need a traffic_manager profile")
    if not any(h.role == "client" for _, _, h in topo.hosts()):
        problems.append("synthetic users need a client host")
    o = sc.objectives
    needs_protection = o.rto is not None or o.failed_back_and_reprotected
    if (needs_protection or o.test_failovers_cleaned_up) and topo.protection is None:
        problems.append("its objectives need failover, and the topology protects nothing")
    hosts = {n for _, n, _ in topo.hosts()}
    for i, f in enumerate(sc.faults):
        if f.kind == "host-outage" and f.params.get("host") not in hosts:
            problems.append(f"faults[{i}]: unknown host {f.params.get('host')!r}")
    if problems:
        raise UsageError(
            f"scenario {sc.name!r} cannot run on topology {topo.name!r}: " + "; ".join(problems)
        )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files."""
    schema = Scenario.model_json_schema()
    schema["title"] = "scenario file"
    return schema


# --- the record ------------------------------------------------------------------------------


@dataclass
class ScenarioRecord:
    """A scenario started in a lab (``<lab state>/scenario.json``)."""

    scenario: str
    source: str
    lab: str
    started_at: float  # `scenario start` was called
    event_at: float | None  # the faults were injected: the scenario clock's zero
    faults: list[str]
    users: dict[str, str]  # harness.users.UsersRun fields
    ended_at: float | None = None
    healed: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.ended_at is None


def _record_file(lab: str) -> Path:
    return state.lab_dir(lab) / "scenario.json"


def read_record(lab: str) -> ScenarioRecord | None:
    """The lab's current (or last) scenario, or None if none was started."""
    try:
        return ScenarioRecord(**json.loads(_record_file(lab).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _save(rec: ScenarioRecord) -> None:
    state.write_json_atomic(_record_file(rec.lab), asdict(rec))


def _require(lab: str) -> ScenarioRecord:
    rec = read_record(lab)
    if rec is None:
        raise UsageError(
            f"no scenario was started in lab {lab!r}; start one with "
            f"`drill scenario start NAME --name {lab}` (built-in: {', '.join(builtin())})"
        )
    return rec


def _users_run(rec: ScenarioRecord) -> Any:
    from harness import users

    u = rec.users
    return users.UsersRun(u["host"], u["container"], u["run_id"], Path(u["log_file"]))


# --- start, status, stop ---------------------------------------------------------------------


def start(
    lab_name: str, ref: str | Path, *, seed: int = 0, progress: Progress = _quiet
) -> ScenarioRecord:
    """Inject a scenario's faults into a running lab, with synthetic users working; no recovery.

    Bad input (unknown scenario, no such lab, one already running, a topology lacking what the
    scenario needs) raises before anything is touched.
    """
    from harness import faults, lab, runner, users

    sc = load(ref)
    lref = lab.open_lab(lab_name)
    old = read_record(lab_name)
    if old is not None and old.running:
        raise UsageError(
            f"scenario {old.scenario!r} is already running in lab {lab_name!r}; "
            f"end it with `drill scenario stop --name {lab_name}`"
        )
    check_against(sc, lref.plan.topology)
    started = time.time()
    if runner.replicates(lref):
        # Failing over needs a recovery point: the disaster strikes a protected lab.
        progress("scenario: waiting for initial replication")
        runner.wait_protected(lref, runner.INITIAL_REPLICATION_TIMEOUT_S)
    cfg = users.config_for(sc.users, seed)
    run = users.start(lref, cfg, f"scenario-{sc.name}-{int(started)}")
    injected: list[str] = []
    try:
        users.wait_for_requests(run, 1)
        progress(f"scenario: users working; faults in {sc.warmup:.0f}s")
        time.sleep(sc.warmup)
        event_at = time.time() if sc.faults else None
        for f in sc.faults:
            injected.append(faults.inject(lab_name, f.kind, **f.params).id)
    except BaseException:
        # Leave the sandbox as it was: users stopped, our faults undone.
        users.stop(lref, run)
        for fid in reversed(injected):
            try:
                faults.heal(lab_name, fid)
            except DrillError as exc:
                progress(f"scenario: could not heal {fid}: {exc}")
        raise
    rec = ScenarioRecord(
        scenario=sc.name,
        source=str(resolve(ref)),
        lab=lab_name,
        started_at=started,
        event_at=event_at,
        faults=injected,
        users={k: str(v) for k, v in asdict(run).items()},
    )
    _save(rec)
    progress(f"scenario {sc.name!r} started: faults {', '.join(injected) or 'none'}")
    return rec


def status(lab_name: str) -> dict[str, Any]:
    """The scenario's clock, faults and users' recent success, for ``drill scenario status``."""
    from harness import faults, users

    rec = _require(lab_name)
    reqs = users.read(_users_run(rec))
    now = rec.ended_at or time.time()
    recent = [r for r in reqs if r["start"] >= now - 5]
    return {
        "scenario": rec.scenario,
        "lab": lab_name,
        "running": rec.running,
        "started_at": rec.started_at,
        "event_at": rec.event_at,
        "clock_s": round(now - (rec.event_at or rec.started_at), 1),
        "faults": rec.faults,
        "active_faults": [f.id for f in faults.active(lab_name)],
        "requests": len(reqs),
        "recent_success": (
            round(sum(r["ok"] for r in recent) / len(recent), 3) if recent else None
        ),
    }


def stop(lab_name: str, *, heal: bool = False) -> ScenarioRecord:
    """End the scenario: users stopped; with ``heal``, every active fault healed."""
    from harness import faults, lab, users

    rec = _require(lab_name)
    if not rec.running:
        raise UsageError(f"scenario {rec.scenario!r} in lab {lab_name!r} has ended already")
    lref = lab.open_lab(lab_name)
    users.stop(lref, _users_run(rec))
    rec.ended_at = time.time()
    if heal and faults.active(lab_name):
        rec.healed = [f.id for f in faults.heal(lab_name)]
    _save(rec)
    return rec


# --- grading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectiveResult:
    """One objective, judged, with the reason in one line."""

    name: str
    target: float | bool
    measured: float | bool | None
    met: bool
    explanation: str


@dataclass
class Grade:
    """A learner's result."""

    scenario: str
    lab: str
    event_at: float
    graded_at: float
    objectives: list[ObjectiveResult]
    measurements: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return all(o.met for o in self.objectives)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["met"] = self.met
        return data


def judge(
    objectives: ScenarioObjectives,
    reqs: Sequence[Request],
    *,
    started_at: float,
    event_at: float,
    recovery_addresses: set[str],
    surviving: list[str] | None,
    surviving_error: str | None,
    failover_state: dict[str, Any],
    jobs: Sequence[Job],
) -> tuple[list[ObjectiveResult], dict[str, Any]]:
    """Judge each set objective from the evidence; pure, so it is tested on hand-made logs."""
    from harness import measure

    out: list[ObjectiveResult] = []
    m: dict[str, Any] = {"requests": len(reqs)}
    o = objectives
    if o.rto is not None:
        r = measure.rto(reqs, event_at, recovery_addresses)
        m["rto_s"] = r.rto_s
        met = r.rto_s is not None and r.rto_s <= o.rto
        why = (
            "the recovery site has not served a user since the fault: fail over (`drill failover`)"
            if r.rto_s is None
            else f"users were served by the recovery site {r.rto_s:.1f}s after the fault "
            f"(target {o.rto:g}s)"
        )
        out.append(ObjectiveResult("rto", o.rto, r.rto_s, met, why))
    if o.rpo is not None or o.acknowledged_writes_lost is not None:
        out += _data_objectives(o, reqs, started_at, event_at, surviving, surviving_error, m)
    mine = [j for j in jobs if j.started_at >= started_at]
    if o.failed_back_and_reprotected:
        out.append(_failed_back(mine, failover_state))
    if o.test_failovers_cleaned_up:
        out.append(_tests_cleaned(mine, failover_state))
    return out, m


def _data_objectives(
    o: ScenarioObjectives,
    reqs: Sequence[Request],
    started_at: float,
    event_at: float,
    surviving: list[str] | None,
    surviving_error: str | None,
    m: dict[str, Any],
) -> list[ObjectiveResult]:
    from harness import measure

    out = []
    if surviving is None:
        why = f"the data could not be read back: {surviving_error or 'no app serves users'}"
        if o.rpo is not None:
            out.append(ObjectiveResult("rpo", o.rpo, None, False, why))
        if o.acknowledged_writes_lost is not None:
            out.append(
                ObjectiveResult(
                    "acknowledged_writes_lost", o.acknowledged_writes_lost, None, False, why
                )
            )
        return out
    run_start = reqs[0]["start"] if reqs else started_at
    p = measure.rpo(reqs, event_at, surviving, run_start)
    m.update(
        rpo_s=p.rpo_s,
        acknowledged_before_event=p.acknowledged_before_fault,
        acknowledged_writes_lost=p.acknowledged_writes_lost,
        lost_ids=p.lost_ids[:20],
    )
    if o.rpo is not None:
        met = p.rpo_s is not None and p.rpo_s <= o.rpo
        why = (
            "no write was acknowledged before the fault"
            if p.rpo_s is None
            else f"the newest surviving acknowledged write was {p.rpo_s:.1f}s old at the fault "
            f"(target {o.rpo:g}s)"
        )
        out.append(ObjectiveResult("rpo", o.rpo, p.rpo_s, met, why))
    if o.acknowledged_writes_lost is not None:
        lost = p.acknowledged_writes_lost
        out.append(
            ObjectiveResult(
                "acknowledged_writes_lost",
                o.acknowledged_writes_lost,
                lost,
                lost <= o.acknowledged_writes_lost,
                f"{lost} of {p.acknowledged_before_fault} acknowledged writes are missing from "
                f"the app serving users (at most {o.acknowledged_writes_lost} allowed)",
            )
        )
    return out


def _ok(jobs: Sequence[Job], kind: str) -> list[Job]:
    return [j for j in jobs if j.kind == kind and j.status == "succeeded"]


def _failed_back(jobs: Sequence[Job], fo: dict[str, Any]) -> ObjectiveResult:
    name = "failed_back_and_reprotected"
    backs = _ok(jobs, "failback")
    if not backs:
        why = f"no failback succeeded since the scenario started (lab is {fo['state']})"
        return ObjectiveResult(name, True, False, False, why)
    back = backs[-1]
    after = [j for j in _ok(jobs, "reprotect") if j.started_at >= (back.ended_at or 0)]
    if not after:
        why = f"failed back ({back.id}) but not reprotected afterwards: run `drill reprotect`"
        return ObjectiveResult(name, True, False, False, why)
    if fo["state"] != "protected":
        why = f"failed back and reprotected, but the lab is now {fo['state']}, not protected"
        return ObjectiveResult(name, True, False, False, why)
    why = f"failed back ({back.id}) and reprotected ({after[-1].id}); the lab is protected"
    return ObjectiveResult(name, True, True, True, why)


def _tests_cleaned(jobs: Sequence[Job], fo: dict[str, Any]) -> ObjectiveResult:
    name = "test_failovers_cleaned_up"
    tests = _ok(jobs, "test-failover")
    if fo.get("test"):
        left = fo["test"].get("job", "?")
        why = f"the test failover of {left} is still up: `drill failover --cleanup-test`"
        return ObjectiveResult(name, True, False, False, why)
    if not tests:
        why = "no test failover was run since the scenario started: `drill failover --test`"
        return ObjectiveResult(name, True, False, False, why)
    ids = ", ".join(j.id for j in tests)
    why = f"{len(tests)} test failover(s) run ({ids}) and none is left"
    return ObjectiveResult(name, True, True, True, why)


def grade(lab_name: str) -> Grade:
    """Score the learner against the running (or ended) scenario; UsageError if none started."""
    from harness import failover, lab, measure, runner, users

    rec = _require(lab_name)
    sc = load(rec.source)
    lref = lab.open_lab(lab_name)
    cut = rec.ended_at or time.time()
    reqs = [r for r in users.read(_users_run(rec)) if r["start"] <= cut]
    event_at = rec.event_at if rec.event_at is not None else cut
    surviving: list[str] | None = None
    error: str | None = None
    o = sc.objectives
    if o.rpo is not None or o.acknowledged_writes_lost is not None:
        ok = [r for r in reqs if r["ok"] and r.get("address")]
        if not ok:
            error = "no user request has succeeded"
        elif not measure.acknowledged(reqs, until=event_at):
            surviving = []
        else:
            # Read back from where users are served now: after failback, that is on-prem again.
            try:
                surviving = runner.surviving_ids(
                    ok[-1]["address"], sc.users.path, runner._login(lref)
                )
            except Exception as exc:  # any failure to read back is the learner's miss, explained
                error = f"{type(exc).__name__}: {exc}"
    try:
        fo_state = failover.read_state(lab_name)
        fo_jobs = failover.jobs(lab_name)
    except (OSError, ValueError) as exc:
        raise HarnessError(f"reading the failover jobs of lab {lab_name!r}: {exc}") from exc
    results, m = judge(
        o,
        reqs,
        started_at=rec.started_at,
        event_at=event_at,
        recovery_addresses=runner.recovery_addresses(lref),
        surviving=surviving,
        surviving_error=error,
        failover_state=fo_state,
        jobs=fo_jobs,
    )
    return Grade(sc.name, lab_name, event_at, time.time(), results, m)
