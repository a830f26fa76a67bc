"""Directory hosts: OpenLDAP (slapd), for AD on-prem and Azure AD in the recovery site.

With a topology ``identity`` section, the ``directory`` host becomes the syncrepl provider
(syncprov overlay, seeded with the topology's groups and users) and the ``replica`` host its
consumer, pulling over the tunnel every ``sync_interval_s``; see ``harness.identity`` for the
names inside the directory and where secrets live. Other directory hosts are plain slapd.
"""

from __future__ import annotations

from harness import identity
from harness.components.common import add_routes, base_spec, tcp_ready
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
    """Routes; then the provider is seeded, or the replica starts pulling from it."""
    add_routes(rt, plan, hp)
    role = identity.role_of(plan, hp.name)
    ident = plan.topology.identity
    if role is None or ident is None:
        return
    sfx = identity.suffix(ident.domain)
    identity.wait_ldapi(rt, hp)
    # A restarted container (an outage healed) keeps its configuration and data: set up once.
    if rt.exec(hp.container, ["test", "-f", CONFIGURED_MARK]).ok:
        return
    if role == "directory":
        passwords = identity.ensure_passwords(plan)
        identity.apply_ldif(rt, plan, hp, identity.provider_config_ldif(sfx), "syncprov setup")
        identity.apply_ldif(rt, plan, hp, identity.seed_ldif(ident, passwords), "seeding")
        _mark_configured(rt, hp)
        return
    identity.apply_ldif(rt, plan, hp, identity.consumer_config_ldif(sfx), "replica setup")
    # The package made its own base entry; syncrepl must bring the provider's (same DN, other
    # entryUUID), so the replica starts empty.
    res = rt.exec(hp.container, ["ldapdelete", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///", sfx])
    if not res.ok and res.exit_code != 32:
        raise HarnessError(f"emptying the replica {hp.name}: {res.output.strip()}")
    provider = plan.hosts[ident.directory].address
    password = identity.ensure_passwords(plan)[identity.REPLICATOR]
    ldif = identity.syncrepl_ldif(sfx, provider, ident.sync_interval_s, password)
    identity.apply_ldif(rt, plan, hp, ldif, "syncrepl setup")
    _mark_configured(rt, hp)


CONFIGURED_MARK = "/etc/ldap/.drill-configured"


def _mark_configured(rt: Runtime, hp: HostPlan) -> None:
    res = rt.exec(hp.container, ["touch", CONFIGURED_MARK])
    if not res.ok:
        raise HarnessError(f"marking {hp.name} configured: {res.output.strip()}")


def check_ready(rt: Runtime, plan: LabPlan, hp: HostPlan) -> str | None:
    """LDAP accepts connections; the provider is seeded; the replica has completed a sync."""
    why = tcp_ready(hp.address, LDAP_PORT)
    role = identity.role_of(plan, hp.name)
    ident = plan.topology.identity
    if why is not None or role is None or ident is None:
        return why
    sfx = identity.suffix(ident.domain)
    try:
        base = identity.search(rt, hp.container, sfx, "base", "(objectClass=*)", "contextCSN")
        people = identity.search(rt, hp.container, f"ou=people,{sfx}", "base", "(objectClass=*)")
    except (EngineError, HarnessError) as exc:
        return str(exc)
    if not people:
        return "not seeded yet" if role == "directory" else "no first sync yet"
    if not base or "contextCSN" not in base[0]:
        return "no contextCSN yet"
    return None
