"""Identity without an engine: topology rules, hashes, LDIF, specs, secrets and the app's rules.

These prove bookkeeping only; tests/integration/test_identity.py proves logins and replication on
real slapd.
"""

from __future__ import annotations

import copy
import importlib.util
import stat
from http import HTTPStatus
from types import ModuleType
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from harness import cli, identity, lab, state
from harness import topology as t
from harness.components import directory, web
from harness.fake_runtime import FakeRuntime
from harness.plan import make_plan

from ..conftest import REPO, TOPOLOGIES, has, problems


def enterprise_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((TOPOLOGIES / "enterprise.yaml").read_text())
    return data


def with_identity(**changes: Any) -> dict[str, Any]:
    data = enterprise_data()
    data["identity"] = {**copy.deepcopy(data["identity"]), **changes}
    return data


# --- topology ----------------------------------------------------------------------------------


def test_enterprise_has_directory_and_replica() -> None:
    ident = t.load(TOPOLOGIES / "enterprise.yaml").identity
    assert ident is not None
    assert (ident.directory, ident.replica, ident.domain) == ("dc1", "dc2", "contoso.test")
    assert ident.users["carol"].disabled
    assert [u for u, s in ident.users.items() if s.synthetic]


@pytest.mark.parametrize(
    ("changes", "path", "fragment"),
    [
        ({"directory": "nohost"}, "identity.directory", "unknown host"),
        ({"directory": "web1"}, "identity.directory", "not a host of role directory"),
        ({"directory": "dc2", "replica": "dc1"}, "identity.directory", "primary site"),
        ({"directory": "dc2", "replica": "dc1"}, "identity.replica", "recovery site"),
        ({"groups": ["readers", "disabled"]}, "identity.groups[1]", "reserved"),
        ({"groups": ["readers", "readers"]}, "identity.groups[1]", "twice"),
        ({"write_groups": ["admins"]}, "identity.write_groups[0]", "unknown group"),
        ({"users": {"zed": {"groups": ["admins"]}}}, "identity.users.zed.groups[0]", "unknown"),
        ({"sync_interval_s": 0}, "identity.sync_interval_s", "greater than or equal to 1"),
        ({"domain": "not a domain"}, "identity.domain", "pattern"),
        ({"users": {"Bad Name": {}}}, "identity.users.Bad Name.[key]", "pattern"),
        ({"password": "x"}, "identity.password", "unknown key"),
    ],
)
def test_bad_identity_is_refused_with_its_path(
    changes: dict[str, Any], path: str, fragment: str
) -> None:
    probs = problems(with_identity(**changes))
    assert has(probs, path, fragment), probs


def test_user_password_is_not_a_topology_key() -> None:
    probs = problems(with_identity(users={"zed": {"password": "secret"}}))
    assert has(probs, "identity.users.zed.password", "unknown key")


def test_azure_timing_needs_azure_ad_connect_interval() -> None:
    data = with_identity(sync_interval_s=60)
    data["timing"] = "azure"
    assert has(problems(data), "identity.sync_interval_s", "1800")


# --- hashes and LDIF ----------------------------------------------------------------------------


def test_ssha_is_salted_and_checks() -> None:
    a, b = identity.ssha("pw"), identity.ssha("pw")
    assert a != b and a.startswith("{SSHA}")
    assert identity.check_ssha("pw", a) and not identity.check_ssha("other", a)


def test_seed_ldif_has_hashes_groups_and_disabled_members() -> None:
    topo = t.load(TOPOLOGIES / "enterprise.yaml")
    assert topo.identity is not None
    passwords = {u: f"clear-{u}" for u in [*topo.identity.users, identity.REPLICATOR]}
    ldif = identity.seed_ldif(topo.identity, passwords)
    assert "clear-" not in ldif
    entries = identity.parse_ldif(ldif)
    by_dn = {e["dn"][0]: e for e in entries}
    sfx = "dc=contoso,dc=test"
    assert by_dn[f"cn=disabled,ou=groups,{sfx}"]["memberUid"] == ["carol"]
    assert "alice" in by_dn[f"cn=editors,ou=groups,{sfx}"]["memberUid"]
    alice = by_dn[f"uid=alice,ou=people,{sfx}"]
    assert identity.check_ssha("clear-alice", alice["userPassword"][0])
    assert f"cn=heartbeat,{sfx}" in by_dn and f"cn=replicator,{sfx}" in by_dn


def test_syncrepl_setting_is_refresh_only_with_the_interval() -> None:
    assert identity.interval(2) == "00:00:00:02"
    assert identity.interval(1800) == "00:00:30:00"
    assert identity.interval(90061) == "01:01:01:01"
    ldif = identity.syncrepl_ldif("dc=contoso,dc=test", "10.64.4.10", 1800, "pw")
    assert "type=refreshOnly" in ldif and "interval=00:00:30:00" in ldif
    assert "provider=ldap://10.64.4.10:389" in ldif


def test_parse_ldif_decodes_base64_values() -> None:
    text = "dn: cn=x,dc=y\ndescription:: aMOpbGxv\ncn: x\n\ndn: cn=z,dc=y\n"
    assert identity.parse_ldif(text) == [
        {"dn": ["cn=x,dc=y"], "description": ["héllo"], "cn": ["x"]},
        {"dn": ["cn=z,dc=y"]},
    ]


def test_csn_time() -> None:
    assert identity.csn_time("19700101000010.500000Z#000000#000#000000") == 10.5


# --- specs, app env and secrets ----------------------------------------------------------------


def test_app_env_follows_the_site() -> None:
    topo = t.load(TOPOLOGIES / "enterprise.yaml")
    plan = make_plan(topo, "x", "r", topo.addressing.space)
    onprem = identity.app_env(plan, "onprem")
    azure = identity.app_env(plan, "azure")
    assert onprem["LDAP_URL"] == f"ldap://{plan.hosts['dc1'].address}:389"
    assert azure["LDAP_URL"] == f"ldap://{plan.hosts['dc2'].address}:389"
    assert azure["LDAP_BASE"] == "dc=contoso,dc=test"
    assert web.spec(plan, plan.hosts["sharepoint"]).env["LDAP_URL"] == onprem["LDAP_URL"]
    minimal = t.load(TOPOLOGIES / "minimal.yaml")
    mplan = make_plan(minimal, "y", "r", minimal.addressing.space)
    assert identity.app_env(mplan, "azure") == {}
    assert all("LDAP_URL" not in web.spec(mplan, hp).env for hp in mplan.hosts.values())


def test_directory_specs_carry_no_secret() -> None:
    topo = t.load(TOPOLOGIES / "enterprise.yaml")
    plan = make_plan(topo, "sx", "r", topo.addressing.space)
    dc1 = directory.spec(plan, plan.hosts["dc1"])
    dc2 = directory.spec(plan, plan.hosts["dc2"])
    assert dc1.env["DRILL_LDAP_HEARTBEAT_S"] == str(identity.HEARTBEAT_S)
    assert "DRILL_LDAP_HEARTBEAT_S" not in dc2.env
    for spec in (dc1, dc2):
        assert list(spec.binds.values()) == [f"{identity.CONTAINER_LDIF_DIR}:ro"]
        assert not any("PASSWORD" in k for k in spec.env)


def test_passwords_generated_once_kept_private() -> None:
    topo = t.load(TOPOLOGIES / "enterprise.yaml")
    plan = make_plan(topo, "pw-lab", "r", topo.addressing.space)
    first = identity.ensure_passwords(plan)
    assert identity.ensure_passwords(plan) == first
    assert len(set(first.values())) == len(first) == len(topo.identity.users) + 1  # type: ignore[union-attr]
    folder = state.lab_dir("pw-lab") / "identity"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "passwords.json").stat().st_mode) == 0o600
    state.remove("pw-lab")


def test_up_on_fake_runtime_applies_ldif_from_files_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lab, "_wait_ready", lambda *a, **k: None)
    rt = FakeRuntime()
    topo = t.load(TOPOLOGIES / "enterprise.yaml")
    lab.up(topo, "fakeid", runtime=rt)
    try:
        passwords = identity._load_passwords("fakeid")
        argv = " ".join(" ".join(cmd) for _, cmd in rt.execs)
        assert "ldapmodify" in argv and "olcSyncrepl" not in argv
        assert not [p for p in passwords.values() if p in argv]
        assert not list((state.lab_dir("fakeid") / "identity" / "ldif").rglob("*.ldif"))
        creds = identity.credentials("fakeid", "alice")
        assert creds.password == passwords["alice"] and "password" not in repr(creds)
    finally:
        lab.down("fakeid", runtime=rt)


def test_cli_identity_commands_need_a_lab() -> None:
    runner = CliRunner()
    for args in (["status"], ["user", "add", "zed"], ["user", "disable", "zed"]):
        res = runner.invoke(cli.main, ["identity", *args, "--name", "nolab"])
        assert res.exit_code == 2, res.output


# --- the app's login rules, with the directory answer stubbed ----------------------------------


def _app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("drill_app_auth", REPO / "containers/app/app.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_app_login_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app()
    auth = app.Auth("ldap://192.0.2.1:389", "dc=contoso,dc=test", "readers,editors", "editors")
    groups = {"ed": {"editors"}, "rd": {"readers"}, "off": {"readers", "disabled"}, "no": set()}
    monkeypatch.setattr(auth, "_groups", lambda user, pw: groups[user])

    def status(header: str | None, write: bool) -> int:
        try:
            auth.check(header, write)
        except app.Denied as d:
            return int(d.status)
        return 200

    assert status(_basic("ed", "x"), True) == 200
    assert status(_basic("rd", "x"), False) == 200
    assert status(_basic("rd", "x"), True) == HTTPStatus.FORBIDDEN
    assert status(_basic("off", "x"), False) == HTTPStatus.FORBIDDEN
    assert status(_basic("no", "x"), False) == HTTPStatus.FORBIDDEN
    assert status(None, False) == HTTPStatus.UNAUTHORIZED
    assert status("Bearer abc", False) == HTTPStatus.UNAUTHORIZED
    assert status(_basic("ed", ""), False) == HTTPStatus.UNAUTHORIZED
    assert status(_basic("e*)(uid=*", "x"), False) == HTTPStatus.UNAUTHORIZED
    assert app.basic_credentials(_basic("a", "b:c")) == ("a", "b:c")
