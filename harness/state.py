"""Lab state on disk: what ``drill up`` decided, kept for the commands that follow.

Each lab has a folder ``<state root>/labs/<lab>/`` holding ``lab.json`` (the LabRecord: name, run
id, topology, where its address space was placed) and files components keep (keys, fault
records). The root is ``$DRILL_STATE_DIR``, else ``/var/lib/drill`` for root and
``~/.local/state/drill`` otherwise. Labels on Docker objects stay the source of truth for cleanup:
``drill down --all`` works with no state folder at all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.topology import Topology


def state_root() -> Path:
    """Where lab folders live."""
    env = os.environ.get("DRILL_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/drill")
    return Path.home() / ".local" / "state" / "drill"


def lab_dir(lab: str) -> Path:
    """The state folder of one lab."""
    return state_root() / "labs" / lab


@dataclass(frozen=True)
class LabRecord:
    """What ``drill up`` decided for a lab."""

    lab: str
    run_id: str
    topology_name: str
    topology_source: str
    space: str  # the /16 the lab actually uses
    created_at: float
    topology: dict[str, Any]

    def load_topology(self) -> Topology:
        """The topology the lab was created from."""
        return Topology.model_validate(self.topology)


def write_json_atomic(path: Path, data: object, mode: int = 0o644) -> None:
    """Write JSON so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(record: LabRecord) -> None:
    """Persist a lab record."""
    write_json_atomic(lab_dir(record.lab) / "lab.json", asdict(record))


def load(lab: str) -> LabRecord | None:
    """The record of a lab, or None if it has none."""
    try:
        data = json.loads((lab_dir(lab) / "lab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:
        return LabRecord(**data)
    except TypeError:
        return None


def remove(lab: str) -> None:
    """Delete a lab's state folder."""
    shutil.rmtree(lab_dir(lab), ignore_errors=True)


def known_labs() -> list[str]:
    """Labs that have a state folder."""
    root = state_root() / "labs"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir())
