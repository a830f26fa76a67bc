"""Training on one sandbox: the dashboard, then the dr-test and site-down scenarios, graded.

The learner's actions are the normal library calls a learner's `drill` commands make; grading
goes through the real CLI so exit codes and lines are checked as a trainer sees them.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
import requests

from harness import dashboard, failover, faults, lab, scenario

from .conftest import ARTIFACTS, chromium, drill_cli

pytestmark = pytest.mark.integration


def _grade(name: str) -> tuple[int, dict[str, Any], str]:
    """`drill grade --json` and the text form: (exit code, JSON, text)."""
    res = drill_cli("grade", "--name", name, "--json")
    data = json.loads(res.stdout) if res.stdout.strip() else {}
    text = drill_cli("grade", "--name", name)
    assert text.returncode == res.returncode, text.stderr
    return res.returncode, data, text.stdout


def _objectives(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in data["objectives"]}


def _chromium(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    # The dashboard fetches its status after load and then every second. Virtual time stands
    # still while a fetch is pending, so a budget under a second renders exactly one status;
    # 5 s made five, each as slow as the machine is busy (once past the 120 s limit).
    return chromium(url, "--virtual-time-budget=900", *extra)


def test_dashboard_serves_the_sandbox(minimal_lab: lab.LabStatus) -> None:
    name = minimal_lab.lab
    server, url = dashboard.start_background(name, 0)
    try:
        st = requests.get(url + "api/status", timeout=30).json()
        assert {h["name"] for h in st["status"]["hosts"]} >= {"web1", "dns", "onprem-gw"}
        assert all(e["state"] == "up" for e in st["tunnel"]), st["tunnel"]
        answer = st["dns"]["answer"]["addresses"]
        assert answer, st["dns"]
        assert [d["disk"] for d in st["replication"]["disks"]] == ["web1/data"]
        assert st["faults"] == [] and st["failover"]["state"] == "protected"

        dom = _chromium(url, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        for host in ("web1", "storage", "replicator", "azure-gw"):
            assert f"<td>{host}</td>" in dom.stdout
        assert f'<b id="dns-answer">{", ".join(answer)}</b>' in dom.stdout
        # Every part rendered, none shown as unavailable (the script's own text aside).
        assert ">loading<" not in dom.stdout and '"warn">unavailable' not in dom.stdout
        for marker in ("Uncaught", "CONSOLE"):
            assert marker not in dom.stderr, dom.stderr[-2000:]

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        shot.unlink(missing_ok=True)
        res = _chromium(url, f"--screenshot={shot}", "--window-size=1100,1300")
        assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_cli_refuses_other_addresses(minimal_lab: lab.LabStatus) -> None:
    res = drill_cli("dashboard", "--name", minimal_lab.lab, "--host", "0.0.0.0")
    assert res.returncode == 2 and "127.0.0.1 only" in res.stderr


def test_bad_scenario_input(minimal_lab: lab.LabStatus) -> None:
    name = minimal_lab.lab
    res = drill_cli("grade", "--name", name)
    assert res.returncode == 2 and "no scenario was started" in res.stderr
    res = drill_cli("scenario", "start", "no-such-scenario", "--name", name)
    assert res.returncode == 2 and "site-down" in res.stderr
    assert scenario.read_record(name) is None and faults.active(name) == []


def test_dr_test_graded_before_and_after_the_learner_acts(minimal_lab: lab.LabStatus) -> None:
    name = minimal_lab.lab
    res = drill_cli("scenario", "start", "dr-test", "--name", name)
    assert res.returncode == 0, res.stderr
    try:
        again = drill_cli("scenario", "start", "dr-test", "--name", name)
        assert again.returncode == 2 and "already running" in again.stderr
        code, data, text = _grade(name)
        assert code == 1
        assert not _objectives(data)["test_failovers_cleaned_up"]["met"]
        assert "MISSED test_failovers_cleaned_up: no test failover" in text

        failover.test_failover(name)
        code, data, _ = _grade(name)  # the copies are still up: not cleaned up yet
        assert (
            code == 1
            and "cleanup-test" in _objectives(data)["test_failovers_cleaned_up"]["explanation"]
        )
        failover.cleanup_test(name)
        code, data, text = _grade(name)
        assert code == 0, text
        obj = _objectives(data)
        assert obj["acknowledged_writes_lost"]["measured"] == 0
        assert data["measurements"]["acknowledged_before_event"] > 0
        assert "met    test_failovers_cleaned_up" in text
        status = json.loads(drill_cli("scenario", "status", "--name", name, "--json").stdout)
        assert status["scenario"] == "dr-test" and status["running"]
        clock = dashboard.collect(name)["scenario"]  # what the dashboard's clock shows
        assert clock["scenario"] == "dr-test" and clock["clock_s"] > 0
    finally:
        scenario.stop(name)
    assert scenario.status(name)["running"] is False


def _wait_rto_measured(name: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        g = scenario.grade(name).to_json()
        rto = _objectives(g)["rto"]
        if rto["measured"] is not None or time.monotonic() > deadline:
            return g
        time.sleep(1)


def test_site_down_failover_then_failback(minimal_lab: lab.LabStatus) -> None:
    name = minimal_lab.lab
    rec = scenario.start(name, "site-down")
    try:
        assert [f.split("-", 1)[1] for f in rec.faults] == ["site-outage"]
        code, data, text = _grade(name)  # nobody acted yet
        assert code == 1 and "MISSED rto" in text and not _objectives(data)["rto"]["met"]
        failover.failover(name)
        g = _wait_rto_measured(name)
        obj = _objectives(g)
        assert obj["rto"]["met"] and obj["rpo"]["met"], obj
        assert not obj["failed_back_and_reprotected"]["met"]

        faults.heal(name)
        for step in (failover.commit, failover.reprotect, failover.failback, failover.reprotect):
            step(name)
        code, _, text = _grade(name)
        assert code == 0, text
        assert "met    failed_back_and_reprotected" in text
    finally:
        if scenario.read_record(name) is not None and scenario.status(name)["running"]:
            scenario.stop(name, heal=True)
