"""The pytest plugin under xdist: the example suite with ``-n 2``, watched through the labels.

Runs ``pytest examples -p xdist -n 2`` in a subprocess with its own state folder and polls the
engine's containers by their ``drill.lab`` label every 0.3 s: which plugin labs (``pt-gwN-*``)
exist, how many at once, whether both workers had one up at the same time; afterwards, how many
labelled objects of those labs are left (the target is none).

Prints one JSON object: wall_s, exit_code, passed, labs_seen, max_concurrent_labs,
workers_together, leftover_objects.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import Timer, emit, log

from harness import engine, naming

REPO = Path(__file__).resolve().parent.parent
PLUGIN_LAB = re.compile(r"pt-gw\d+-[0-9a-f]{6}")


def main() -> int:
    client = engine.connect()
    state_dir = Path(tempfile.mkdtemp(prefix="drill-bench-pytest-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["DRILL_STATE_DIR"] = str(state_dir)
    cmd = [sys.executable, "-m", "pytest", "examples", "-p", "xdist", "-n", "2", "-q"]
    snapshots: list[set[str]] = []

    def labs() -> set[str]:
        found = client.api.containers(all=True, filters={"label": naming.LAB})
        names = {c["Labels"].get(naming.LAB, "") for c in found}
        return {n for n in names if PLUGIN_LAB.fullmatch(n) and (state_dir / "labs" / n).exists()}

    log(f"running {' '.join(cmd[2:])}")
    with Timer() as t:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        while proc.poll() is None:
            snapshots.append(labs())
            time.sleep(0.3)
    out = proc.stdout.read() if proc.stdout else ""
    seen = set().union(*snapshots)
    left = 0
    for name in seen:
        f = {"label": f"{naming.LAB}={name}"}
        left += len(client.api.containers(all=True, filters=f)) + len(
            client.api.networks(filters=f)
        )
        left += len(client.api.volumes(filters=f).get("Volumes") or [])
    passed = re.search(r"(\d+) passed", out)
    emit(
        {
            "bench": "pytest-plugin",
            "workers": 2,
            "wall_s": round(t.s, 1),
            "exit_code": proc.returncode,
            "passed": int(passed.group(1)) if passed else 0,
            "labs_seen": sorted(seen),
            "max_concurrent_labs": max((len(s) for s in snapshots), default=0),
            "workers_together": any({n[:6] for n in s} >= {"pt-gw0", "pt-gw1"} for s in snapshots),
            "leftover_objects": left,
        }
    )
    return 0 if proc.returncode == 0 and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
