#!/usr/bin/env python3
"""drill-users: synthetic users that keep working through a disaster, and log every request.

Users reach the application by name, as real ones do: each request resolves the app's name
through the lab's DNS server (dnspython, answers cached until their TTL runs out, so a failover
reaches a user only when its cached answer expires), then talks HTTP to the address it got.

Requests run on a fixed schedule (``--rate`` per second, open loop: a slow or hung request does
not delay the next one), each a write or a read by a seeded draw (``--write-ratio``, ``--seed``):

    write   POST <path> with a JSON body carrying a sequence number; acknowledged on HTTP 201
    read    GET <path>/<id> of an acknowledged write (GET /health until there is one)

Every request is one JSON line in ``--log``: start and end time (epoch s), op, seq, the address
used, HTTP status (0 when none), ok, latency, the stored id, and an error text. With
``--user``/``--password-file`` requests carry HTTP Basic credentials (never logged).
SIGTERM stops the schedule, lets running requests finish, and closes the log.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import requests


class Resolver:
    """Resolves one name through one server, caching answers for their TTL."""

    def __init__(self, server: str, name: str, timeout: float) -> None:
        self.server, self.name, self.timeout = server, name, timeout
        self.lock = threading.Lock()
        self.addresses: list[str] = []
        self.expires = 0.0

    def resolve(self) -> str:
        with self.lock:
            now = time.time()
            if self.addresses and now < self.expires:
                return self.addresses[0]
        resp = dns.query.udp(dns.message.make_query(self.name, "A"), self.server, timeout=self.timeout)
        addrs, ttl = [], 0
        for rrset in resp.answer:
            if rrset.rdtype == dns.rdatatype.A:
                addrs = [r.address for r in rrset]
                ttl = rrset.ttl
        if not addrs:
            raise LookupError(f"no address for {self.name} ({dns.rcode.to_text(resp.rcode())})")
        with self.lock:
            self.addresses, self.expires = addrs, time.time() + ttl
        return addrs[0]


class Users:
    """The request schedule, the acknowledged writes, and the log."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.resolver = Resolver(args.server, args.name, args.timeout)
        self.rng = random.Random(args.seed)
        self.log = open(args.log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - long-lived
        self.log_lock = threading.Lock()
        self.acked: list[str] = []
        self.acked_lock = threading.Lock()
        self.stop = threading.Event()
        self.session = requests.Session()
        self.auth: str | None = None
        if args.user and args.password_file:
            with open(args.password_file, encoding="utf-8") as fh:
                secret = fh.read().strip()
            self.auth = "Basic " + base64.b64encode(f"{args.user}:{secret}".encode()).decode()

    def write_log(self, entry: dict[str, Any]) -> None:
        with self.log_lock:
            self.log.write(json.dumps(entry, separators=(",", ":")) + "\n")

    def request(self, seq: int, op: str, read_id: str | None) -> None:
        entry: dict[str, Any] = {"seq": seq, "op": op, "start": time.time(), "address": None,
                                 "status": 0, "ok": False, "id": read_id, "error": None,
                                 "user": self.args.user_id}
        headers = {"Authorization": self.auth} if self.auth else {}
        try:
            addr = self.resolver.resolve()
            entry["address"] = addr
            base = f"http://{addr}"
            if op == "write":
                body = {"seq": seq, "user": self.args.user_id, "at": entry["start"]}
                r = self.session.post(f"{base}{self.args.path}", json=body, headers=headers,
                                      timeout=self.args.timeout)
                entry["status"] = r.status_code
                entry["ok"] = r.status_code == 201
                if entry["ok"]:
                    entry["id"] = r.json().get("id")
            elif read_id is not None:
                r = self.session.get(f"{base}{self.args.path}/{read_id}", headers=headers,
                                     timeout=self.args.timeout)
                entry["status"], entry["ok"] = r.status_code, r.status_code == 200
            else:
                r = self.session.get(f"{base}/health", timeout=self.args.timeout)
                entry["status"], entry["ok"] = r.status_code, r.status_code == 200
        except Exception as exc:  # every failure is a logged result, never a crash
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
        entry["end"] = time.time()
        entry["latency_ms"] = round((entry["end"] - entry["start"]) * 1000, 2)
        if op == "write" and entry["ok"]:
            with self.acked_lock:
                self.acked.append(entry["id"])
        self.write_log(entry)

    def run(self) -> None:
        a = self.args
        interval = 1.0 / a.rate
        start = time.time()
        end = start + a.duration if a.duration else float("inf")
        with ThreadPoolExecutor(max_workers=a.workers) as pool:
            seq = 0
            while not self.stop.is_set() and time.time() < end:
                op = "write" if self.rng.random() < a.write_ratio else "read"
                with self.acked_lock:
                    read_id = self.rng.choice(self.acked) if self.acked and op == "read" else None
                pool.submit(self.request, seq, op, read_id)
                seq += 1
                wait = start + seq * interval - time.time()
                if wait > 0:
                    self.stop.wait(wait)
        self.log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True, help="the DNS server's address")
    p.add_argument("--name", required=True, help="the application's DNS name")
    p.add_argument("--path", default="/documents", help="the collection writes go to")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second")
    p.add_argument("--write-ratio", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until SIGTERM")
    p.add_argument("--timeout", type=float, default=1.0, help="per request and DNS query, s")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--log", required=True)
    p.add_argument("--user-id", default="u1", help="tag in each log line and written body")
    p.add_argument("--user", help="HTTP Basic user name")
    p.add_argument("--password-file", help="file holding the password (never logged)")
    args = p.parse_args()
    users = Users(args)
    signal.signal(signal.SIGTERM, lambda *_: users.stop.set())
    print(f"drill-users: {args.rate}/s to {args.name} via {args.server}", file=sys.stderr, flush=True)
    users.run()


if __name__ == "__main__":
    main()
