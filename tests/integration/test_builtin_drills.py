"""Every built-in drill runs end to end on `minimal` (dns-failover on web-pair), meets its
objectives, and its journal's figures agree with the raw request log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import measure

from .conftest import drill_cli, unique_name

pytestmark = pytest.mark.integration


def run(
    drill: str, tmp: Path, topology: str | None
) -> tuple[int, dict[str, Any], list[dict[str, Any]], str]:
    out = tmp / "report"
    args = ["run", drill, "--name", unique_name("bd"), "--report", str(out)]
    if topology:
        args += ["--topology", topology]
    res = drill_cli(*args, timeout=600)
    j = json.loads((out / "journal.json").read_text())
    reqs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    return res.returncode, j, reqs, res.stdout + res.stderr


def recompute(j: dict[str, Any], reqs: list[dict[str, Any]]) -> None:
    """The journal's RTO, error rate and loss count agree with the raw log."""
    m = j["measurements"]
    assert m["requests"] == len(reqs)
    assert measure.rto(reqs, m["fault_at"], m["recovery_addresses"]).rto_s == m["rto_s"]
    assert measure.error_rate(reqs, reqs[0]["start"], reqs[-1]["end"] + 1) == m["error_rate"]
    acked = measure.acknowledged(reqs, until=m["fault_at"])
    assert len(acked) == m["acknowledged_before_fault"]
    lost = {r["id"] for r in acked} & set(m["lost_ids"])
    assert len(lost) == min(m["acknowledged_writes_lost"], 50)


def test_site_outage(tmp_path: Path) -> None:
    code, j, reqs, text = run("site-outage", tmp_path, "minimal")
    assert code == 0, text
    recompute(j, reqs)
    m = j["measurements"]
    assert m["rto_s"] > 0 and m["rpo_s"] is not None
    # The data plane agrees with the recovery point the failover used.
    assert m["point_consistent"], m
    assert m["rpo_from_point_s"] <= m["rpo_s"] + 1.0


def test_planned_migration(tmp_path: Path) -> None:
    code, j, reqs, text = run("planned-migration", tmp_path, None)
    assert code == 0, text
    recompute(j, reqs)
    assert j["measurements"]["acknowledged_writes_lost"] == 0
    assert next(s for s in j["steps"] if s["name"] == "failback")["status"] == "ok"


@pytest.mark.parametrize("drill", ["tunnel-partition", "storage-outage"])
def test_replication_lags_and_recovers(drill: str, tmp_path: Path) -> None:
    code, j, reqs, text = run(drill, tmp_path, None)
    assert code == 0, text
    recompute(j, reqs)
    rep = j["measurements"]["replication"]
    fault = j["faults"][0]
    outage = fault["ended_at"] - fault["started_at"]
    assert rep["max_rpo_s"] >= outage, rep  # no point could be published during the outage
    assert all(state == "Protected" for _, state in rep["final"].values()), rep  # and it recovered
    assert j["measurements"]["acknowledged_writes_lost"] == 0


def test_test_failover_leaves_production_untouched(tmp_path: Path) -> None:
    code, j, reqs, text = run("test-failover", tmp_path, None)
    assert code == 0, text
    recompute(j, reqs)
    [rec] = [s for s in j["steps"] if s["name"] == "recovery: test-failover"]
    assert rec["evidence"]["hosts"], rec
    assert j["measurements"]["error_rate"] <= 0.01
    served = {r["address"] for r in reqs if r["ok"]}
    assert not served & set(j["measurements"]["recovery_addresses"])
