"""Directory hosts: OpenLDAP (slapd), for AD on-prem and Azure AD in the recovery site.

With a topology ``identity`` section, the ``directory`` host becomes the syncrepl provider
(syncprov overlay, seeded with the topology's groups and users) and the ``replica`` host its
consumer, pulling over the tunnel every ``sync_interval_s``; see ``harness.identity`` for the
names inside the directory and where secrets live. Other directory hosts are plain slapd.
"""

from __future__ import annotations

import shlex

from harness import identity
from harness.components.common import base_spec, tcp_ready
from harness.errors import EngineError, HarnessError
from harness.plan import HostPlan, LabPlan
from harness.runtime import ContainerSpec, Runtime

LDAP_PORT = identity.LDAP_PORT
DEFAULT_DOMAIN = "contoso.test"


def spec(plan: LabPlan, hp: HostPlan) -> ContainerSpec:
    """slapd with the lab's suffix; identity hosts get the LDIF folder, the provider a heartbeat."""
    ident = plan.topology.identity
    role = identity.role_of(plan, hp.name)
    domain = ident.domain if ident is not None else DEFAULT_DOMAIN
    env = {"LDAP_DOMAIN": domain}
    if role is None:
        return base_spec(plan, hp, "directory", env=env)
    if role == "directory":
        env["DRILL_LDAP_HEARTBEAT_S"] = str(identity.HEARTBEAT_S)
        env["DRILL_LDAP_SUFFIX"] = identity.suffix(domain)
    binds = {str(identity.ldif_path(plan.lab, hp.name)): f"{identity.CONTAINER_LDIF_DIR}:ro"}
    return base_spec(plan, hp, "directory", env=env, binds=binds)


def prepare(plan: LabPlan, hp: HostPlan) -> None:
    """The LDIF folder (0700) and, for the on-prem directory, every password of the lab."""
    role = identity.role_of(plan, hp.name)
    if role is None:
        return
    identity.ldif_dir(plan.lab, hp.name)
    if role == "directory":
        identity.ensure_passwords(plan)


def configure(rt: Runtime, plan: LabPlan, hp: HostPlan) -> None:
    """The provider is seeded, or the replica starts pulling from it (routes are the
    container's own, see ``common.routes_env``).

    One exec does it all (each exec costs engine round trips, and `up` waits for this):
    waiting for slapd on ldapi, then, unless already done (a restarted container keeps its
    configuration and data), each LDIF step and the mark that it is done.
    """
    role = identity.role_of(plan, hp.name)
    ident = plan.topology.identity
    if role is None or ident is None:
        return
    sfx = identity.suffix(ident.domain)
    if role == "directory":
        passwords = identity.ensure_passwords(plan)
        ldifs = [identity.provider_config_ldif(sfx), identity.seed_ldif(ident, passwords)]
        whats = ["syncprov setup", "seeding"]
    else:
        provider = plan.hosts[ident.directory].address
        password = identity.ensure_passwords(plan)[identity.REPLICATOR]
        ldifs = [
            identity.consumer_config_ldif(sfx),
            identity.syncrepl_ldif(sfx, provider, ident.sync_interval_s, password),
        ]
        whats = ["replica setup", "syncrepl setup"]
    with identity.ldif_files(plan, hp, ldifs) as paths:
        steps = [_ldapmodify(what, path) for what, path in zip(whats, paths, strict=True)]
        if role == "replica":
            # The package made its own base entry; syncrepl must bring the provider's (same
            # DN, other entryUUID), so the replica starts empty (32: already empty).
            delete = f"ldapdelete {LDAPI} {shlex.quote(sfx)}"
            steps.insert(1, _step("emptying the replica", delete, ok_codes=(0, 32)))
        script = "\n".join(
            [
                _WAIT_LDAPI,
                f"[ -f {CONFIGURED_MARK} ] && exit 0",
                *steps,
                f"touch {CONFIGURED_MARK}",
                # A replica then waits here for its first sync: the readiness check would
                # otherwise poll for it with an exec each time (about one a second).
                _WAIT_FIRST_SYNC.format(people=shlex.quote(f"ou=people,{sfx}"))
                if role == "replica"
                else "",
            ]
        )
        res = rt.exec(hp.container, ["sh", "-c", script])
    if not res.ok:
        # ldapmodify reports the entry and the error, never attribute values.
        raise HarnessError(f"configuring directory {hp.name}: {res.output.strip()[-600:]}")


CONFIGURED_MARK = "/etc/ldap/.drill-configured"
LDAPI = "-Q -Y EXTERNAL -H ldapi:///"
_WAIT_LDAPI = f"""n=0
until ldapsearch {LDAPI} -b '' -s base 1.1 >/dev/null 2>&1; do
  n=$((n+1)); [ $n -lt 1200 ] || {{ echo "slapd did not answer on ldapi:/// in 60s"; exit 3; }}
  sleep 0.05
done"""
_WAIT_FIRST_SYNC = f"""n=0
until ldapsearch {LDAPI} -b {{people}} -s base 1.1 >/dev/null 2>&1; do
  n=$((n+1)); [ $n -lt 600 ] || exit 0  # 30 s: the readiness check says why
  sleep 0.05
done"""


def _ldapmodify(what: str, path: str) -> str:
    return _step(what, f"ldapmodify {LDAPI} -f {shlex.quote(path)}")


def _step(what: str, cmd: str, ok_codes: tuple[int, ...] = (0,)) -> str:
    """A script line that runs ``cmd`` and stops the script, naming ``what``, if it fails."""
    ok = " || ".join(f"[ $rc -eq {c} ]" for c in ok_codes)
    return f"{cmd}; rc=$?; {{ {ok}; }} || {{ echo {shlex.quote(what)}: exited $rc; exit 4; }}"


def check_ready(rt: Runtime, plan: LabPlan, hp: HostPlan) -> str | None:
    """LDAP accepts connections; the provider is seeded; the replica has completed a sync."""
    why = tcp_ready(hp.address, LDAP_PORT)
    role = identity.role_of(plan, hp.name)
    ident = plan.topology.identity
    if why is not None or role is None or ident is None:
        return why
    sfx = identity.suffix(ident.domain)
    # One exec per poll while waiting for the seed or the first sync: each costs the engine.
    try:
        people = identity.search(rt, hp.container, f"ou=people,{sfx}", "base", "(objectClass=*)")
        if not people:
            return "not seeded yet" if role == "directory" else "no first sync yet"
        base = identity.search(rt, hp.container, sfx, "base", "(objectClass=*)", "contextCSN")
    except (EngineError, HarnessError) as exc:
        return str(exc)
    if not base or "contextCSN" not in base[0]:
        return "no contextCSN yet"
    return None
