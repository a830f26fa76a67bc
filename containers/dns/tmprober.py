#!/usr/bin/env python3
"""tmprober: Traffic Manager's endpoint monitoring, with Azure's documented semantics.

It reads the profile (``profile.json``, written by the harness: monitor settings, endpoints with
their addresses and flags), probes every monitored endpoint on its own schedule, and writes:

    state.json   what CoreDNS's ``trafficmanager`` plugin serves: the endpoints eligible for
                 answers, or ``nxdomain``; rewritten (atomically) only when it changes
    status.json  every endpoint's monitor status, failure count and recent probe results, and
                 the profile's status, for ``drill dns status``; rewritten after every probe

Rules (reference/azure-semantics.md, section 1):
- A probe fails on a status code outside the expected ranges (so 301/302 fail unless listed),
  a timeout, a refused or reset connection, or any other connection error; TCP needs only the
  connect. HTTPS does not validate certificates.
- An endpoint turns Degraded when its consecutive failures exceed the tolerated number; one
  success brings it back Online. Until its first probe it is CheckingEndpoint (in answers).
- Disabled endpoints (and every endpoint of a disabled profile) are Disabled; stopped ones are
  Stopped; always-serve ones are Unmonitored (never probed, always in answers).
- Answers hold Online, CheckingEndpoint and Unmonitored endpoints; if every enabled endpoint is
  Degraded, all of them are returned as if Online. A disabled profile, or one whose endpoints
  are all Disabled or Stopped (Inactive), answers NXDOMAIN.
We probe from one location; Azure probes from several and averages.

Stdlib only, so it runs in the dns image as is; the pure functions are unit-tested by the harness.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

ONLINE = "Online"
DEGRADED = "Degraded"
CHECKING = "CheckingEndpoint"
DISABLED = "Disabled"
STOPPED = "Stopped"
UNMONITORED = "Unmonitored"
IN_ANSWERS = {ONLINE, CHECKING, UNMONITORED}
HISTORY = 10


# --- pure semantics --------------------------------------------------------------------------


def status_in_ranges(code: int, ranges: list[str]) -> bool:
    """Whether an HTTP status code lies in one of the expected ranges ('200' or '200-299')."""
    for r in ranges:
        lo, _, hi = r.partition("-")
        if int(lo) <= code <= int(hi or lo):
            return True
    return False


@dataclass
class ProbeState:
    """What the prober knows of one endpoint's probes."""

    probed: bool = False
    consecutive_failures: int = 0
    degraded: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def record(self, ok: bool, detail: str, latency_ms: float, tolerated: int, at: float) -> None:
        """Count one probe result: failures past the tolerated number degrade, a success heals."""
        self.probed = True
        if ok:
            self.consecutive_failures = 0
            self.degraded = False
        else:
            self.consecutive_failures += 1
            if self.consecutive_failures > tolerated:
                self.degraded = True
        self.history.append({"at": at, "ok": ok, "detail": detail, "latency_ms": latency_ms})
        del self.history[:-HISTORY]


def is_monitored(profile_enabled: bool, ep: dict[str, Any]) -> bool:
    """Whether an endpoint is probed at all (enabled, running, not always-serve)."""
    return bool(
        profile_enabled and ep.get("enabled", True) and not ep.get("stopped")
        and not ep.get("always_serve")
    )


def monitor_status(profile_enabled: bool, ep: dict[str, Any], ps: ProbeState) -> str:
    """An endpoint's monitor status."""
    if not profile_enabled or not ep.get("enabled", True):
        return DISABLED
    if ep.get("stopped"):
        return STOPPED
    if ep.get("always_serve"):
        return UNMONITORED
    if not ps.probed:
        return CHECKING
    return DEGRADED if ps.degraded else ONLINE


def profile_status(profile_enabled: bool, statuses: list[str]) -> str:
    """The profile's monitor status from its endpoints' statuses."""
    if not profile_enabled or not statuses:
        return DISABLED
    if all(s in (DISABLED, STOPPED) for s in statuses):
        return "Inactive"
    if DEGRADED in statuses:
        return DEGRADED
    if ONLINE in statuses or UNMONITORED in statuses:
        return ONLINE
    return "CheckingEndpoints"


def decide(profile: dict[str, Any], statuses: dict[str, str]) -> dict[str, Any]:
    """The state CoreDNS serves: eligible endpoints, or NXDOMAIN."""
    enabled = profile.get("enabled", True)
    pstatus = profile_status(enabled, list(statuses.values()))
    state: dict[str, Any] = {
        "profile": profile["profile"],
        "vanity": profile.get("vanity") or "",
        "ttl": profile["ttl_s"],
        "routing": profile["routing"],
        "max_answers": profile.get("max_answers", 2),
        "seed": profile.get("seed", 0),
        "nxdomain": pstatus in (DISABLED, "Inactive"),
        "endpoints": [],
    }
    if state["nxdomain"]:
        return state
    eps = profile["endpoints"]
    chosen = [n for n, s in statuses.items() if s in IN_ANSWERS]
    if not chosen:
        # Every enabled endpoint is Degraded: Traffic Manager returns them all (best effort).
        chosen = [n for n, s in statuses.items() if s == DEGRADED]
    state["endpoints"] = [
        {
            "name": n,
            "address": eps[n]["address"],
            "priority": eps[n].get("priority") or 0,
            "weight": eps[n].get("weight", 1),
        }
        for n in sorted(chosen)
    ]
    return state


# --- probing ---------------------------------------------------------------------------------


def probe(monitor: dict[str, Any], ep: dict[str, Any]) -> tuple[bool, str, float]:
    """Probe one endpoint once: (success, detail, latency ms). Never raises."""
    start = time.monotonic()
    timeout = float(monitor["timeout_s"])
    addr, port = ep["address"], int(monitor["port"])
    try:
        if monitor["protocol"] == "TCP":
            with socket.create_connection((addr, port), timeout=timeout):
                pass
            return True, "connected", (time.monotonic() - start) * 1000
        conn: http.client.HTTPConnection
        if monitor["protocol"] == "HTTPS":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # Traffic Manager does not validate certificates
            conn = http.client.HTTPSConnection(addr, port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(addr, port, timeout=timeout)
        headers = {"Host": ep.get("host_header") or addr, "User-Agent": "Azure Traffic Manager Endpoint Monitor"}
        headers.update(monitor.get("headers") or {})
        try:
            conn.request("GET", monitor.get("path") or "/", headers=headers)
            code = conn.getresponse().status
        finally:
            conn.close()
        ok = status_in_ranges(code, monitor.get("expected_status") or ["200"])
        return ok, f"HTTP {code}", (time.monotonic() - start) * 1000
    except TimeoutError:
        return False, "timeout", (time.monotonic() - start) * 1000
    except (OSError, http.client.HTTPException, ValueError) as exc:
        detail = re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}")[:120]
        return False, detail, (time.monotonic() - start) * 1000


def write_json(path: str, data: Any) -> None:
    """Write JSON atomically (rename), so readers never see half a file."""
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class Prober:
    """Probes every monitored endpoint on its schedule and publishes state and status."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.profile_path = os.path.join(directory, "profile.json")
        self.lock = threading.Lock()
        self.probes: dict[str, ProbeState] = {}
        self.profile: dict[str, Any] = {}
        self.profile_mtime = 0.0
        self.last_state: dict[str, Any] | None = None
        self.decided_at = 0.0

    def reload(self) -> None:
        try:
            mtime = os.stat(self.profile_path).st_mtime
            if mtime == self.profile_mtime:
                return
            with open(self.profile_path) as fh:
                profile = json.load(fh)
        except (OSError, ValueError):
            return
        with self.lock:
            old = self.profile
            for name, ep in profile["endpoints"].items():
                was = bool(old) and is_monitored(old.get("enabled", True), old["endpoints"].get(name, {}))
                # An endpoint that starts being monitored again starts over at CheckingEndpoint.
                if name not in self.probes or (not was and is_monitored(profile.get("enabled", True), ep)):
                    self.probes[name] = ProbeState()
            self.profile, self.profile_mtime = profile, mtime
            self.publish()

    def statuses(self) -> dict[str, str]:
        enabled = self.profile.get("enabled", True)
        return {
            n: monitor_status(enabled, ep, self.probes[n])
            for n, ep in self.profile["endpoints"].items()
        }

    def publish(self) -> None:
        """Write state.json if the decision changed, and status.json always (lock held)."""
        statuses = self.statuses()
        state = decide(self.profile, statuses)
        now = time.time()
        if state != self.last_state:
            write_json(os.path.join(self.dir, "state.json"), state)
            self.last_state, self.decided_at = state, now
        status = {
            "updated_at": now,
            "decided_at": self.decided_at,
            "profile_status": profile_status(self.profile.get("enabled", True), list(statuses.values())),
            "endpoints": {
                n: {
                    "status": statuses[n],
                    "consecutive_failures": self.probes[n].consecutive_failures,
                    "history": self.probes[n].history,
                }
                for n in self.profile["endpoints"]
            },
            "state": state,
        }
        write_json(os.path.join(self.dir, "status.json"), status)

    def probe_loop(self, name: str) -> None:
        next_at = time.monotonic()
        while True:
            with self.lock:
                profile = self.profile
            ep = profile["endpoints"].get(name)
            monitor = profile["monitor"]
            interval = float(monitor["interval_s"])
            if ep is not None and is_monitored(profile.get("enabled", True), ep):
                ok, detail, latency = probe(monitor, ep)
                with self.lock:
                    self.probes[name].record(
                        ok, detail, round(latency, 1), int(monitor["tolerated_failures"]), time.time()
                    )
                    self.publish()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def run(self) -> None:
        while not os.path.exists(self.profile_path):
            time.sleep(0.1)
        self.reload()
        for name in self.profile["endpoints"]:
            threading.Thread(target=self.probe_loop, args=(name,), daemon=True).start()
        while True:
            time.sleep(0.1)
            self.reload()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="/etc/coredns/tm", help="folder of profile.json, state.json")
    args = p.parse_args()
    print(f"tmprober: watching {args.dir}", file=sys.stderr, flush=True)
    Prober(args.dir).run()


if __name__ == "__main__":
    main()
