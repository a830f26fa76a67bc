"""Traffic Manager monitoring semantics of the prober (containers/dns/tmprober.py), no engine."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harness import topology as t
from harness import trafficmanager as tmm

from ..conftest import REPO, TOPOLOGIES


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tmprober", REPO / "containers/dns/tmprober.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tmprober"] = mod
    spec.loader.exec_module(mod)
    return mod


tp = _load()


def profile(**over: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "profile": "p.tm.test",
        "vanity": "app.test",
        "enabled": True,
        "routing": "priority",
        "ttl_s": 30,
        "endpoints": {
            "a": {"address": "10.0.0.1", "priority": 1, "weight": 1},
            "b": {"address": "10.0.0.2", "priority": 2, "weight": 3},
        },
    }
    p.update(over)
    return p


def test_failures_beyond_tolerated_degrade_and_one_success_heals() -> None:
    ps = tp.ProbeState()
    for _ in range(3):
        ps.record(False, "timeout", 1.0, tolerated=3, at=0)
        assert not ps.degraded
    ps.record(False, "timeout", 1.0, tolerated=3, at=0)  # the 4th consecutive failure
    assert ps.degraded
    ps.record(True, "HTTP 200", 1.0, tolerated=3, at=0)
    assert not ps.degraded and ps.consecutive_failures == 0


def test_zero_tolerated_degrades_on_first_failure() -> None:
    ps = tp.ProbeState()
    ps.record(False, "timeout", 1.0, tolerated=0, at=0)
    assert ps.degraded


def test_a_success_resets_the_count() -> None:
    ps = tp.ProbeState()
    for ok in (False, False, True, False, False):
        ps.record(ok, "", 1.0, tolerated=2, at=0)
    assert not ps.degraded and ps.consecutive_failures == 2


@pytest.mark.parametrize(
    "code, ranges, ok",
    [
        (200, ["200"], True),
        (204, ["200"], False),  # other 2xx codes fail unless listed
        (301, ["200-299"], False),
        (301, ["200-299", "301-301"], True),
        (302, ["200"], False),
        (503, ["200-599"], True),
    ],
)
def test_expected_status_ranges(code: int, ranges: list[str], ok: bool) -> None:
    assert tp.status_in_ranges(code, ranges) is ok


def test_monitor_statuses() -> None:
    fresh, online, degraded = tp.ProbeState(), tp.ProbeState(), tp.ProbeState()
    online.record(True, "", 1, 0, 0)
    degraded.record(False, "", 1, 0, 0)
    assert tp.monitor_status(True, {}, fresh) == tp.CHECKING
    assert tp.monitor_status(True, {}, online) == tp.ONLINE
    assert tp.monitor_status(True, {}, degraded) == tp.DEGRADED
    assert tp.monitor_status(True, {"enabled": False}, online) == tp.DISABLED
    assert tp.monitor_status(False, {}, online) == tp.DISABLED
    assert tp.monitor_status(True, {"stopped": True}, online) == tp.STOPPED
    assert tp.monitor_status(True, {"always_serve": True}, degraded) == tp.UNMONITORED


def test_profile_status_rules() -> None:
    deg, onl, chk = tp.DEGRADED, tp.ONLINE, tp.CHECKING
    assert tp.profile_status(False, [onl]) == "Disabled"
    assert tp.profile_status(True, []) == "Disabled"
    assert tp.profile_status(True, [tp.DISABLED, tp.STOPPED]) == "Inactive"
    assert tp.profile_status(True, [onl, deg]) == "Degraded"
    assert tp.profile_status(True, [onl, chk]) == "Online"
    assert tp.profile_status(True, [chk, tp.DISABLED]) == "CheckingEndpoints"


def test_decide_excludes_degraded_endpoints() -> None:
    st = tp.decide(profile(), {"a": tp.DEGRADED, "b": tp.ONLINE})
    assert [e["name"] for e in st["endpoints"]] == ["b"]
    assert not st["nxdomain"]


def test_decide_all_degraded_returns_all() -> None:
    st = tp.decide(profile(), {"a": tp.DEGRADED, "b": tp.DEGRADED})
    assert [e["name"] for e in st["endpoints"]] == ["a", "b"]


def test_decide_all_degraded_but_one_disabled() -> None:
    st = tp.decide(profile(), {"a": tp.DEGRADED, "b": tp.DISABLED})
    assert [e["name"] for e in st["endpoints"]] == ["a"]


def test_decide_checking_endpoints_are_answered() -> None:
    st = tp.decide(profile(), {"a": tp.CHECKING, "b": tp.DEGRADED})
    assert [e["name"] for e in st["endpoints"]] == ["a"]


def test_decide_nxdomain_when_disabled_or_inactive() -> None:
    assert tp.decide(profile(enabled=False), {"a": tp.DISABLED, "b": tp.DISABLED})["nxdomain"]
    assert tp.decide(profile(), {"a": tp.DISABLED, "b": tp.DISABLED})["nxdomain"]
    assert tp.decide(profile(), {"a": tp.STOPPED, "b": tp.DISABLED})["nxdomain"]


def test_probe_failures_are_results_not_crashes() -> None:
    monitor = {"protocol": "HTTP", "port": 9, "path": "/", "timeout_s": 0.2}
    ok, detail, _ = tp.probe(monitor, {"address": "127.0.0.1"})
    assert not ok and detail
    ok, detail, _ = tp.probe({**monitor, "protocol": "TCP"}, {"address": "127.0.0.1"})
    assert not ok


def test_timing_matches_azures_documented_timeline() -> None:
    m = t.Monitor(interval_s=30, timeout_s=10, tolerated_failures=3)
    assert tmm.degrade_bound_s(m) == 130  # 30 + 3 x 30 + 10, the documented worst case
    fast = t.Monitor(interval_s=1, timeout_s=0.5, tolerated_failures=1)
    az = tmm.azure_monitor(fast)
    assert (az.interval_s, az.timeout_s) == (10, 5)
    topo = t.load(TOPOLOGIES / "minimal.yaml")
    assert topo.traffic_manager is not None
    timing = tmm.timing(topo.traffic_manager)
    assert timing.emulator_degraded_s == 1 * 2 + 0.5
    assert timing.azure_clients_move_s == 10 * 2 + 5 + topo.traffic_manager.ttl_s


def test_prober_file_is_self_contained() -> None:
    text = Path(REPO / "containers/dns/tmprober.py").read_text()
    assert "import harness" not in text and "from harness" not in text
