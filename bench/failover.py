"""Failover of ``enterprise`` and the way home: step times and the bytes reprotect moves.

One ``enterprise`` lab (unique name, always taken down) with points every 2 s.

failover     after a point taken after some writes, the whole on-prem site is stopped
             (``site-outage``) and the recovery plan ``failover`` runs unplanned from the
             latest point: per group, restore+start (the group step minus its readiness wait)
             and the wait until healthy; ``failover_to_healthy_s`` = the job's duration (call to
             every copy healthy); ``dns_moved_s`` = from the call until Traffic Manager answers
             with the recovery site's web1.
changed      ``--docs`` documents of ``--doc-kib`` KiB of random bytes POSTed to each recovered
             app (SharePoint, CRM) as a synthetic user: ``changed_bytes`` is what they changed
             on the disks (4 KiB blocks that differ, filesystem journal and metadata included),
             ``payload_bytes`` what the users sent.
reprotect    the on-prem site is healed (its disks survived), the failover committed and the
             recovery copies synced back: ``reprotect_bytes_ratio`` = bytes sent / changed
             bytes, at reprotect's 4 KiB blocks; ``reprotect_bytes_ratio_64k`` is what 64 KiB
             chunks would have sent, for comparison.
failback     ``failback_s`` = the failback job (copies flushed and stopped, final delta sync,
             on-prem hosts started and healthy); then reprotect to the recovery site again.

Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import requests
import yaml

from harness import failover, faults, identity, lab, trafficmanager
from harness import topology as topo_mod
from harness.replication import control

POLICY = {
    "crash_consistent_s": 2,
    "app_consistent_s": 10,
    "retention_s": 600,
    "rpo_threshold_s": 30,
}


def wait(what: str, fn: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def points_after(name: str, hosts: list[str], t: float) -> None:
    for h in hosts:
        wait(f"a point of {h}", lambda h=h: [m for m in control.points(name, h) if m.taken_at > t])


def post(url: str, body: bytes, auth: tuple[str, str]) -> None:
    r = requests.post(url, data=body, auth=auth, timeout=30)
    if r.status_code != 201:
        raise SystemExit(f"POST {url}: {r.status_code} {r.text[:200]}")


def run(name: str, docs: int, doc_kib: int) -> dict[str, Any]:
    data = yaml.safe_load((lab.TOPOLOGY_DIR / "enterprise.yaml").read_text())
    data["protection"]["policy"] = POLICY
    lab.up(topo_mod.parse(data, "enterprise+bench"), name, progress=c.log)
    ref = lab.open_lab(name)
    hosts = list(ref.plan.topology.protection.hosts)  # type: ignore[union-attr]
    auth = identity.synthetic_users(name)[0].basic
    c.log("waiting for the initial replication")
    points_after(name, hosts, 0)
    for app in ("sharepoint", "crm"):
        kind = "documents" if app == "sharepoint" else "records"
        post(f"http://{ref.plan.hosts[app].address}/{kind}", b"before failover", auth)
    points_after(name, hosts, time.time())

    faults.inject(name, "site-outage", site=ref.plan.topology.primary_site)
    dns = trafficmanager.dns_address(ref.plan)
    vanity = trafficmanager.profile_of(ref.plan).profile
    target = failover.recovery_copy(ref, "web1").public_address
    c.log("unplanned failover of the recovery plan")
    t0 = time.monotonic()
    job = failover.failover(name, plan="failover", auto_confirm=True)
    wait("Traffic Manager to name the recovery site", lambda: _answers(dns, vanity, target))
    dns_moved = time.monotonic() - t0
    groups = {}
    for s in job.steps:
        if s.name.startswith("group") and "action" not in s.name and s.end is not None:
            ready = float(s.detail["ready_after_s"])
            groups[s.name] = {
                "restore_start_s": round(s.end - s.start - ready, 3),
                "healthy_wait_s": ready,
            }

    # What the recovered disks hold now, to count the 4 KiB blocks the writes below change.
    before_images = _snapshot_images(name, ["sharepoint", "crm"])
    payload = os.urandom(doc_kib * 1024)
    changed = 0
    for app, kind in (("sharepoint", "documents"), ("crm", "records")):
        url = f"http://{failover.recovery_copy(ref, app).address}/{kind}"
        for i in range(docs):
            post(url, payload[i:] + payload[:i], auth)
            changed += len(payload)

    disk_changed = _changed_blocks(before_images)
    faults.heal(name)
    failover.commit(name)
    with c.Timer() as t_rep:
        rj = failover.reprotect(name)
    sent = int(rj.steps[0].detail["bytes_sent"])
    at64 = int(rj.steps[0].detail["bytes_at_64k_chunks"])
    with c.Timer() as t_back:
        failover.failback(name)
    failover.reprotect(name)
    assert job.ended_at is not None
    return {
        "bench": "failover",
        "topology": "enterprise",
        "failover_to_healthy_s": round(job.ended_at - job.started_at, 3),
        "failover_groups": groups,
        "dns_moved_s": round(dns_moved, 3),
        "changed_bytes": disk_changed,
        "payload_bytes": changed,
        "reprotect_bytes_sent": sent,
        "reprotect_bytes_ratio": c.ratio(sent, disk_changed),
        "reprotect_bytes_per_payload": c.ratio(sent, changed),
        "reprotect_bytes_ratio_64k": c.ratio(at64, disk_changed),
        "reprotect_s": round(t_rep.s, 3),
        "failback_s": round(t_back.s, 3),
        "targets": {"failover_to_healthy_s": 15, "reprotect_bytes_ratio": 1.1},
    }


BLOCK = 4096


def _snapshot_images(name: str, hosts: list[str]) -> list[tuple[Path, Path]]:
    """(live recovered image, a sparse copy of it now) for every disk of ``hosts``."""
    out = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    for host in hosts:
        for img in sorted(failover.recovered_images(name, host)):
            copy = tmp / f"{host}-{img.name}"
            subprocess.run(["cp", "--sparse=always", str(img), str(copy)], check=True)
            out.append((img, copy))
    return out


def _changed_blocks(pairs: list[tuple[Path, Path]]) -> int:
    """Bytes of the 4 KiB blocks that differ between each image and its earlier copy."""
    changed = 0
    for live, copy in pairs:
        with open(live, "rb") as a, open(copy, "rb") as b:
            while True:
                x, y = a.read(1 << 20), b.read(1 << 20)
                if not x and not y:
                    break
                for i in range(0, max(len(x), len(y)), BLOCK):
                    if x[i : i + BLOCK] != y[i : i + BLOCK]:
                        changed += BLOCK
        copy.unlink()
    return changed


def _answers(dns: str, vanity: str, target: str | None) -> bool:
    try:
        return trafficmanager.query(dns, vanity).addresses == [target]
    except Exception:  # the DNS server may be starting: keep asking
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=16, help="documents per recovered app")
    ap.add_argument("--doc-kib", type=int, default=128, help="size of each document")
    args = ap.parse_args()
    name = c.unique_lab_name("bfo")
    with c.interruptible():
        try:
            c.emit(run(name, args.docs, args.doc_kib))
        finally:
            lab.down(name)


if __name__ == "__main__":
    main()
