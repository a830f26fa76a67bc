"""Shared test configuration: where the topologies are, and an isolated state folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOPOLOGIES = REPO / "topologies"


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
