"""Topology loading: the shipped files are valid, and bad input is refused with its path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from harness import cli
from harness import topology as t
from harness.errors import TopologyError

from ..conftest import TOPOLOGIES, has, problems


def base() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((TOPOLOGIES / "minimal.yaml").read_text())
    return data


@pytest.mark.parametrize("name", ["minimal", "enterprise"])
def test_shipped_topologies_are_valid(name: str) -> None:
    topo = t.load(TOPOLOGIES / f"{name}.yaml")
    assert topo.name == name
    assert topo.primary_site == "onprem" and topo.recovery_site == "azure"


def test_enterprise_models_the_seed_design() -> None:
    topo = t.load(TOPOLOGIES / "enterprise.yaml")
    roles = {n: h.role for _, n, h in topo.hosts()}
    assert roles["sharepoint"] == roles["crm"] == "app"
    assert roles["web1"] == roles["web2"] == "web"
    assert roles["dc1"] == roles["dc2"] == "directory"
    assert roles["storage"] == "storage"
    assert topo.traffic_manager is not None and topo.protection is not None
    assert "failover" in topo.recovery_plans


def test_models_are_frozen() -> None:
    topo = t.load(TOPOLOGIES / "minimal.yaml")
    with pytest.raises(Exception, match="frozen"):
        topo.name = "other"  # type: ignore[misc]


# --- bad input: every case names the path inside the file ------------------------------------


def test_unknown_top_level_key() -> None:
    d = base()
    d["sitez"] = {}
    assert has(problems(d), "sitez", "unknown key")


def test_unknown_nested_key() -> None:
    d = base()
    d["sites"]["onprem"]["hosts"]["web1"]["colour"] = "blue"
    assert has(problems(d), "sites.onprem.hosts.web1.colour", "unknown key")


def test_wrong_type() -> None:
    d = base()
    d["tunnel"]["mtu"] = "big"
    assert any(p == "tunnel.mtu" for p, _ in problems(d))


def test_invalid_address() -> None:
    d = base()
    d["sites"]["onprem"]["hosts"]["web1"]["address"] = "10.64.1.999"
    assert any(p == "sites.onprem.hosts.web1.address" for p, _ in problems(d))


def test_missing_required_key() -> None:
    d = base()
    del d["sites"]["onprem"]["hosts"]["web1"]["role"]
    assert has(problems(d), "sites.onprem.hosts.web1.role", "missing")


def test_dangling_subnet_reference() -> None:
    d = base()
    d["sites"]["onprem"]["hosts"]["web1"]["subnet"] = "nosuch"
    assert has(problems(d), "sites.onprem.hosts.web1.subnet", "unknown subnet")


def test_overlapping_subnets() -> None:
    d = base()
    d["sites"]["azure"]["subnets"]["frontend"] = "10.64.1.128/25"
    assert has(problems(d), "sites.azure.subnets.frontend", "overlaps")


def test_address_outside_its_subnet() -> None:
    d = base()
    d["sites"]["onprem"]["hosts"]["web1"]["address"] = "10.64.2.77"
    assert has(problems(d), "sites.onprem.hosts.web1.address", "not inside")


def test_duplicate_address() -> None:
    d = base()
    d["sites"]["azure"]["hosts"]["storage"]["address"] = "10.64.2.10"  # web1's recovery address
    assert any("already used" in m for _, m in problems(d))


def test_duplicate_host_name_across_sites() -> None:
    d = base()
    d["sites"]["azure"]["hosts"]["web1"] = {
        "role": "web",
        "subnet": "frontend",
        "address": "10.64.2.60",
    }
    assert has(problems(d), "sites.azure.hosts.web1", "already used")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    f = tmp_path / "dup.yaml"
    f.write_text("name: a\nname: b\n")
    with pytest.raises(TopologyError, match="duplicate key 'name'"):
        t.load(f)


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: minimal\nsites: [unclosed\n")
    with pytest.raises(TopologyError) as info:
        t.load(f)
    assert info.value.problems[0].path.startswith("line ")
    assert str(f) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="file not found"):
        t.load(tmp_path / "nope.yaml")


def test_not_a_mapping() -> None:
    assert problems(["a", "list"]) == [("", "a topology is a mapping of keys")]


def test_duplicate_priorities() -> None:
    d = base()
    d["traffic_manager"]["endpoints"]["azure"]["priority"] = 1
    assert has(problems(d), "traffic_manager.endpoints.azure.priority", "already used")


def test_unknown_endpoint_target() -> None:
    d = base()
    d["traffic_manager"]["endpoints"]["azure"]["target"] = "ghost"
    assert has(problems(d), "traffic_manager.endpoints.azure.target", "unknown host")


def test_tcp_monitor_with_path() -> None:
    d = base()
    d["traffic_manager"]["monitor"]["protocol"] = "TCP"
    assert has(problems(d), "traffic_manager.monitor.path", "only allowed with HTTP")


def test_azure_timing_rejects_fast_interval() -> None:
    d = base()
    d["timing"] = "azure"
    probs = problems(d)
    assert has(probs, "traffic_manager.monitor.interval_s", "10 or 30")
    assert has(probs, "protection.policy.crash_consistent_s", "300")


def test_too_many_headers_and_ranges() -> None:
    d = base()
    d["traffic_manager"]["monitor"]["headers"] = {f"X-H{i}": "v" for i in range(9)}
    d["traffic_manager"]["monitor"]["expected_status"] = [f"2{i:02d}" for i in range(9)]
    probs = problems(d)
    assert has(probs, "traffic_manager.monitor.headers", "at most 8")
    assert has(probs, "traffic_manager.monitor.expected_status", "at most 8")


def test_disk_size_not_multiple_of_512() -> None:
    d = base()
    d["sites"]["onprem"]["hosts"]["web1"]["disks"] = [{"name": "data", "size": 10_000_001}]
    assert any("multiple of 512" in m for p, m in problems(d) if p.startswith("sites.onprem"))


def test_protected_host_without_placement() -> None:
    d = base()
    del d["sites"]["onprem"]["hosts"]["web1"]["recovery"]
    probs = problems(d)
    assert has(probs, "protection.hosts[0]", "no recovery placement")


def test_development_key_refused() -> None:
    d = base()
    d["sites"]["azure"]["hosts"]["storage"]["storage"]["key"] = (
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    )
    assert any("development key" in m for _, m in problems(d))


def test_bad_lab_space() -> None:
    d = base()
    d["addressing"]["space"] = "10.64.0.0/20"
    assert has(problems(d), "addressing.space", "/16")


def test_every_problem_is_reported_at_once() -> None:
    d = base()
    d["sites"]["onprem"]["hosts"]["web1"]["subnet"] = "nosuch"
    d["traffic_manager"]["endpoints"]["azure"]["priority"] = 1
    d["protection"]["hosts"] = ["web1", "ghost"]
    assert len(problems(d)) >= 3


def test_recovery_plan_groups_limited_to_seven() -> None:
    d = base()
    d["recovery_plans"]["failover"]["groups"] = [{"hosts": ["web1"]}] * 8
    assert any(p == "recovery_plans.failover.groups" for p, _ in problems(d))


# --- CLI ------------------------------------------------------------------------------------


def test_cli_validate_ok() -> None:
    res = CliRunner().invoke(cli.main, ["validate", str(TOPOLOGIES / "minimal.yaml")])
    assert res.exit_code == 0, res.output
    assert "valid" in res.output


def test_cli_validate_bad_exits_2_and_lists_paths(tmp_path: Path) -> None:
    d = base()
    d["sites"]["onprem"]["hosts"]["web1"]["subnet"] = "nosuch"
    d["bogus"] = 1
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d))
    res = CliRunner().invoke(cli.main, ["validate", "--json", str(f)])
    assert res.exit_code == 2
    out = json.loads(res.output)
    paths = {p["path"] for p in out[0]["problems"]}
    assert "bogus" in paths


def test_cli_schema_is_json_schema() -> None:
    res = CliRunner().invoke(cli.main, ["schema"])
    assert res.exit_code == 0
    schema = json.loads(res.output)
    assert schema["title"] == "drill topology"
    assert "sites" in schema["properties"]
    assert schema["additionalProperties"] is False


def test_unmodified_base_is_valid() -> None:
    t.parse(copy.deepcopy(base()))
