"""The pytest plugin, run by ``pytester`` in-process: options, strict markers, fixtures, lab
lifetime (shared, fresh, kept, removed on failure and Ctrl-C) and readable assertion messages.

Labs here live on the in-memory runtime (``harness.lab.open_runtime`` is patched), so these tests
prove the plugin's bookkeeping only; tests/integration/test_pytest_plugin.py runs the example
suite against the real engine under xdist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from harness import lab, measure, naming, trafficmanager
from harness import pytest_plugin as plugin
from harness.errors import UsageError
from harness.fake_runtime import FakeRuntime
from harness.trafficmanager import Answer

pytest_plugins = ("pytester",)

LAB_RE = re.compile(r"pt-gw\d+-[0-9a-f]{6}")

RECORD_NAMES = """
import pathlib
import pytest

def record(*names):
    with open(pathlib.Path(__file__).parent / "names.txt", "a") as fh:
        fh.write(" ".join(names) + "\\n")
"""


@pytest.fixture
def rt(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRuntime]:
    """Every lab the plugin makes lives in this in-memory runtime, ready at once."""
    fake = FakeRuntime()
    monkeypatch.setattr(lab, "open_runtime", lambda: fake)
    monkeypatch.setattr(lab, "_wait_ready", lambda *a, **k: None)
    # No DNS server answers in a fake lab: steady state is taken as given.
    monkeypatch.setattr(plugin, "wait_steady", lambda ref, within=0.0: None)
    yield fake
    for name in {c.labels.get(naming.LAB, "") for c in fake.containers({naming.LAB: ""})}:
        lab.down(name, runtime=fake)  # a kept lab, removed so the next test starts empty


def labs_in(rt: FakeRuntime) -> set[str]:
    return {c.labels[naming.LAB] for c in rt.containers({naming.LAB: ""})}


def recorded(pytester: pytest.Pytester) -> list[list[str]]:
    text = (pytester.path / "names.txt").read_text()
    return [line.split() for line in text.splitlines()]


# --- options, markers, fixtures --------------------------------------------------------------


def test_options_and_markers_are_registered_through_the_entry_point(
    pytester: pytest.Pytester,
) -> None:
    res = pytester.runpytest("--help")
    res.stdout.fnmatch_lines(["*--dr-topology=NAME*", "*--dr-keep*"])
    res = pytester.runpytest("--markers")
    res.stdout.fnmatch_lines(["@pytest.mark.dr_topology(name):*"])
    pytester.makepyfile(
        "def test_loaded(pytestconfig):\n"
        "    assert pytestconfig.pluginmanager.get_plugin('drill') is not None\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    res = pytester.runpytest("--fixtures")
    for fixture in ("dr_topology", "dr_lab", "dr_fresh_lab", "dr_drill", "dr_lab_pool"):
        assert re.search(rf"^{fixture}\b", res.stdout.str(), re.M), fixture


def test_markers_are_strict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.dr_topology("web-pair")
        def test_declared(): pass

        @pytest.mark.dr_topolgy("web-pair")
        def test_misspelt(): pass
        """
    )
    res = pytester.runpytest("--strict-markers")
    assert res.ret == pytest.ExitCode.INTERRUPTED  # a collection error
    res.stdout.fnmatch_lines(["*'dr_topolgy' not found in `markers`*"])
    assert "'dr_topology' not found" not in res.stdout.str()


def test_topology_comes_from_the_closest_marker_else_the_option(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.dr_topology("web-pair")

        def test_module(dr_topology):
            assert dr_topology == "web-pair"

        @pytest.mark.dr_topology("enterprise")
        def test_own(dr_topology):
            assert dr_topology == "enterprise"
        """,
        test_plain="def test_plain(dr_topology):\n    assert dr_topology == 'minimal'\n",
    )
    pytester.runpytest().assert_outcomes(passed=3)
    res = pytester.runpytest("--dr-topology", "enterprise", "-k", "plain")
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*assert 'enterprise' == 'minimal'*"])


def test_a_bad_topology_marker_is_refused_with_an_example(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n\n"
        "@pytest.mark.dr_topology('minimal', 'web-pair')\n"
        "def test_two(dr_topology): pass\n"
    )
    res = pytester.runpytest()
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(["*dr_topology takes one topology name, e.g.*"])


# --- lab lifetime ----------------------------------------------------------------------------


def test_one_shared_lab_per_topology_and_fresh_labs_per_test_all_removed(
    pytester: pytest.Pytester, rt: FakeRuntime
) -> None:
    pytester.makeconftest(RECORD_NAMES)
    pytester.makepyfile(
        """
        import pytest
        from conftest import record

        def test_a(dr_lab, dr_drill):
            assert dr_drill.ref is dr_lab and dr_drill.shared
            record("shared", dr_lab.plan.lab, dr_lab.record.topology_name)

        def test_b(dr_lab):
            record("shared", dr_lab.plan.lab, dr_lab.record.topology_name)

        @pytest.mark.dr_topology("web-pair")
        def test_other_topology(dr_lab):
            record("shared", dr_lab.plan.lab, dr_lab.record.topology_name)

        def test_fresh(dr_fresh_lab, dr_drill):
            assert dr_drill.ref is dr_fresh_lab and not dr_drill.shared
            record("fresh", dr_fresh_lab.plan.lab, dr_fresh_lab.record.topology_name)
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=4)
    lines = recorded(pytester)
    shared = {(name, topo) for kind, name, topo in lines if kind == "shared"}
    fresh = [(name, topo) for kind, name, topo in lines if kind == "fresh"]
    assert {topo for _, topo in shared} == {"minimal", "web-pair"}
    assert len(shared) == 2, "one lab per topology, shared by the tests that use it"
    assert len(fresh) == 1 and fresh[0] not in shared and fresh[0][1] == "minimal"
    assert all(LAB_RE.fullmatch(name) for name, _ in [*shared, *fresh])
    assert labs_in(rt) == set(), "every lab removed at the end"


def test_labs_are_removed_when_tests_fail(pytester: pytest.Pytester, rt: FakeRuntime) -> None:
    pytester.makeconftest(RECORD_NAMES)
    pytester.makepyfile(
        """
        from conftest import record

        def test_fails(dr_lab):
            record(dr_lab.plan.lab)
            assert False, "the lab must go anyway"
        """
    )
    res = pytester.runpytest()
    res.assert_outcomes(failed=1)
    assert len(recorded(pytester)) == 1
    assert labs_in(rt) == set()
    assert "kept lab" not in res.stdout.str()


def test_labs_are_removed_on_ctrl_c(pytester: pytest.Pytester, rt: FakeRuntime) -> None:
    pytester.makeconftest(RECORD_NAMES)
    pytester.makepyfile(
        """
        from conftest import record

        def test_interrupted(dr_lab, dr_fresh_lab):
            record(dr_lab.plan.lab, dr_fresh_lab.plan.lab)
            raise KeyboardInterrupt
        """
    )
    res = pytester.runpytest(no_reraise_ctrlc=True)
    assert res.ret == pytest.ExitCode.INTERRUPTED
    [[shared, fresh]] = recorded(pytester)
    assert shared != fresh
    assert labs_in(rt) == set()


def test_dr_keep_leaves_labs_up_and_says_how_to_remove_them(
    pytester: pytest.Pytester, rt: FakeRuntime
) -> None:
    pytester.makeconftest(RECORD_NAMES)
    pytester.makepyfile(
        """
        from conftest import record

        def test_shared(dr_lab):
            record(dr_lab.plan.lab)

        def test_fresh_and_failing(dr_fresh_lab):
            record(dr_fresh_lab.plan.lab)
            assert False
        """
    )
    res = pytester.runpytest("--dr-keep")
    res.assert_outcomes(passed=1, failed=1)
    names = {line[0] for line in recorded(pytester)}
    assert len(names) == 2 and labs_in(rt) == names
    out = res.stdout.str()
    assert "labs kept (--dr-keep)" in out
    for name in names:
        assert f"kept lab {name} (minimal); remove it with: " in out
        assert f"drill down --name {name}" in out


def test_a_failover_on_the_shared_lab_is_refused_before_anything_changes(
    pytester: pytest.Pytester, rt: FakeRuntime
) -> None:
    pytester.makepyfile(
        """
        def test_failover(dr_drill):
            dr_drill.failover()
        """
    )
    res = pytester.runpytest()
    res.assert_outcomes(failed=1)
    res.stdout.fnmatch_lines(["*a failover changes lab 'pt-gw*' for good*dr_fresh_lab*"])
    assert labs_in(rt) == set()


# --- readable assertion messages -------------------------------------------------------------


@pytest.fixture
def drill(rt: FakeRuntime) -> Iterator[plugin.Drill]:
    """A Drill on a fake minimal lab."""
    lab.up("minimal", "pt-gw0-abcdef", runtime=rt)
    yield plugin.Drill(lab.open_lab("pt-gw0-abcdef", runtime=rt), shared=True)


def test_assert_resolves_to_says_what_was_answered_for_how_long(
    drill: plugin.Drill, monkeypatch: pytest.MonkeyPatch
) -> None:
    onprem = drill.site_addresses("onprem")
    (addr,) = onprem
    answer = Answer("app.contoso.test", "NOERROR", [addr], "contoso.trafficmanager.test", 2)
    monkeypatch.setattr(trafficmanager, "query", lambda server, name, timeout_s=1.0: answer)
    status = {"endpoints": {"onprem": {"status": "Online"}, "azure": {"status": "Degraded"}}}
    (trafficmanager.config_dir(drill.name) / "status.json").write_text(json.dumps(status))

    drill.assert_resolves_to("app.contoso.test", "onprem")
    with pytest.raises(AssertionError) as err:
        drill.assert_resolves_to("app.contoso.test", "azure", within=0.3)
    (azure,) = drill.site_addresses("azure")
    msg = str(err.value)
    assert msg.startswith(f"app.contoso.test still resolved to {addr} (onprem) after 0.")
    assert f"; expected azure ({azure}). Endpoint statuses: " in msg
    assert f"onprem ({addr}) Online, azure ({azure}) Degraded" in msg
    with pytest.raises(UsageError, match="no Traffic Manager endpoint in site 'mars'"):
        drill.assert_resolves_to(None, "mars")


def _measured(acked: dict[str, float], alive: set[str], fault_at: float) -> plugin.Measurement:
    """A Measurement from a made-up log: writes acknowledged at the given times."""
    reqs = [
        {"op": "write", "ok": True, "id": i, "start": t - 0.01, "end": t, "address": "10.64.1.10"}
        for i, t in acked.items()
    ]
    return plugin.Measurement(
        fault_at=fault_at,
        requests=len(reqs),
        error_rate=0.0,
        rto=measure.rto(reqs, fault_at, set()),
        rpo=measure.rpo(reqs, fault_at, alive, 0.0),
        serving_address="10.64.100.20",
        recovery_addresses=frozenset({"10.64.100.20"}),
    )


def test_assert_rpo_within_explains_the_figure(drill: plugin.Drill) -> None:
    m = _measured({"a": 70.0, "b": 80.0, "c": 90.0, "d": 95.0}, {"a", "b"}, fault_at=100.0)
    assert drill.assert_rpo_within(20.0, m) is m
    with pytest.raises(AssertionError) as err:
        drill.assert_rpo_within(15.0, m)
    assert str(err.value) == (
        "RPO 20.0 s exceeds 15.0 s: the newest surviving acknowledged write was 20.0 s old at "
        "the fault; 2 of 4 acknowledged writes lost (first ids: c, d)"
    )
    nothing = _measured({}, set(), fault_at=100.0)
    with pytest.raises(AssertionError, match="no write was acknowledged before the fault"):
        drill.assert_rpo_within(15.0, nothing)


def test_assert_no_acknowledged_write_lost_names_the_lost_writes(drill: plugin.Drill) -> None:
    kept = _measured({"a": 70.0, "b": 80.0}, {"a", "b"}, fault_at=100.0)
    assert drill.assert_no_acknowledged_write_lost(kept) is kept
    lost = _measured({"a": 70.0, "b": 80.0, "c": 90.0}, {"a"}, fault_at=100.0)
    with pytest.raises(AssertionError) as err:
        drill.assert_no_acknowledged_write_lost(lost)
    assert str(err.value) == (
        "2 of 3 acknowledged writes were lost (not held by 10.64.100.20); the oldest was "
        "acknowledged 20.0 s before the fault; ids: b, c"
    )


def test_measuring_without_users_or_a_fault_says_what_is_missing(drill: plugin.Drill) -> None:
    with pytest.raises(AssertionError, match=r"start_users\(\) before the fault"):
        drill.measure()
    with pytest.raises(AssertionError, match="inject a fault or fail over first"):
        drill._fault_at(None)


def test_wait_until_names_what_it_waited_for() -> None:
    assert plugin.wait_until(lambda: [1], within=0.1, what="x") == [1]
    with pytest.raises(AssertionError) as err:
        plugin.wait_until(lambda: [], within=0.2, what="the replica to catch up", interval=0.05)
    assert re.fullmatch(
        r"the replica to catch up: not true after 0\.\d s \(last seen: \[\]\)", str(err.value)
    )


def test_lab_names_carry_the_worker_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert re.fullmatch(r"pt-gw0-[0-9a-f]{6}", plugin.lab_name())
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw7")
    names = {plugin.lab_name() for _ in range(20)}
    assert len(names) == 20 and all(re.fullmatch(r"pt-gw7-[0-9a-f]{6}", n) for n in names)
    assert all(naming.NAME_RE.match(n) for n in names)
