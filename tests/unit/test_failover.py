"""Failover without an engine: plan action fields and their validation, job recording on
failure and interrupt, and the manual-action wait (auto, confirmed, timed out)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import yaml

from harness import failover, state
from harness import topology as t
from harness.errors import HarnessError, TopologyError, UsageError

from ..conftest import TOPOLOGIES


def with_actions(pre: list[Any], post: list[Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((TOPOLOGIES / "minimal.yaml").read_text())
    group = data["recovery_plans"]["failover"]["groups"][0]
    group["pre_actions"] = pre
    if post is not None:
        group["post_actions"] = post
    return data


def problems(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(TopologyError) as info:
        t.parse(data, "test.yaml")
    return [(p.path, p.message) for p in info.value.problems]


def test_plan_actions_parse_as_script_or_manual() -> None:
    topo = t.parse(
        with_actions(
            [{"manual": "open the firewall"}, {"script": "echo hi", "container": "users"}],
            [{"script": "true", "container": "web1"}],
        ),
        "test.yaml",
    )
    group = topo.recovery_plans["failover"].groups[0]
    assert group.pre_actions == (
        t.ManualAction(manual="open the firewall"),
        t.ScriptAction(script="echo hi", container="users"),
    )
    assert group.post_actions == (t.ScriptAction(script="true", container="web1"),)


def test_script_action_container_must_be_a_host() -> None:
    probs = problems(with_actions([{"script": "true", "container": "nope"}]))
    assert (
        "recovery_plans.failover.groups[0].pre_actions[0].container",
        "unknown host 'nope'",
    ) in (probs)


@pytest.mark.parametrize(
    "action",
    [{"script": "true"}, {"manual": "x", "script": "y"}, {"manual": ""}, {"run": "x"}],
)
def test_malformed_actions_are_refused_with_their_path(action: dict[str, str]) -> None:
    probs = problems(with_actions([action]))
    assert any(p.startswith("recovery_plans.failover.groups[0].pre_actions[0]") for p, _ in probs)


def test_enterprise_plan_actions_are_valid() -> None:
    topo = t.load(TOPOLOGIES / "enterprise.yaml")
    groups = topo.recovery_plans["failover"].groups
    assert all(isinstance(a, t.ScriptAction) for g in groups for a in g.post_actions)


# --- jobs ------------------------------------------------------------------------------------


def test_an_interrupted_job_is_recorded_with_a_hint() -> None:
    job = failover._new_job("unit-jobs", "failover")
    with (
        pytest.raises(KeyboardInterrupt),
        failover._running(job, "run it again"),
        job.step("group 1: web1", lambda _: None),
    ):
        raise KeyboardInterrupt
    (saved,) = failover.jobs("unit-jobs")
    assert saved.status == "interrupted" and saved.hint == "run it again"
    assert saved.steps[0].status == "failed" and saved.steps[0].end is not None
    assert saved.ended_at is not None


def test_a_failed_job_keeps_its_error_and_numbering_goes_on() -> None:
    job = failover._new_job("unit-jobs2", "commit")
    with pytest.raises(HarnessError), failover._running(job, "again"):
        raise HarnessError("storage unreachable")
    nxt = failover._new_job("unit-jobs2", "commit")
    assert nxt.id == "j2-commit"
    assert failover.job("unit-jobs2", job.id).error == "storage unreachable"
    with pytest.raises(UsageError, match="no job 'j9'"):
        failover.job("unit-jobs2", "j9")


# --- manual actions --------------------------------------------------------------------------


def manual(lab: str, auto: bool, timeout_s: float) -> dict[str, Any]:
    job = failover._new_job(lab, "failover")
    how = failover.Actions(False, auto, time.monotonic() + timeout_s)
    action = t.ManualAction(manual="open the firewall")
    return failover._wait_manual(lab, job, action, how, "group 1 pre-action 1")


def test_manual_action_auto_confirmed_is_recorded_so() -> None:
    assert manual("unit-man1", True, 1)["confirmed_by"] == "auto"
    assert not failover._pending_file("unit-man1").exists()


def test_manual_action_waits_for_the_confirm_flag() -> None:
    lab = "unit-man2"
    pending = failover._pending_file(lab)

    def confirm() -> None:
        while not pending.exists():
            time.sleep(0.02)
        token = json.loads(pending.read_text())["token"]
        state.write_json_atomic(failover._confirm_file(lab), {"token": token})

    threading.Thread(target=confirm, daemon=True).start()
    assert manual(lab, False, 30)["confirmed_by"] == "drill plan confirm"
    assert not pending.exists() and not failover._confirm_file(lab).exists()


def test_manual_action_not_confirmed_hits_the_plan_timeout() -> None:
    with pytest.raises(HarnessError, match="timeout expired before group 1 pre-action 1"):
        manual("unit-man3", False, 0.3)
    assert not failover._pending_file("unit-man3").exists()
