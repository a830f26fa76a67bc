"""Directory replica: replication lag to the recovery site, and LDAP bind throughput on it.

Brings up a lab of the enterprise design's sites, directory (dc1, on-prem) and replica (dc2, in
the recovery VNet, syncrepl refreshOnly every ``--sync-interval`` seconds over the WireGuard
tunnel), with Site Recovery and Traffic Manager left out; unique name, always taken down.

lag
    ``--changes`` users are created on-prem one after the other (``harness.identity.add_user``),
    each after a seeded random pause of 0 to 1.5 sync intervals so that changes land at every
    point of the replica's cycle. A change's start is its commit time on dc1 (the new entry's
    ``entryCSN``, microseconds); its end is the first moment the harness host, bound to dc2 as
    a seeded user and polling every 10 ms, finds the entry. Expectation: about half a sync
    interval on average, at most one interval plus the transfer.
binds
    ``--bind-threads`` threads, each with one connection to the directory, repeat simple binds
    of the seeded users (with their real passwords) for ``--seconds``; every bind must succeed.
    The replica is measured, and dc1 the same way as the baseline (same image, same client, no
    tunnel in the path: the harness host reaches both directly). The Python client (ldap3) runs
    on the same 2 cores as slapd, so these are figures of the whole loop, not of slapd alone.

Output, one JSON line on stdout: ``lag_median_s``, ``lag_max_s``, ``binds_per_s`` (replica),
``binds_per_s_provider`` (baseline), ``sync_interval_s``, samples. Traffic stays on the lab's own
internal Docker networks.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from typing import Any

import _common as c
import ldap3
import yaml

from harness import identity, lab
from harness import topology as t
from harness.errors import HarnessError
from harness.runtime import DockerRuntime

POLL_S = 0.01


def bench_topology(sync_interval_s: int) -> t.Topology:
    """enterprise.yaml's sites, directory, replica and apps, without Site Recovery."""
    data: dict[str, Any] = yaml.safe_load((lab.TOPOLOGY_DIR / "enterprise.yaml").read_text())
    for key in ("protection", "recovery_plans", "traffic_manager"):
        data.pop(key, None)
    for site in data["sites"].values():
        for h in site["hosts"].values():
            h.pop("disks", None)
            h.pop("recovery", None)
    data["identity"]["sync_interval_s"] = sync_interval_s
    return t.parse(data, "enterprise.yaml (identity only)")


def connect(address: str, creds: identity.Credentials) -> ldap3.Connection:
    conn = ldap3.Connection(
        # get_info=NONE: ldap3 would otherwise read the schema after every bind.
        ldap3.Server(address, port=identity.LDAP_PORT, get_info=ldap3.NONE, connect_timeout=5),
        user=creds.dn,
        password=creds.password,
        receive_timeout=5,
    )
    if not conn.bind():
        raise HarnessError(f"bind as {creds.user} to {address} failed: {conn.result}")
    return conn


def measure_lag(rt: DockerRuntime, name: str, args: argparse.Namespace) -> list[float]:
    """Seconds from each change's commit on dc1 to its visibility on dc2."""
    ref = lab.open_lab(name, runtime=rt)
    ident = ref.plan.topology.identity
    assert ident is not None
    sfx = identity.suffix(ident.domain)
    dc1 = ref.plan.hosts[ident.directory]
    assert ident.replica is not None
    reader = connect(ref.plan.hosts[ident.replica].address, identity.credentials(name, "alice"))
    rng = random.Random(args.seed)
    lags = []
    try:
        for i in range(args.changes):
            time.sleep(rng.uniform(0, 1.5 * args.sync_interval))
            user = f"bench{i:03d}"
            identity.add_user(name, user, ["readers"], runtime=rt)
            [entry] = identity.search(
                rt, dc1.container, identity.user_dn(sfx, user), "base", "(objectClass=*)", "+"
            )
            committed = identity.csn_time(entry["entryCSN"][0])
            deadline = time.monotonic() + 10 * args.sync_interval + 30
            while not reader.search(f"ou=people,{sfx}", f"(uid={user})", attributes=["uid"]):
                if time.monotonic() > deadline:
                    raise HarnessError(f"{user} did not reach the replica")
                time.sleep(POLL_S)
            lags.append(time.time() - committed)
            c.log(f"change {i + 1}/{args.changes}: visible on the replica after {lags[-1]:.2f}s")
    finally:
        reader.unbind()
    return lags


def binds_per_s(address: str, users: list[identity.Credentials], args: argparse.Namespace) -> float:
    """Simple binds per second over ``--bind-threads`` connections for ``--seconds``."""
    counts = [0] * args.bind_threads
    failures: list[str] = []
    stop = time.monotonic() + args.seconds

    def worker(k: int) -> None:
        creds = users[k % len(users)]
        conn = connect(address, creds)
        try:
            while time.monotonic() < stop:
                if not conn.rebind(user=creds.dn, password=creds.password):
                    failures.append(str(conn.result))
                    return
                counts[k] += 1
        finally:
            conn.unbind()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.bind_threads)]
    started = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - started
    if failures:
        raise HarnessError(f"{len(failures)} binds failed at {address}: {failures[0]}")
    return sum(counts) / elapsed


def measure(rt: DockerRuntime, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, from a lab that is up."""
    lags = measure_lag(rt, name, args)
    ref = lab.open_lab(name, runtime=rt)
    ident = ref.plan.topology.identity
    assert ident is not None and ident.replica is not None
    users = [identity.credentials(name, u) for u in ("alice", "bob", "synthetic1", "synthetic2")]
    rates = {}
    for role, host in (("replica", ident.replica), ("provider", ident.directory)):
        rates[role] = binds_per_s(ref.plan.hosts[host].address, users, args)
        c.log(f"{role} ({host}): {rates[role]:.0f} binds/s")
    return {
        "lag_median_s": c.median(lags),
        "lag_max_s": round(max(lags), 3),
        "binds_per_s": round(rates["replica"], 1),
        "binds_per_s_provider": round(rates["provider"], 1),
        "sync_interval_s": args.sync_interval,
        "changes": args.changes,
        "bind_threads": args.bind_threads,
        "bind_seconds": args.seconds,
        "samples": {"lag_s": [round(v, 3) for v in lags]},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Replication lag from on-prem to the replica (median, max) and LDAP bind "
        "throughput on the replica (dc1 as baseline); JSON on stdout.",
    )
    p.add_argument("--changes", type=int, default=20, help="changes made on-prem (20)")
    p.add_argument("--sync-interval", type=int, default=2, help="replica sync interval, s (2)")
    p.add_argument("--bind-threads", type=int, default=4, help="concurrent binders (4)")
    p.add_argument("--seconds", type=float, default=5, help="length of each bind test (5)")
    p.add_argument("--seed", type=int, default=1, help="seed of the pauses between changes (1)")
    args = p.parse_args(argv)
    if not (1 <= args.changes <= 500 and 1 <= args.sync_interval <= 600):
        p.error("--changes must be 1-500, --sync-interval 1-600")
    if not (1 <= args.bind_threads <= 64 and 0.5 <= args.seconds <= 120):
        p.error("--bind-threads must be 1-64, --seconds 0.5-120")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return c.run_in_lab(
        bench_topology(args.sync_interval), lambda rt, name: measure(rt, name, args), "bench"
    )


if __name__ == "__main__":
    sys.exit(main())
