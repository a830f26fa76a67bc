"""Drills end to end on real labs: exit codes, figures recomputed from the raw request log,
and the HTML report rendered in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness import engine, measure
from harness.drill import DRILL_DIR

from .conftest import ARTIFACTS, chromium, drill_cli, labelled_objects, unique_name

pytestmark = pytest.mark.integration


def run(drill: str | Path, tmp: Path, *extra: str) -> tuple[int, dict[str, object], Path, str]:
    out = tmp / "report"
    res = drill_cli(
        "run", str(drill), "--name", unique_name("drl"), "--report", str(out), *extra, timeout=300
    )
    journal = (
        json.loads((out / "journal.json").read_text()) if (out / "journal.json").exists() else {}
    )
    return res.returncode, journal, out, res.stdout + res.stderr


def variant(tmp: Path, **changes: object) -> Path:
    d = yaml.safe_load((DRILL_DIR / "dns-failover.yaml").read_text())
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            d[section][field] = value
        else:
            d[section] = value
    f = tmp / f"{d['name']}-variant.yaml"
    f.write_text(yaml.safe_dump(d))
    return f


def test_dns_failover_drill_meets_objectives_and_figures_match_the_log(tmp_path: Path) -> None:
    code, j, out, text = run("dns-failover", tmp_path)
    assert code == 0, text
    assert j["status"] == "met"
    m = j["measurements"]
    assert m["rto_s"] is not None and m["rto_s"] > 0
    # Recompute RTO and the error rate from the raw log the users wrote.
    reqs = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert len(reqs) == m["requests"] > 50
    again = measure.rto(reqs, m["fault_at"], m["recovery_addresses"])
    assert again.rto_s == m["rto_s"]
    first = again.first_recovered_request
    assert first is not None and first["address"] in m["recovery_addresses"]
    assert all(
        not r["ok"] or r["address"] not in m["recovery_addresses"]
        for r in reqs
        if r["end"] < first["end"]
    )
    assert measure.error_rate(reqs, reqs[0]["start"], reqs[-1]["end"] + 1) == m["error_rate"]
    junit = (out / "junit.xml").read_text()
    assert 'name="rto"' in junit and "<failure" not in junit
    steps = [s["name"] for s in j["steps"]]
    assert steps == ["setup", "steady-state", "fault", "verification", "rollback"]
    assert all(s["status"] == "ok" for s in j["steps"])
    assert [f["kind"] for f in j["faults"]] == ["host-outage"]


def test_a_missed_objective_exits_1(tmp_path: Path) -> None:
    code, j, out, text = run(variant(tmp_path, **{"objectives.rto": "500ms"}), tmp_path)
    assert code == 1, text
    assert j["status"] == "missed"
    [rto] = [o for o in j["objectives"] if o["name"] == "rto"]
    assert not rto["met"] and rto["measured"] > 0.5
    assert "<failure" in (out / "junit.xml").read_text()


def test_a_harness_failure_exits_2_and_cleans_up(tmp_path: Path) -> None:
    # The drill file is well formed, but the fault's parameters are refused when injected.
    bad = variant(tmp_path, faults=[{"at": "0s", "kind": "degrade", "params": {"loss_pct": 500}}])
    code, j, _, text = run(bad, tmp_path)
    assert code == 2, text
    assert j["status"] == "harness-error" and "loss_pct" in j["error"]
    assert j["steps"][-1]["name"] == "rollback" and j["steps"][-1]["status"] == "ok"


def test_bad_drill_files_are_refused_before_anything_starts(tmp_path: Path) -> None:
    cases = {
        "objectives.rto": "60",  # no unit
        "faults": [{"at": "5s", "kind": "partition"}, {"at": "1s", "kind": "partition"}],
    }
    for key, value in cases.items():
        res = drill_cli(
            "run",
            str(variant(tmp_path, **{key: value})),
            "--name",
            unique_name("bad"),
            "--report",
            str(tmp_path / "r"),
        )
        assert res.returncode == 2, res.stderr
        assert not (tmp_path / "r" / "journal.json").exists()
    res = drill_cli("run", str(variant(tmp_path, faults=[{"kind": "meteor"}])))
    assert res.returncode == 2 and "faults[0].kind" in res.stderr
    res = drill_cli(
        "run", str(variant(tmp_path, faults=[{"kind": "host-outage", "params": {"host": "ghost"}}]))
    )
    assert res.returncode == 2 and "unknown host 'ghost'" in res.stderr


def test_html_report_renders_in_chromium(tmp_path: Path) -> None:
    code, _, out, text = run("dns-failover", tmp_path)
    assert code in (0, 1), text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dns-failover-report.png"
    url = (out / "report.html").as_uri()
    dom = chromium(url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-500:]
    assert 'id="timeline"' in dom.stdout and 'id="objectives"' in dom.stdout
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr
    res = chromium(url, f"--screenshot={shot}", "--window-size=1100,1300")
    assert res.returncode == 0, res.stderr[-500:]
    assert shot.stat().st_size > 10_000


def site_outage_variant(tmp: Path, **objectives: object) -> Path:
    d = yaml.safe_load((DRILL_DIR / "site-outage.yaml").read_text())
    d["topology"] = "minimal"
    d["objectives"] = objectives
    f = tmp / "site-outage-variant.yaml"
    f.write_text(yaml.safe_dump(d))
    return f


def test_a_missed_rpo_objective_exits_1_with_hashed_evidence(tmp_path: Path) -> None:
    # Crash-consistent points every 5 s cannot keep the RPO under 10 ms. (100 ms was met once:
    # a point happened to be captured 0.1 s before the fault, with a write just before it.)
    code, j, out, text = run(site_outage_variant(tmp_path, rpo="10ms"), tmp_path)
    assert code == 1, text
    [rpo] = [o for o in j["objectives"] if o["name"] == "rpo"]
    assert not rpo["met"] and rpo["measured"] > 0.01
    hashes = j["measurements"]["data_hashes"]
    assert len(hashes["held_sha256"]) == 64 and hashes["held_items"] > 0
    reqs = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    fault_at = j["measurements"]["fault_at"]
    acked = sorted(r["id"] for r in measure.acknowledged(reqs, until=fault_at))
    assert (
        hashlib.sha256("\n".join(acked).encode()).hexdigest() == hashes["acknowledged_ids_sha256"]
    )


def test_ctrl_c_stops_the_drill_and_tears_down(tmp_path: Path) -> None:
    name = unique_name("int")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "site-outage",
            "--topology",
            "minimal",
            "--name",
            name,
            "--report",
            str(tmp_path / "r"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 180
    for line in proc.stderr:  # wait until the drill is in its steady state
        if "steady-state" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    j = json.loads((tmp_path / "r" / "journal.json").read_text())
    assert j["status"] == "interrupted"
    assert j["steps"][-1]["name"] == "rollback"
    client = engine.connect()
    assert labelled_objects(client, name) == []
