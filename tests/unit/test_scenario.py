"""Scenario files and grading (harness.scenario), and the dashboard's guards; no engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import dashboard, scenario
from harness.errors import TopologyError, UsageError
from harness.failover import Job
from harness.scenario import ScenarioObjectives

PRIMARY, RECOVERY = "10.64.100.10", "10.64.100.20"


def req(
    start: float, ok: bool, op: str = "read", addr: str = PRIMARY, id: str | None = None
) -> dict[str, Any]:
    return {"start": start, "end": start + 0.1, "ok": ok, "op": op, "address": addr, "id": id}


def job(id: str, kind: str, start: float, status: str = "succeeded") -> Job:
    return Job(id, kind, "lab", start, start + 1.0, status)


# --- the model -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["site-down", "dr-test"])
def test_builtin_scenarios_load(name: str) -> None:
    sc = scenario.load(name)
    assert sc.name == name
    assert name in scenario.builtin()


def test_site_down_expects_failover_and_failback() -> None:
    sc = scenario.load("site-down")
    assert [f.kind for f in sc.faults] == ["site-outage"]
    assert sc.objectives.rto == 120.0 and sc.objectives.failed_back_and_reprotected


def test_unknown_scenario_names_the_builtins() -> None:
    with pytest.raises(TopologyError) as exc:
        scenario.load("no-such-scenario")
    assert "site-down" in str(exc.value) and "dr-test" in str(exc.value)


def _problems(data: dict[str, Any]) -> str:
    with pytest.raises(TopologyError) as exc:
        scenario.parse(data, "x.yaml")
    return str(exc.value)


def test_unknown_keys_are_refused() -> None:
    out = _problems({"name": "x", "objectives": {"rto": "5s", "speed": 1}})
    assert "objectives.speed" in out


def test_durations_need_units() -> None:
    out = _problems({"name": "x", "faults": [{"kind": "site-outage"}], "objectives": {"rto": 30}})
    assert "objectives.rto" in out


def test_timed_faults_are_refused() -> None:
    out = _problems(
        {
            "name": "x",
            "faults": [{"at": "5s", "kind": "partition", "heal_after": "10s"}],
            "objectives": {"acknowledged_writes_lost": 0},
        }
    )
    assert "faults[0].at" in out and "faults[0].heal_after" in out


def test_a_scenario_needs_an_objective() -> None:
    assert "at least one objective" in _problems({"name": "x"})


def test_rto_needs_a_fault() -> None:
    assert "measured from a fault" in _problems({"name": "x", "objectives": {"rto": "5s"}})


def test_unknown_fault_kind_is_refused() -> None:
    out = _problems({"name": "x", "faults": [{"kind": "meteor"}], "objectives": {"rto": "5s"}})
    assert "faults.0.kind" in out or "faults[0].kind" in out


def test_a_scenario_file_from_a_path(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("name: mine\nobjectives: {test_failovers_cleaned_up: true}\n")
    assert scenario.load(f).objectives.test_failovers_cleaned_up


# --- grading on hand-made evidence ----------------------------------------------------------

LOG = [
    req(1.0, True, "write", id="a"),
    req(2.0, True, "write", id="b"),
    req(3.0, True, "write", id="c"),  # acknowledged at 3.1, after the last point: lost
    req(5.0, False),
    req(9.0, True, addr=RECOVERY),  # served by the recovery site 4.1 s after the fault
    req(10.0, True, "write", addr=RECOVERY, id="d"),
]


def _judge(
    o: ScenarioObjectives,
    *,
    surviving: list[str] | None = None,
    fo: dict[str, Any] | None = None,
    jobs: list[Job] | None = None,
    log: list[dict[str, Any]] | None = None,
) -> dict[str, scenario.ObjectiveResult]:
    results, _ = scenario.judge(
        o,
        LOG if log is None else log,
        started_at=0.0,
        event_at=5.0,
        recovery_addresses={RECOVERY},
        surviving=surviving,
        surviving_error=None if surviving is not None else "no app serves users",
        failover_state=fo or {"state": "protected", "test": None},
        jobs=jobs or [],
    )
    return {r.name: r for r in results}


def test_rto_met_and_missed() -> None:
    met = _judge(ScenarioObjectives(rto="5s"))["rto"]
    assert met.met and met.measured == 4.1 and "4.1s after the fault" in met.explanation
    missed = _judge(ScenarioObjectives(rto="3s"))["rto"]
    assert not missed.met and "target 3s" in missed.explanation


def test_rto_missed_when_nobody_failed_over() -> None:
    r = _judge(ScenarioObjectives(rto="60s"), log=LOG[:4])["rto"]
    assert not r.met and r.measured is None and "drill failover" in r.explanation


def test_rpo_and_writes_lost() -> None:
    o = ScenarioObjectives(rpo="5s", acknowledged_writes_lost=0)
    res = _judge(o, surviving=["a", "b", "d"])
    assert res["rpo"].met and res["rpo"].measured == round(5.0 - 2.1, 3)
    lost = res["acknowledged_writes_lost"]
    assert not lost.met and lost.measured == 1 and "1 of 3" in lost.explanation


def test_data_objectives_missed_when_nothing_can_be_read_back() -> None:
    res = _judge(ScenarioObjectives(rpo="5s", acknowledged_writes_lost=0), surviving=None)
    assert not res["rpo"].met and not res["acknowledged_writes_lost"].met
    assert "could not be read back" in res["rpo"].explanation


def test_failback_and_reprotect_in_order() -> None:
    o = ScenarioObjectives(failed_back_and_reprotected=True)
    done = [
        job("j1-failover", "failover", 10),
        job("j2-commit", "commit", 20),
        job("j3-reprotect", "reprotect", 30),
        job("j4-failback", "failback", 40),
        job("j5-reprotect", "reprotect", 50),
    ]
    r = _judge(o, jobs=done)["failed_back_and_reprotected"]
    assert r.met and "j4-failback" in r.explanation and "j5-reprotect" in r.explanation
    # Failed back but the reprotect ran before it only: missed, with the next step named.
    r = _judge(o, jobs=done[:4], fo={"state": "failed-back", "test": None})[
        "failed_back_and_reprotected"
    ]
    assert not r.met and "drill reprotect" in r.explanation
    r = _judge(o, jobs=done[:1], fo={"state": "failed-over", "test": None})[
        "failed_back_and_reprotected"
    ]
    assert not r.met and "no failback" in r.explanation and "failed-over" in r.explanation


def test_failback_before_the_scenario_does_not_count() -> None:
    o = ScenarioObjectives(failed_back_and_reprotected=True)
    old = [job("j1-failback", "failback", -50), job("j2-reprotect", "reprotect", -40)]
    assert not _judge(o, jobs=old)["failed_back_and_reprotected"].met


def test_failed_jobs_do_not_count() -> None:
    o = ScenarioObjectives(test_failovers_cleaned_up=True)
    r = _judge(o, jobs=[job("j1-test-failover", "test-failover", 5, "failed")])
    assert not r["test_failovers_cleaned_up"].met


def test_test_failovers_cleaned_up() -> None:
    o = ScenarioObjectives(test_failovers_cleaned_up=True)
    ran = [job("j1-test-failover", "test-failover", 5), job("j2-cleanup-test", "cleanup-test", 9)]
    assert _judge(o, jobs=ran)["test_failovers_cleaned_up"].met
    left = _judge(o, jobs=ran[:1], fo={"state": "protected", "test": {"job": "j1-test-failover"}})
    r = left["test_failovers_cleaned_up"]
    assert not r.met and "--cleanup-test" in r.explanation
    none = _judge(o)["test_failovers_cleaned_up"]
    assert not none.met and "no test failover" in none.explanation


def test_grading_without_a_scenario_is_bad_input() -> None:
    with pytest.raises(UsageError, match="no scenario was started"):
        scenario.grade("nobody")
    with pytest.raises(UsageError, match="no scenario was started"):
        scenario.stop("nobody")


# --- dashboard guards -------------------------------------------------------------------------


def test_dashboard_refuses_other_addresses() -> None:
    with pytest.raises(UsageError, match=r"127\.0\.0\.1 only"):
        dashboard.make_server("default", 0, host="0.0.0.0")


def test_dashboard_part_failure_is_shown_not_raised() -> None:
    def broken() -> None:
        raise RuntimeError("site is down\nsecond line")

    assert dashboard._part(broken) == {"unavailable": "RuntimeError: site is down"}


def test_dashboard_page_is_self_contained() -> None:
    html = dashboard.page("alice<b>").decode()
    assert "/api/status" in html and "alice&lt;b&gt;" in html
    assert "http://" not in html and "https://" not in html and " src=" not in html
