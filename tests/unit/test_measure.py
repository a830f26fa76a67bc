"""RTO and RPO from a request log (harness.measure), on hand-made logs with known answers."""

from __future__ import annotations

from typing import Any

from harness import measure

PRIMARY, RECOVERY = "10.64.100.10", "10.64.100.20"


def req(
    start: float,
    ok: bool,
    op: str = "read",
    addr: str = PRIMARY,
    id: str | None = None,
    dur: float = 0.1,
) -> dict[str, Any]:
    return {
        "start": start,
        "end": start + dur,
        "ok": ok,
        "op": op,
        "address": addr,
        "id": id,
        "latency_ms": dur * 1000,
    }


def test_rto_is_fault_to_first_success_on_the_recovery_site() -> None:
    log = [
        req(0.0, True),
        req(1.0, True),
        req(10.0, False),
        req(11.0, False, addr=RECOVERY),
        req(12.0, True),  # still the primary's address (a cached answer): not recovery
        req(13.0, True, addr=RECOVERY),
        req(14.0, True, addr=RECOVERY),
    ]
    r = measure.rto(log, fault_at=9.5, recovery_addresses={RECOVERY})
    assert r.rto_s == round(13.1 - 9.5, 3)
    assert r.failed_requests == 2
    assert r.last_ok_before_fault == 1.1


def test_rto_none_when_recovery_never_serves() -> None:
    assert measure.rto([req(0, True), req(5, False)], 1.0, {RECOVERY}).rto_s is None


def test_rpo_newest_survivor_and_lost_count() -> None:
    log = [
        req(1.0, True, "write", id="a"),
        req(2.0, True, "write", id="b"),
        req(3.0, True, "write", id="c"),  # acknowledged at 3.1, lost
        req(4.0, False, "write"),  # never acknowledged: not counted
        req(6.0, True, "write", id="d"),  # acknowledged after the fault
    ]
    r = measure.rpo(log, fault_at=5.0, surviving_ids={"a", "b", "d"}, run_start=0.0)
    assert r.rpo_s == round(5.0 - 2.1, 3)
    assert r.acknowledged_before_fault == 3
    assert r.acknowledged_writes_lost == 1 and r.lost_ids == ["c"]


def test_rpo_zero_loss() -> None:
    log = [req(1.0, True, "write", id="a"), req(2.0, True, "write", id="b")]
    r = measure.rpo(log, fault_at=2.1, surviving_ids={"a", "b"}, run_start=0.0)
    assert r.rpo_s == 0.0 and r.acknowledged_writes_lost == 0


def test_rpo_when_nothing_survived_is_the_whole_run() -> None:
    log = [req(1.0, True, "write", id="a")]
    r = measure.rpo(log, fault_at=5.0, surviving_ids=set(), run_start=0.5)
    assert r.rpo_s == 4.5 and r.acknowledged_writes_lost == 1


def test_error_rate_and_series() -> None:
    log = [req(0.0, True), req(0.5, False), req(1.2, True, addr=RECOVERY)]
    assert measure.error_rate(log, 0, 1) == 0.5
    series = measure.success_series(log, 0, 2)
    assert series[0]["success"] == 0.5 and series[1]["addresses"] == [RECOVERY]
