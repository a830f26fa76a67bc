"""Drill files: a disaster to rehearse, as strict, frozen, typed data (``drills/*.yaml``).

A drill is an experiment in the Chaos Toolkit sense:

    steady_state   users work normally for a while; the error rate must stay under a bound
    faults         a timed list of faults (``at`` is relative to the end of the steady state);
                   none for a planned migration or a test failover, whose start is the event
    recovery       what the operators do: nothing, or a failover of some type, ``after`` the
                   first fault
    verification   users keep working on the recovered service for a while
    failback       optionally, go home again (planned failover back, then reprotect)
    objectives     RTO, RPO, error budget and acknowledged writes lost, each with its unit

Durations are written with a unit (``500ms``, ``5s``, ``2m``), ratios as percentages (``1%``):
a number without a unit is an error, so ``rto: 60`` never silently means 60 minutes. Drill
files are validated like topologies, every problem reported by its path, before anything starts;
``check_against`` verifies that a topology has what the drill needs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from harness.errors import Problem, TopologyError
from harness.faults import FaultKind
from harness.topology import StrictLoader, Topology, schema_problems

DRILL_DIR = Path(__file__).resolve().parent.parent / "drills"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_duration(value: object) -> float:
    """'5s' / '500ms' / '2m' / '1h' -> seconds; a bare number is refused (no unit)."""
    if isinstance(value, str) and (m := _DURATION_RE.match(value)):
        return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration with a unit, like '500ms', '5s', '2m' or '1h'")


def parse_percent(value: object) -> float:
    """'1%' -> 0.01; a bare number is refused (no unit)."""
    if isinstance(value, str) and (m := _PERCENT_RE.match(value)):
        pct = float(m.group(1))
        if pct > 100:
            raise ValueError(f"{value!r} is over 100%")
        return pct / 100.0
    raise ValueError(f"{value!r} is not a percentage with its unit, like '1%'")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Percent = Annotated[float, BeforeValidator(parse_percent)]

RecoveryAction = Literal["none", "failover", "planned-failover", "test-failover", "recovery-plan"]


class Model(BaseModel):
    """Base of every drill model: frozen, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Users(Model):
    """The synthetic users' load."""

    rate: float = Field(default=10.0, gt=0, le=500, description="requests per second")
    write_ratio: Percent = Field(default=0.5, description="share of writes, e.g. '50%'")
    path: str = "/documents"
    timeout: Duration = Field(default=1.0, description="per request, e.g. '1s'")


class SteadyState(Model):
    """Before the fault: users must work normally."""

    duration: Duration = 5.0
    max_error_rate: Percent = 0.01


class FaultStep(Model):
    """One fault, injected ``at`` after the steady state, healed ``heal_after`` later if set."""

    at: Duration = 0.0
    kind: FaultKind
    params: dict[str, Any] = {}
    heal_after: Duration | None = None


class Recovery(Model):
    """What the operators do about the disaster."""

    action: RecoveryAction = "none"
    after: Duration = Field(default=0.0, description="delay after the first fault")
    point: str = "latest"
    plan: str | None = None
    timeout: Duration = Field(default=120.0, description="give up waiting for recovery")


class Verification(Model):
    """After recovery: users keep working for a while."""

    duration: Duration = 5.0


class Objectives(Model):
    """What the drill must show; an unset objective is reported but not judged."""

    rto: Duration | None = None
    rpo: Duration | None = None
    error_budget: Percent | None = None
    acknowledged_writes_lost: int | None = Field(default=None, ge=0)


class Drill(Model):
    """A whole drill."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")
    description: str = ""
    topology: str = "enterprise"
    users: Users = Users()
    steady_state: SteadyState = SteadyState()
    faults: tuple[FaultStep, ...] = ()
    recovery: Recovery = Recovery()
    verification: Verification = Verification()
    failback: bool = False
    objectives: Objectives = Objectives()


def resolve(ref: str | Path) -> Path:
    """A drill file from a path, or a bare name looked up in ``drills/``."""
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or p.exists() or "/" in str(ref):
        return p
    return DRILL_DIR / f"{ref}.yaml"


def parse(data: object, source: str = "<drill>") -> Drill:
    """Validate parsed data into a Drill, or raise TopologyError with every problem."""
    if not isinstance(data, dict):
        raise TopologyError(source, [Problem("", "a drill is a mapping of keys")])
    try:
        drill = Drill.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(source, schema_problems(exc)) from None
    problems = []
    ats = [f.at for f in drill.faults]
    if ats != sorted(ats):
        problems.append(Problem("faults", "faults must be listed in time order (at)"))
    if not drill.faults and drill.recovery.action not in ("planned-failover", "test-failover"):
        problems.append(
            Problem("faults", "a drill needs a fault, unless its recovery is planned or a test")
        )
    if problems:
        raise TopologyError(source, problems)
    return drill


def load(ref: str | Path) -> Drill:
    """Load and validate a drill file; nothing is created."""
    p = resolve(ref)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(sorted(f.stem for f in DRILL_DIR.glob("*.yaml")))
        raise TopologyError(str(p), [Problem("", f"file not found (built-in: {known})")]) from None
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        raise TopologyError(str(p), [Problem("", f"malformed YAML: {exc}")]) from None
    return parse(data, str(p))


def check_against(drill: Drill, topo: Topology, source: str) -> None:
    """TopologyError if the topology lacks what the drill needs; nothing is created."""
    problems = []
    tm = topo.traffic_manager
    if tm is None:
        problems.append(Problem("users", "synthetic users need a traffic_manager profile"))
    if not any(h.role == "client" for _, _, h in topo.hosts()):
        problems.append(Problem("users", "synthetic users need a client host on the internet"))
    needs_protection = drill.recovery.action not in ("none",) or drill.failback
    if needs_protection and topo.protection is None:
        problems.append(
            Problem("recovery.action", f"{drill.recovery.action} needs a protection section")
        )
    if drill.recovery.action == "recovery-plan":
        if drill.recovery.plan is None:
            problems.append(Problem("recovery.plan", "recovery-plan needs a plan name"))
        elif drill.recovery.plan not in topo.recovery_plans:
            problems.append(Problem("recovery.plan", f"unknown plan {drill.recovery.plan!r}"))
    hosts = {n for _, n, _ in topo.hosts()}
    for i, f in enumerate(drill.faults):
        if f.kind == "host-outage" and f.params.get("host") not in hosts:
            problems.append(
                Problem(f"faults[{i}].params.host", f"unknown host {f.params.get('host')!r}")
            )
        if f.kind == "storage-outage" and not any(h.role == "storage" for _, _, h in topo.hosts()):
            problems.append(Problem(f"faults[{i}].kind", "the topology has no storage host"))
    if problems:
        raise TopologyError(f"{source} against topology {topo.name!r}", problems)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of drill files."""
    schema = Drill.model_json_schema()
    schema["title"] = "drill file"
    return schema
