"""Shared test configuration: where the topologies are, and an isolated state folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import topology
from harness.errors import TopologyError

REPO = Path(__file__).resolve().parent.parent
TOPOLOGIES = REPO / "topologies"


def problems(data: Any) -> list[tuple[str, str]]:
    """(path, message) of every problem parsing topology ``data``; it must not parse."""
    with pytest.raises(TopologyError) as info:
        topology.parse(data, "test.yaml")
    return [(p.path, p.message) for p in info.value.problems]


def has(probs: list[tuple[str, str]], path: str, fragment: str) -> bool:
    """Whether a problem at ``path`` says ``fragment``."""
    return any(p == path and fragment in m for p, m in probs)


@pytest.fixture(autouse=True, scope="session")
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The test session keeps lab state in its own folder, apart from the user's labs."""
    old = os.environ.get("DRILL_STATE_DIR")
    os.environ["DRILL_STATE_DIR"] = str(tmp_path_factory.mktemp("drill-state"))
    yield
    if old is None:
        os.environ.pop("DRILL_STATE_DIR", None)
    else:
        os.environ["DRILL_STATE_DIR"] = old
