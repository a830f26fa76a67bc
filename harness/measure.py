"""Measurements from the data plane: RTO and RPO computed from the synthetic users' request log.

Definitions (all times epoch seconds, from the users' own clocks: the same kernel clock as the
harness):

    RTO   fault start to the end of the first successful request served by the recovery site
          (a request whose address, resolved through the app's DNS name, belongs to it)
    RPO   the age, at the fault, of the newest acknowledged write that survived the recovery,
          plus the count of acknowledged writes lost; a write is acknowledged when the app
          answered 201, at the request's end time
    error rate   failed requests / requests, over a window

Pure functions: the drill runner feeds them the log and the set of ids the recovered app holds,
and tests recompute them from the raw log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Request = dict[str, Any]


@dataclass(frozen=True)
class Rto:
    """Recovery time, and what it is based on."""

    rto_s: float | None  # None: the recovery site never served a user
    first_recovered_request: Request | None
    last_ok_before_fault: float | None
    failed_requests: int  # between the fault and recovery


def rto(requests: Sequence[Request], fault_at: float, recovery_addresses: Iterable[str]) -> Rto:
    """RTO from the request log: fault to the first success served by the recovery site."""
    recovery = set(recovery_addresses)
    first = next(
        (
            r
            for r in sorted(requests, key=lambda r: r["end"])
            if r["ok"] and r["start"] >= fault_at and r.get("address") in recovery
        ),
        None,
    )
    before = [r["end"] for r in requests if r["ok"] and r["end"] <= fault_at]
    until = first["end"] if first else float("inf")
    failed = sum(1 for r in requests if not r["ok"] and fault_at <= r["start"] < until)
    return Rto(
        rto_s=None if first is None else round(first["end"] - fault_at, 3),
        first_recovered_request=first,
        last_ok_before_fault=max(before) if before else None,
        failed_requests=failed,
    )


@dataclass(frozen=True)
class Rpo:
    """Data loss: the newest surviving acknowledged write's age at the fault, and the count lost."""

    rpo_s: float | None  # None: no write was acknowledged before the fault
    acknowledged_before_fault: int
    acknowledged_writes_lost: int
    newest_survivor_ack: float | None
    oldest_lost_ack: float | None
    lost_ids: list[str]


def acknowledged(requests: Sequence[Request], until: float | None = None) -> list[Request]:
    """Writes the app acknowledged (HTTP 201), optionally only those acknowledged by ``until``."""
    return [
        r
        for r in requests
        if r["op"] == "write" and r["ok"] and r.get("id") and (until is None or r["end"] <= until)
    ]


def rpo(
    requests: Sequence[Request], fault_at: float, surviving_ids: Iterable[str], run_start: float
) -> Rpo:
    """RPO from the request log and the ids the recovered app holds.

    With no surviving acknowledged write, the RPO is the whole run before the fault.
    """
    acked = acknowledged(requests, until=fault_at)
    alive = set(surviving_ids)
    survivors = [r for r in acked if r["id"] in alive]
    lost = [r for r in acked if r["id"] not in alive]
    newest = max((r["end"] for r in survivors), default=None)
    if not acked:
        value = None
    elif newest is None:
        value = round(fault_at - run_start, 3)
    else:
        value = round(max(0.0, fault_at - newest), 3)
    return Rpo(
        rpo_s=value,
        acknowledged_before_fault=len(acked),
        acknowledged_writes_lost=len(lost),
        newest_survivor_ack=newest,
        oldest_lost_ack=min((r["end"] for r in lost), default=None),
        lost_ids=sorted(r["id"] for r in lost),
    )


def error_rate(requests: Sequence[Request], start: float, end: float) -> float:
    """Failed share of requests started within [start, end); 0 for no requests."""
    window = [r for r in requests if start <= r["start"] < end]
    if not window:
        return 0.0
    return round(sum(1 for r in window if not r["ok"]) / len(window), 4)


def success_series(
    requests: Sequence[Request], start: float, end: float, step: float = 1.0
) -> list[dict[str, Any]]:
    """Per time bucket: requests, success rate, median latency and the addresses answered."""
    out = []
    t = start
    while t < end:
        bucket = [r for r in requests if t <= r["start"] < t + step]
        lat = sorted(r["latency_ms"] for r in bucket if r["ok"])
        out.append(
            {
                "t": round(t - start, 3),
                "requests": len(bucket),
                "success": round(sum(r["ok"] for r in bucket) / len(bucket), 4) if bucket else None,
                "latency_ms": lat[len(lat) // 2] if lat else None,
                "addresses": sorted({r["address"] for r in bucket if r.get("address")}),
            }
        )
        t += step
    return out
