"""The default drill's wall time: site-outage on enterprise, warm images, split by phase.

Runs ``harness.runner.run("site-outage")`` once (``--runs`` for more; medians reported) and
prints one JSON object: the whole drill's seconds, each phase's (setup, initial replication,
steady state, fault to recovery, verification, teardown), and the drill's own measurements
``rto_s`` and ``rpo_s`` (the same keys the journal uses), with the objectives' verdict.
Targets (issue): whole drill 60 s or less warm; RTO within the DNS bound plus the failover time;
RPO at most two crash-consistent intervals.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, interruptible, log, unique_lab_name

from harness import runner, trafficmanager
from harness import topology as topo_mod

PHASES = {
    "setup": "setup",
    "initial replication": "initial_replication",
    "steady-state": "steady_state",
    "fault": "fault_to_recovery",
    "verification": "verification",
    "rollback": "teardown",
}


def one(topology: str) -> dict[str, Any]:
    j = runner.run("site-outage", topology, name=unique_lab_name("bdrill"), progress=log)
    if j.exit_code == 2:
        raise SystemExit(f"the drill failed: {j.error}")
    out: dict[str, Any] = {"total_s": round((j.ended_at or j.started_at) - j.started_at, 3)}
    for st in j.steps:
        if st.name in PHASES:
            out[PHASES[st.name] + "_s"] = round((st.end or st.start) - st.start, 3)
    out.update(
        rto_s=j.measurements.get("rto_s"),
        rpo_s=j.measurements.get("rpo_s"),
        acknowledged_writes_lost=j.measurements.get("acknowledged_writes_lost"),
        status=j.status,
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--topology", default="enterprise")
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    with interruptible():
        runs = [one(args.topology) for _ in range(args.runs)]
    topo = topo_mod.load(runner.lab.resolve_topology(args.topology))
    assert topo.traffic_manager is not None and topo.protection is not None
    timing = trafficmanager.timing(topo.traffic_manager)
    result: dict[str, Any] = {"benchmark": "drill", "drill": "site-outage", "topology": topo.name}
    for key in runs[0]:
        vals = [r[key] for r in runs if isinstance(r[key], int | float)]
        result[key] = round(statistics.median(vals), 3) if vals else runs[0][key]
    result["dns_bound_s"] = round(timing.emulator_clients_move_s, 3)
    result["rpo_bound_s"] = 2 * topo.protection.policy.crash_consistent_s
    result["runs"] = args.runs
    emit(result)


if __name__ == "__main__":
    main()
