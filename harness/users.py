"""Synthetic users: start and stop ``drill-users`` in a lab's client hosts, and read their logs.

``drill-users`` (containers/client/users.py) runs inside a client container, resolves the app's
name through the lab's DNS server honouring TTLs, and logs every request as a JSON line into
``<lab state>/clients/<host>/<run>.jsonl`` (the folder is mounted into the container), so the
harness reads the log without entering the container. Each run has an id so that several runs
in one lab keep separate logs. Where the topology's apps require logins, the users log in as
its synthetic user; the password reaches the container in a 0600 file, never on a command line.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.components import client
from harness.errors import HarnessError, UsageError
from harness.lab import LabRef

if TYPE_CHECKING:
    from harness.drill import Users as DrillUsers


@dataclass(frozen=True)
class UsersConfig:
    """What the synthetic users do."""

    rate: float = 10.0
    write_ratio: float = 0.5
    path: str = "/documents"
    timeout_s: float = 1.0
    seed: int = 0


def config_for(spec: DrillUsers, seed: int) -> UsersConfig:
    """The users' load as a drill or scenario file describes it (its ``users`` section)."""
    return UsersConfig(
        rate=spec.rate,
        write_ratio=spec.write_ratio,
        path=spec.path,
        timeout_s=spec.timeout,
        seed=seed,
    )


@dataclass(frozen=True)
class UsersRun:
    """One running (or finished) set of synthetic users in one client host."""

    host: str
    container: str
    run_id: str
    log_file: Path


def _client_host(ref: LabRef, host: str | None) -> str:
    clients = [n for n, hp in ref.plan.hosts.items() if hp.role == "client"]
    if not clients:
        raise UsageError(f"lab {ref.plan.lab!r} has no client host for synthetic users")
    if host is None:
        return clients[0]
    if host not in clients:
        raise UsageError(f"{host!r} is not a client host (clients: {', '.join(clients)})")
    return host


def start(
    ref: LabRef, config: UsersConfig, run_id: str, host: str | None = None, name: str | None = None
) -> UsersRun:
    """Start synthetic users against the app's DNS name (the profile's vanity name)."""
    tm = ref.plan.topology.traffic_manager
    if tm is None:
        raise UsageError("synthetic users need a traffic_manager profile to resolve the app")
    h = _client_host(ref, host)
    hp = ref.plan.hosts[h]
    dns_addr = ref.plan.hosts[tm.dns_host].address
    log_name = f"{run_id}.jsonl"
    log_host = client.log_dir(ref.plan, hp) / log_name
    log_host.parent.mkdir(parents=True, exist_ok=True)
    log_host.unlink(missing_ok=True)
    args = [
        "/usr/local/bin/drill-users",
        "--server", dns_addr,
        "--name", name or tm.vanity or tm.profile,
        "--path", config.path,
        "--rate", str(config.rate),
        "--write-ratio", str(config.write_ratio),
        "--timeout", str(config.timeout_s),
        "--seed", str(config.seed),
        "--log", f"{client.LOG_DIR}/{log_name}",
        "--user-id", run_id,
    ]  # fmt: skip
    # Where the site's apps require logins, users log in as the topology's synthetic user.
    if ref.plan.topology.identity is not None:
        from harness import identity

        logins = identity.synthetic_users(ref.plan.lab)
        if not logins:
            raise UsageError("the topology's identity has no user with synthetic: true")
        secret = log_host.with_suffix(".secret")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(logins[0].password)
        args += ["--user", logins[0].user, "--password-file", f"{client.LOG_DIR}/{secret.name}"]
    pidfile = f"{client.LOG_DIR}/{run_id}.pid"
    script = (
        f"nohup python3 {' '.join(args)} >{client.LOG_DIR}/{run_id}.err 2>&1 & echo $! > {pidfile}"
    )
    res = ref.rt.exec(hp.container, ["sh", "-c", script])
    if not res.ok:
        raise HarnessError(f"starting synthetic users in {h}: {res.output.strip()}")
    return UsersRun(h, hp.container, run_id, log_host)


def stop(ref: LabRef, run: UsersRun, timeout_s: float = 5.0) -> None:
    """Stop the users' schedule and wait (bounded) until running requests have finished."""
    pidfile = f"{client.LOG_DIR}/{run.run_id}.pid"
    script = (
        f"p=$(cat {pidfile} 2>/dev/null) || exit 0; kill -TERM $p 2>/dev/null || exit 0; "
        f"for i in $(seq {int(timeout_s * 10)}); do kill -0 $p 2>/dev/null || exit 0; "
        "sleep 0.1; done; kill -KILL $p 2>/dev/null; exit 0"
    )
    ref.rt.exec(run.container, ["sh", "-c", script])
    run.log_file.with_suffix(".secret").unlink(missing_ok=True)


def read(run: UsersRun) -> list[dict[str, Any]]:
    """Every request logged so far, in start order (a half-written last line is skipped)."""
    out = []
    try:
        text = run.log_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    out.sort(key=lambda r: r["start"])
    return out


def wait_for_requests(run: UsersRun, count: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Wait until at least ``count`` requests are logged; HarnessError if they never come."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reqs = read(run)
        if len(reqs) >= count:
            return reqs
        time.sleep(0.1)
    err = run.log_file.with_suffix(".err")
    tail = err.read_text(errors="replace")[-500:] if err.exists() else ""
    raise HarnessError(f"synthetic users in {run.host} logged no requests: {tail}")
