"""Sandboxes at once: 1, 2 and 4 learners' `minimal` labs each running `site-outage`.

For each count N, N drills (``harness.runner.run("site-outage", "minimal")``, each with its own
lab name, so its own /16, containers and state) start together in threads; the wall time is
from the first start to the last drill's end (setup to teardown). Prints one JSON line per
count: ``{sandboxes, wall_s, ratio_to_one, all_passed}`` plus each drill's status, RTO and RPO.
Target (issue): 4 sandboxes complete on one 2-core machine, every drill meeting its objectives.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Timer, emit, interruptible, log, ratio, unique_lab_name

from harness import runner


def one(i: int, tag: str) -> dict[str, Any]:
    """One drill in its own sandbox; a harness failure is reported, not raised."""
    name = unique_lab_name(f"cc{tag}")
    j = runner.run(
        "site-outage", "minimal", name=name, seed=i, progress=lambda m: log(f"{name}: {m}")
    )
    return {
        "lab": name,
        "status": j.status,
        "rto_s": j.measurements.get("rto_s"),
        "rpo_s": j.measurements.get("rpo_s"),
        "error": (j.error or "").splitlines()[0] if j.error else None,
    }


def batch(n: int) -> tuple[float, list[dict[str, Any]]]:
    """N drills at once: (wall seconds, their results)."""
    with Timer() as t, ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda i: one(i, f"{n}"), range(n)))
    return t.s, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--counts", default="1,2,4", help="sandbox counts, comma-separated")
    args = p.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    one_s = 0.0
    with interruptible():
        for n in counts:
            log(f"{n} sandbox(es) at once")
            wall, results = batch(n)
            if n == 1:
                one_s = wall
            emit(
                {
                    "sandboxes": n,
                    "wall_s": round(wall, 3),
                    "ratio_to_one": ratio(wall, one_s) if one_s else None,
                    "all_passed": all(r["status"] == "met" for r in results),
                    "drills": results,
                }
            )


if __name__ == "__main__":
    main()
