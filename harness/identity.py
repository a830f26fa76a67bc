"""Identity: the on-prem directory, its replica in the recovery site, users and their passwords.

AD on-prem is OpenLDAP (slapd) on the topology's ``identity.directory`` host. Azure AD is a second
slapd on ``identity.replica`` that pulls every change over the tunnel (syncrepl, ``refreshOnly``
every ``sync_interval_s``, as Azure AD Connect's scheduler does every 30 minutes). Apps check a
login by an LDAP bind against their own site's directory (``app_env``), so after failover the
recovery copies log users in against the replica, even with the on-prem site gone.

Names inside a directory (the suffix follows the domain: contoso.test -> dc=contoso,dc=test)::

    uid=<user>,ou=people,<suffix>    a user (inetOrgPerson), password as a salted {SSHA} hash
    cn=<group>,ou=groups,<suffix>    a group (posixGroup, members by memberUid)
    cn=disabled,ou=groups,<suffix>   its members are disabled accounts: apps answer them 403
    cn=replicator,<suffix>           the account the replica binds as (may read passwords)
    cn=heartbeat,<suffix>            rewritten every HEARTBEAT_S on-prem (by the container's
                                     start script), so the replica's contextCSN shows its lag

Secrets stay on the harness host, in ``<lab state>/identity/`` (folder 0700, files 0600)::

    passwords.json    {user: password}; the replication account's is under ``@replicator``
    ldif/<host>/      LDIF handed to one directory container, bind-mounted read-only at
                      /run/drill-identity; each file is removed as soon as it is applied

No password appears on a command line, in an environment variable or in a log: slapd receives
salted hashes in files, ``ldapmodify -f`` reads them; only the replica's syncrepl setting holds
the replication account's password (in its cn=config, readable by root only), as syncrepl's
simple bind needs. Status and user changes run ``ldapsearch``/``ldapmodify`` as root over the
container's ``ldapi:///`` socket (SASL EXTERNAL), so the harness holds no directory admin password.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import state
from harness.errors import EngineError, HarnessError, UsageError
from harness.plan import HostPlan, LabPlan
from harness.runtime import Runtime
from harness.topology import Identity

LDAP_PORT = 389
HEARTBEAT_S = 1
"""How often the on-prem directory rewrites cn=heartbeat (a change for the replica to pull)."""
CONTAINER_LDIF_DIR = "/run/drill-identity"
REPLICATOR = "@replicator"
"""The key of the replication account's password in passwords.json (not a valid user name)."""
DISABLED_GROUP = "disabled"
ROOT_DN = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"
"""Root in the container, over ldapi:/// with SASL EXTERNAL: the databases' rootdn."""
USER_RE = re.compile(r"^[a-z][a-z0-9._-]{0,31}$")
_LDAPI = ("-Q", "-Y", "EXTERNAL", "-H", "ldapi:///")
_GID_BASE = 10000


# --- names -----------------------------------------------------------------------------------


def suffix(domain: str) -> str:
    """The directory suffix of a DNS domain: contoso.test -> dc=contoso,dc=test."""
    return ",".join(f"dc={part}" for part in domain.split("."))


def user_dn(sfx: str, user: str) -> str:
    """A user's DN."""
    return f"uid={user},ou=people,{sfx}"


def group_dn(sfx: str, group: str) -> str:
    """A group's DN."""
    return f"cn={group},ou=groups,{sfx}"


def replicator_dn(sfx: str) -> str:
    """The DN the replica binds as."""
    return f"cn=replicator,{sfx}"


def _identity(plan: LabPlan) -> Identity:
    ident = plan.topology.identity
    if ident is None:
        raise UsageError(f"lab {plan.lab!r}: its topology has no identity section")
    return ident


def role_of(plan: LabPlan, host: str) -> str | None:
    """``directory`` or ``replica`` for the identity hosts, else None."""
    ident = plan.topology.identity
    if ident is None:
        return None
    if host == ident.directory:
        return "directory"
    if host == ident.replica:
        return "replica"
    return None


def directory_host(plan: LabPlan, site: str) -> HostPlan | None:
    """The directory that serves logins in ``site`` (on-prem: the directory; recovery: replica)."""
    ident = plan.topology.identity
    if ident is None:
        return None
    for name in (ident.directory, ident.replica):
        if name is not None and plan.hosts[name].site == site:
            return plan.hosts[name]
    return None


def app_env(plan: LabPlan, site: str | None) -> dict[str, str]:
    """Environment for an app host placed in ``site``: check logins against that site's directory.

    Empty when the topology has no identity or the site has no directory: the app then serves
    without authentication. Failover uses this for the recovery copies of the apps.
    """
    ident = plan.topology.identity
    dc = directory_host(plan, site) if site else None
    if ident is None or dc is None:
        return {}
    return {
        "LDAP_URL": f"ldap://{dc.address}:{LDAP_PORT}",
        "LDAP_BASE": suffix(ident.domain),
        "LDAP_READ_GROUPS": ",".join(ident.read_groups),
        "LDAP_WRITE_GROUPS": ",".join(ident.write_groups),
    }


# --- passwords -------------------------------------------------------------------------------


def ssha(password: str, salt: bytes | None = None) -> str:
    """A salted SHA-1 hash in slapd's ``{SSHA}`` form: base64(sha1(password + salt) + salt)."""
    salt = salt if salt is not None else os.urandom(8)
    digest = hashlib.sha1(password.encode("utf-8") + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def check_ssha(password: str, hashed: str) -> bool:
    """Whether ``password`` matches an ``{SSHA}`` hash."""
    if not hashed.startswith("{SSHA}"):
        return False
    raw = base64.b64decode(hashed[6:])
    return ssha(password, raw[20:]) == hashed


def new_password() -> str:
    """A random password (URL-safe characters, 144 bits)."""
    return secrets.token_urlsafe(18)


def secrets_dir(lab: str) -> Path:
    """The lab's identity folder on the harness host (0700)."""
    path = state.lab_dir(lab) / "identity"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _passwords_file(lab: str) -> Path:
    return secrets_dir(lab) / "passwords.json"


def _load_passwords(lab: str) -> dict[str, str]:
    try:
        data = json.loads(_passwords_file(lab).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {str(k): str(v) for k, v in data.items()}


def _save_password(lab: str, user: str, password: str) -> None:
    data = _load_passwords(lab)
    data[user] = password
    state.write_json_atomic(_passwords_file(lab), data, mode=0o600)


def ensure_passwords(plan: LabPlan) -> dict[str, str]:
    """Every seeded user's password and the replication account's, generated once per lab."""
    ident = _identity(plan)
    data = _load_passwords(plan.lab)
    for user in [*ident.users, REPLICATOR]:
        data.setdefault(user, new_password())
    state.write_json_atomic(_passwords_file(plan.lab), data, mode=0o600)
    return data


@dataclass(frozen=True)
class Credentials:
    """A user's login. ``repr`` hides the password so that it never lands in a log by accident."""

    user: str
    password: str = field(repr=False)
    dn: str

    @property
    def basic(self) -> tuple[str, str]:
        """``(user, password)`` for HTTP Basic auth (``requests``' ``auth=``)."""
        return (self.user, self.password)


def credentials(lab: str, user: str) -> Credentials:
    """The login of ``user`` in lab ``lab``; UsageError if the lab never made one for it."""
    record = state.load(lab)
    if record is None:
        raise UsageError(f"no lab named {lab!r} is up (see `drill ls`)")
    ident = record.load_topology().identity
    if ident is None:
        raise UsageError(f"lab {lab!r}: its topology has no identity section")
    password = _load_passwords(lab).get(user)
    if password is None or user == REPLICATOR:
        raise UsageError(f"lab {lab!r} has no user {user!r}")
    return Credentials(user, password, user_dn(suffix(ident.domain), user))


def synthetic_users(lab: str) -> list[Credentials]:
    """The logins drills' synthetic users use (topology users with ``synthetic: true``)."""
    record = state.load(lab)
    if record is None:
        raise UsageError(f"no lab named {lab!r} is up (see `drill ls`)")
    ident = record.load_topology().identity
    if ident is None:
        return []
    return [credentials(lab, u) for u, spec in ident.users.items() if spec.synthetic]


# --- LDIF (pure) -----------------------------------------------------------------------------


def _entry(dn: str, attrs: Sequence[tuple[str, str]], changetype: str = "add") -> str:
    lines = [f"dn: {dn}", f"changetype: {changetype}"]
    lines += [f"{k}: {v}" for k, v in attrs]
    return "\n".join(lines) + "\n"


def _acl(sfx: str) -> list[tuple[str, str]]:
    """Who may do what: the replica reads everything, users read all but passwords."""
    rep = replicator_dn(sfx)
    return [
        (
            "olcAccess",
            f'{{0}}to attrs=userPassword by self write by dn.exact="{rep}" read '
            "by anonymous auth by * none",
        ),
        ("olcAccess", f'{{1}}to * by dn.exact="{rep}" read by users read by anonymous auth'),
    ]


def _database_ldif(sfx: str) -> str:
    """rootdn = root over ldapi (no admin password), ACLs, indexes syncrepl needs."""
    parts = [
        "dn: olcDatabase={1}mdb,cn=config",
        "changetype: modify",
        "replace: olcRootDN",
        f"olcRootDN: {ROOT_DN}",
        "-",
        "replace: olcRootPW",
        "-",
        "replace: olcAccess",
        *[f"{k}: {v}" for k, v in _acl(sfx)],
        "-",
        "replace: olcLimits",
        f'olcLimits: dn.exact="{replicator_dn(sfx)}" size=unlimited time=unlimited',
        "-",
        "add: olcDbIndex",
        "olcDbIndex: entryUUID eq",
        "olcDbIndex: entryCSN eq",
        "-",
    ]
    return "\n".join(parts) + "\n"


def provider_config_ldif(sfx: str) -> str:
    """cn=config changes that make a slapd the on-prem directory: the syncprov overlay."""
    module = _entry(
        "cn=module{0},cn=config",
        [("add", "olcModuleLoad"), ("olcModuleLoad", "syncprov")],
        "modify",
    )
    overlay = _entry(
        "olcOverlay=syncprov,olcDatabase={1}mdb,cn=config",
        [
            ("objectClass", "olcOverlayConfig"),
            ("objectClass", "olcSyncProvConfig"),
            ("olcOverlay", "syncprov"),
            ("olcSpCheckpoint", "100 10"),
            ("olcSpSessionlog", "1000"),
        ],
    )
    return "\n".join([module, _database_ldif(sfx), overlay])


def interval(seconds: int) -> str:
    """syncrepl's ``dd:hh:mm:ss`` form of a number of seconds."""
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{d:02d}:{h:02d}:{m:02d}:{s:02d}"


def consumer_config_ldif(sfx: str) -> str:
    """cn=config changes that prepare a slapd to be the replica (before its syncrepl)."""
    return _database_ldif(sfx)


def syncrepl_ldif(sfx: str, provider: str, sync_interval_s: int, replicator_password: str) -> str:
    """The replica's syncrepl: pull from ``provider`` every interval, retry every second."""
    setting = (
        f"rid=001 provider=ldap://{provider}:{LDAP_PORT} bindmethod=simple "
        f'binddn="{replicator_dn(sfx)}" credentials={replicator_password} '
        f'searchbase="{sfx}" scope=sub schemachecking=on type=refreshOnly '
        f'interval={interval(sync_interval_s)} retry="1 +" timeout=5 network-timeout=5'
    )
    return _entry(
        "olcDatabase={1}mdb,cn=config",
        [("add", "olcSyncrepl"), ("olcSyncrepl", setting)],
        "modify",
    )


def _user_attrs(user: str, display: str, hashed: str) -> list[tuple[str, str]]:
    return [
        ("objectClass", "inetOrgPerson"),
        ("uid", user),
        ("cn", display or user),
        ("sn", user),
        ("displayName", display or user),
        ("userPassword", hashed),
    ]


def seed_ldif(ident: Identity, passwords: Mapping[str, str]) -> str:
    """The on-prem directory's first content: OUs, groups, users, replication account, heartbeat."""
    sfx = suffix(ident.domain)
    entries = [
        _entry(f"ou=people,{sfx}", [("objectClass", "organizationalUnit"), ("ou", "people")]),
        _entry(f"ou=groups,{sfx}", [("objectClass", "organizationalUnit"), ("ou", "groups")]),
        _entry(
            replicator_dn(sfx),
            [
                ("objectClass", "organizationalRole"),
                ("objectClass", "simpleSecurityObject"),
                ("cn", "replicator"),
                ("userPassword", ssha(passwords[REPLICATOR])),
            ],
        ),
        _entry(
            f"cn=heartbeat,{sfx}",
            [("objectClass", "device"), ("cn", "heartbeat"), ("description", "0")],
        ),
    ]
    for user, spec in ident.users.items():
        attrs = _user_attrs(user, spec.display_name, ssha(passwords[user]))
        entries.append(_entry(user_dn(sfx, user), attrs))
    groups = {g: [u for u, s in ident.users.items() if g in s.groups] for g in ident.groups}
    groups[DISABLED_GROUP] = [u for u, s in ident.users.items() if s.disabled]
    for i, (group, members) in enumerate(groups.items()):
        gid = _GID_BASE - 1 if group == DISABLED_GROUP else _GID_BASE + i
        attrs = [("objectClass", "posixGroup"), ("cn", group), ("gidNumber", str(gid))]
        attrs += [("memberUid", m) for m in members]
        entries.append(_entry(group_dn(sfx, group), attrs))
    return "\n".join(entries)


def _members_ldif(sfx: str, user: str, add: Iterable[str], remove: Iterable[str]) -> list[str]:
    out = [
        _entry(group_dn(sfx, g), [("add", "memberUid"), ("memberUid", user)], "modify") for g in add
    ]
    out += [
        _entry(group_dn(sfx, g), [("delete", "memberUid"), ("memberUid", user)], "modify")
        for g in remove
    ]
    return out


# --- talking to a directory container ----------------------------------------------------------


def ldif_path(lab: str, host: str) -> Path:
    """The harness-host folder bind-mounted into directory ``host`` at CONTAINER_LDIF_DIR."""
    return state.lab_dir(lab) / "identity" / "ldif" / host


def ldif_dir(lab: str, host: str) -> Path:
    """``ldif_path``, created (0700) if missing."""
    (secrets_dir(lab) / "ldif").mkdir(exist_ok=True, mode=0o700)
    path = ldif_path(lab, host)
    path.mkdir(exist_ok=True, mode=0o700)
    return path


@contextlib.contextmanager
def ldif_files(plan: LabPlan, hp: HostPlan, ldifs: Sequence[str]) -> Iterator[list[str]]:
    """Each LDIF in a 0600 file of the host's bind mount; their paths in the container.

    The files are removed when the block ends (they may hold password hashes).
    """
    folder = ldif_dir(plan.lab, hp.name)
    made: list[Path] = []
    try:
        for ldif in ldifs:
            path = folder / f"{secrets.token_hex(8)}.ldif"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            made.append(path)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(ldif)
        yield [f"{CONTAINER_LDIF_DIR}/{p.name}" for p in made]
    finally:
        for path in made:
            path.unlink(missing_ok=True)


def apply_ldif(rt: Runtime, plan: LabPlan, hp: HostPlan, ldif: str, what: str) -> None:
    """Apply LDIF as root over ldapi: written to a 0600 file in the bind mount, then removed."""
    with ldif_files(plan, hp, [ldif]) as (path,):
        res = rt.exec(hp.container, ["ldapmodify", *_LDAPI, "-f", path])
    if not res.ok:
        # ldapmodify reports the entry and the error, never attribute values.
        raise HarnessError(f"{what} on {hp.name}: ldapmodify exited {res.exit_code}: {res.output}")


def search(
    rt: Runtime, container: str, base: str, scope: str, filt: str, *attrs: str
) -> list[dict[str, list[str]]]:
    """Entries found as root over ldapi, as ``{attr: [values], "dn": [dn]}``; EngineError or
    HarnessError when the directory does not answer. ``No such object`` gives no entries."""
    cmd = ["ldapsearch", *_LDAPI, "-LLL", "-o", "ldif-wrap=no", "-b", base, "-s", scope, filt]
    res = rt.exec(container, [*cmd, *attrs])
    if res.exit_code == 32:  # noSuchObject: the base is not there (yet)
        return []
    if not res.ok:
        raise HarnessError(f"ldapsearch in {container} exited {res.exit_code}: {res.output[-300:]}")
    return parse_ldif(res.output)


def parse_ldif(text: str) -> list[dict[str, list[str]]]:
    """Entries of unwrapped LDIF (``ldapsearch -LLL -o ldif-wrap=no``); base64 values decoded."""
    entries: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        if not line.strip():
            current = None
            continue
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        if value.startswith(":"):
            value = base64.b64decode(value[1:].strip()).decode("utf-8", "replace")
        else:
            value = value.strip()
        if current is None:
            current = {}
            entries.append(current)
        current.setdefault(key, []).append(value)
    return entries


# --- status ----------------------------------------------------------------------------------


def csn_time(csn: str) -> float:
    """The time (epoch seconds) of a CSN like ``20261204101530.123456Z#000000#000#000000``."""
    stamp = csn.split("#", 1)[0]
    return datetime.strptime(stamp, "%Y%m%d%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class DirectoryStatus:
    """One directory as the harness sees it now.

    ``synced_to``: the newest change it holds (its contextCSN's time); the on-prem heartbeat
    makes that, on the replica, the time of its last successful sync within HEARTBEAT_S.
    ``lag_s`` (replica only): the on-prem directory's newest change minus the replica's, or,
    when the on-prem directory does not answer, now minus the replica's; it grows while the
    replica cannot sync.
    """

    host: str
    site: str | None
    role: str  # directory | replica
    reachable: bool
    entries: int | None = None
    users: int | None = None
    context_csn: str | None = None
    synced_to: float | None = None
    lag_s: float | None = None
    sync_interval_s: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["synced_to_iso"] = (
            datetime.fromtimestamp(self.synced_to, UTC).isoformat(timespec="milliseconds")
            if self.synced_to is not None
            else None
        )
        return data


def _probe(rt: Runtime, plan: LabPlan, hp: HostPlan, role: str) -> DirectoryStatus:
    sfx = suffix(_identity(plan).domain)
    try:
        base = search(rt, hp.container, sfx, "base", "(objectClass=*)", "contextCSN")
        everything = search(rt, hp.container, sfx, "sub", "(objectClass=*)", "1.1")
        people = [e for e in everything if e["dn"][0].endswith(f",ou=people,{sfx}")]
    except (EngineError, HarnessError) as exc:
        return DirectoryStatus(hp.name, hp.site, role, reachable=False, error=str(exc)[:300])
    csns = base[0].get("contextCSN", []) if base else []
    csn = max(csns) if csns else None
    return DirectoryStatus(
        hp.name,
        hp.site,
        role,
        reachable=True,
        entries=len(everything),
        users=len(people),
        context_csn=csn,
        synced_to=csn_time(csn) if csn else None,
    )


def status(lab: str, *, runtime: Runtime | None = None) -> list[DirectoryStatus]:
    """The on-prem directory and the replica: entries, contextCSN, last sync, lag, reachable."""
    from harness import lab as lab_mod

    ref = lab_mod.open_lab(lab, runtime=runtime)
    plan, rt = ref.plan, ref.rt
    ident = _identity(plan)
    hosts = [(plan.hosts[ident.directory], "directory")]
    if ident.replica is not None:
        hosts.append((plan.hosts[ident.replica], "replica"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = list(pool.map(lambda h: _probe(rt, plan, *h), hosts))
    now = time.time()
    provider = found[0]
    out = [provider]
    for st in found[1:]:
        lag = None
        if st.synced_to is not None:
            ref_time = provider.synced_to if provider.synced_to is not None else now
            lag = round(max(0.0, ref_time - st.synced_to), 3)
        out.append(
            DirectoryStatus(
                **{**asdict(st), "lag_s": lag, "sync_interval_s": ident.sync_interval_s}
            )
        )
    return out


# --- users -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserInfo:
    """A user as one directory has it."""

    name: str
    groups: tuple[str, ...]
    disabled: bool


def users(lab: str, site: str | None = None, *, runtime: Runtime | None = None) -> list[UserInfo]:
    """The users of the directory in ``site`` (default: on-prem) with their groups."""
    from harness import lab as lab_mod

    ref = lab_mod.open_lab(lab, runtime=runtime)
    site = site or ref.plan.topology.primary_site
    dc = directory_host(ref.plan, site)
    if dc is None:
        raise UsageError(f"site {site!r} has no directory")
    return _users(ref.rt, ref.plan, dc)


def _users(rt: Runtime, plan: LabPlan, dc: HostPlan) -> list[UserInfo]:
    sfx = suffix(_identity(plan).domain)
    people = search(
        rt, dc.container, f"ou=people,{sfx}", "one", "(objectClass=inetOrgPerson)", "uid"
    )
    groups = search(
        rt, dc.container, f"ou=groups,{sfx}", "one", "(objectClass=posixGroup)", "cn", "memberUid"
    )
    member_of: dict[str, list[str]] = {}
    for g in groups:
        for m in g.get("memberUid", []):
            member_of.setdefault(m, []).append(g["cn"][0])
    out = []
    for p in people:
        name = p["uid"][0]
        gs = member_of.get(name, [])
        out.append(
            UserInfo(
                name, tuple(sorted(g for g in gs if g != DISABLED_GROUP)), DISABLED_GROUP in gs
            )
        )
    return sorted(out, key=lambda u: u.name)


def _on_prem(lab: str, runtime: Runtime | None) -> tuple[Runtime, LabPlan, HostPlan]:
    from harness import lab as lab_mod

    ref = lab_mod.open_lab(lab, runtime=runtime)
    ident = _identity(ref.plan)
    return ref.rt, ref.plan, ref.plan.hosts[ident.directory]


def _check_groups(plan: LabPlan, groups: Iterable[str]) -> tuple[str, ...]:
    known = _identity(plan).groups
    groups = tuple(dict.fromkeys(groups))
    unknown = [g for g in groups if g not in known]
    if unknown:
        raise UsageError(f"unknown group(s) {', '.join(unknown)}; groups: {', '.join(known)}")
    return groups


def _existing(rt: Runtime, plan: LabPlan, dc: HostPlan, name: str) -> UserInfo:
    for u in _users(rt, plan, dc):
        if u.name == name:
            return u
    raise UsageError(f"unknown user {name!r} in the on-prem directory")


def add_user(
    lab: str,
    name: str,
    groups: Sequence[str] = (),
    password: str | None = None,
    *,
    display_name: str = "",
    runtime: Runtime | None = None,
) -> Credentials:
    """Create a user on-prem (the replica gets it at its next sync); its login is kept."""
    if not USER_RE.match(name):
        raise UsageError(f"invalid user name {name!r}: 1-32 of a-z 0-9 . _ -, starting with a-z")
    if password is not None and not password:
        raise UsageError("an empty password is not allowed")
    rt, plan, dc = _on_prem(lab, runtime)
    groups = _check_groups(plan, groups)
    if any(u.name == name for u in _users(rt, plan, dc)):
        raise UsageError(f"user {name!r} already exists")
    password = password or new_password()
    sfx = suffix(_identity(plan).domain)
    ldif = [_entry(user_dn(sfx, name), _user_attrs(name, display_name, ssha(password)))]
    ldif += _members_ldif(sfx, name, groups, ())
    apply_ldif(rt, plan, dc, "\n".join(ldif), f"adding user {name}")
    _save_password(lab, name, password)
    return Credentials(name, password, user_dn(sfx, name))


def set_disabled(
    lab: str, name: str, disabled: bool = True, *, runtime: Runtime | None = None
) -> UserInfo:
    """Disable (or enable) a user on-prem: apps refuse disabled users with 403."""
    rt, plan, dc = _on_prem(lab, runtime)
    user = _existing(rt, plan, dc, name)
    if user.disabled != disabled:
        sfx = suffix(_identity(plan).domain)
        change = ([DISABLED_GROUP], []) if disabled else ([], [DISABLED_GROUP])
        ldif = _members_ldif(sfx, name, *change)
        apply_ldif(rt, plan, dc, "\n".join(ldif), f"{'dis' if disabled else 'en'}abling {name}")
    return UserInfo(name, user.groups, disabled)


def set_password(
    lab: str, name: str, password: str | None = None, *, runtime: Runtime | None = None
) -> Credentials:
    """Set (or generate) a user's password on-prem; the new login is kept."""
    if password is not None and not password:
        raise UsageError("an empty password is not allowed")
    rt, plan, dc = _on_prem(lab, runtime)
    _existing(rt, plan, dc, name)
    password = password or new_password()
    sfx = suffix(_identity(plan).domain)
    ldif = _entry(
        user_dn(sfx, name),
        [("replace", "userPassword"), ("userPassword", ssha(password))],
        "modify",
    )
    apply_ldif(rt, plan, dc, ldif, f"setting the password of {name}")
    _save_password(lab, name, password)
    return Credentials(name, password, user_dn(sfx, name))


def set_groups(
    lab: str, name: str, groups: Sequence[str], *, runtime: Runtime | None = None
) -> UserInfo:
    """Make ``groups`` exactly the user's groups, on-prem."""
    rt, plan, dc = _on_prem(lab, runtime)
    wanted = _check_groups(plan, groups)
    user = _existing(rt, plan, dc, name)
    add = [g for g in wanted if g not in user.groups]
    remove = [g for g in user.groups if g not in wanted]
    if add or remove:
        sfx = suffix(_identity(plan).domain)
        ldif = _members_ldif(sfx, name, add, remove)
        apply_ldif(rt, plan, dc, "\n".join(ldif), f"changing the groups of {name}")
    return UserInfo(name, tuple(sorted(wanted)), user.disabled)


# --- logging in from the harness host ----------------------------------------------------------


def login(lab: str, user: str, site: str | None = None, password: str | None = None) -> bool:
    """Whether ``user`` can bind to the directory serving ``site`` (default on-prem).

    Uses the user's kept password unless one is given. A bind is what the apps check; group
    rules (disabled, readers, editors) are the apps' and are not applied here.
    """
    import ldap3

    record = state.load(lab)
    if record is None:
        raise UsageError(f"no lab named {lab!r} is up (see `drill ls`)")
    from harness import lab as lab_mod

    plan = lab_mod.open_lab(lab).plan
    site = site or plan.topology.primary_site
    dc = directory_host(plan, site)
    if dc is None:
        raise UsageError(f"site {site!r} has no directory")
    if password is None:
        password = credentials(lab, user).password
    if not password:
        return False  # an empty password would be an anonymous bind, not a login
    server = ldap3.Server(dc.address, port=LDAP_PORT, get_info=ldap3.NONE, connect_timeout=5)
    conn = ldap3.Connection(
        server, user=user_dn(suffix(_identity(plan).domain), user), password=password
    )
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()
