"""Site Recovery replication: throughput, delta efficiency, scan rate, RPO under churn, freezes.

One ``minimal`` lab (unique name, always taken down) whose app disk is 256 MiB and whose policy
takes a crash-consistent point every 2 s. Everything crosses the WireGuard tunnel, as
replication does: replicator (onprem) -> onprem gateway -> wg0 -> azure gateway -> Azurite.

baseline     iperf3 TCP from the replicator to the azure gateway's LAN address: the same
             container and the same tunnel as the uploads (``tunnel_mbit``).
initial      the replicator is stopped, 192 MiB of random data is written to a file on the
             disk, the replica and the replicator's state are wiped, and the replicator is
             started: its first point is the initial replication. ``throughput_ratio`` =
             (page bytes uploaded / duration of that cycle) / iperf3's rate just before it;
             ``--runs`` such pairs, the median ratio is reported (all in
             ``throughput_ratios``).
delta        2048 random distinct 4 KiB-aligned writes (8 MiB) into that file, fsynced; then
             until a point taken after them is published: ``bytes_sent_per_changed`` = page bytes
             uploaded / 8 MiB; ``wire_bytes_per_changed`` = the onprem gateway's tunnel byte
             counters (both directions: HTTP, TCP and WireGuard included) / 8 MiB;
             ``whole_image_bytes`` = what re-uploading the whole image would send.
scan         in the replicator container: the change tracker's scan of the image against its
             shadow vs ``cat IMAGE > /dev/null`` (medians of 5); ``scan_ratio`` = scan rate /
             cat rate.
churn        random 4 KiB writes at 25, 50 and 70 % of the tunnel's rate for ``--churn-s`` each
             (fsync every 0.1 s; ``achieved_mb_s`` says what the writer managed), RPO
             (age of the newest point) sampled every 0.5 s:
             ``rpo_median_s``, ``rpo_max_s`` and ``rpo_slope`` (least squares, RPO seconds
             per second: near 0 when bounded) per level.
freeze       every point's filesystem freeze during the run: ``freeze_median_ms``,
             ``freeze_max_ms``.

Prints one JSON object on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time
from typing import Any

import _common as c
import yaml

from harness import disks, lab
from harness import topology as topo_mod
from harness.components import gateway, replicator
from harness.errors import HarnessError
from harness.lab import LabRef
from harness.replication import control, core
from harness.runtime import DockerRuntime

DISK = 256 * 1024**2
FILL = 192 * 1024**2
BLOCK = 4096
IPERF_PORT = 5211
POLICY = {"crash_consistent_s": 2, "retention_s": 600, "rpo_threshold_s": 30}


def topology() -> topo_mod.Topology:
    """``minimal`` with a 256 MiB app disk and 2 s crash-consistent points."""
    data = yaml.safe_load((lab.TOPOLOGY_DIR / "minimal.yaml").read_text())
    data["sites"]["onprem"]["hosts"]["web1"]["disks"] = [{"name": "data", "size": DISK}]
    data["protection"]["policy"] = POLICY
    return topo_mod.parse(data, "minimal+256MiB")


def sh(rt: DockerRuntime, container: str, script: str, what: str) -> str:
    res = rt.exec(container, ["sh", "-ec", script])
    if not res.ok:
        raise HarnessError(f"{what} in {container}: {res.output.strip()[-400:]}")
    return str(res.output)


def iperf_mbit(rt: DockerRuntime, ref: LabRef, seconds: int) -> float:
    """iperf3 from the replicator to the azure gateway, through the tunnel (Mbit/s)."""
    gp = ref.plan.gateways[ref.plan.topology.recovery_site]
    dst = next(iter(gp.lan.values()))
    sh(
        rt,
        gp.container,
        f"iperf3 -s -D -B {dst} -p {IPERF_PORT} --pidfile /run/iperf3-bench.pid\n"
        f"for i in $(seq 50); do ss -ltn | grep -q '{dst}:{IPERF_PORT} ' && exit 0; sleep 0.1; done"
        "\nexit 1",
        "starting iperf3",
    )
    out = sh(
        rt,
        replicator.container(ref.plan),
        f"iperf3 -c {dst} -p {IPERF_PORT} -t {seconds} -O 1 -J --connect-timeout 3000",
        "iperf3 through the tunnel",
    )
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e6


def wire_bytes(rt: DockerRuntime, ref: LabRef) -> int:
    """Bytes through the onprem gateway's tunnel interface, both directions."""
    end = gateway.tunnel_end(rt, ref.plan, ref.plan.gateways[ref.plan.topology.primary_site])
    return end.rx_bytes + end.tx_bytes


def disk_status(name: str) -> control.DiskHealth:
    (d,) = control.status(name).disks
    return d


def wait_point_after(name: str, t: float, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = disk_status(name).latest_point
        if latest and latest["taken_at"] > t:
            return latest
        time.sleep(0.1)
    raise HarnessError(f"no recovery point after {t:.1f} within {timeout:.0f}s")


def fill_path(name: str) -> str:
    return str(disks.mount_path(name, "web1", "data") / "fill.bin")


def initial_replication(rt: DockerRuntime, ref: LabRef) -> dict[str, Any]:
    """Wipe the replica and the replicator's state, fill the disk, time the first point."""
    name = ref.plan.lab
    ctr = replicator.container(ref.plan)
    wait_point_after(name, 0)  # the replicator is up and has made its containers
    rt.stop(ctr, timeout_s=5)
    with open(fill_path(name), "wb") as f:
        for _ in range(FILL // (4 * 1024**2)):
            f.write(os.urandom(4 * 1024**2))
        f.flush()
        os.fsync(f.fileno())
    os.sync()
    store = control.open_store(ref)
    for m in store.manifests("web1/"):
        store.delete_manifest(m)
    store.replicas.get_blob_client(core.head_blob("web1", "data")).delete_blob(
        delete_snapshots="include"
    )
    sdir = replicator.state_dir(name)
    shutil.rmtree(sdir)
    sdir.mkdir()
    started = time.time()
    rt.start(ctr)
    wait_point_after(name, started)
    first = next(e for e in control.read_events(name) if e["kind"] == "point")
    sent = int(first["prepass_sent_bytes"]) + int(first["sent_bytes"])
    return {"initial_bytes": sent, "initial_s": first["duration_s"]}


def random_writes(path: str, total: int, rng: random.Random) -> None:
    """``total`` bytes of distinct random 4 KiB-aligned writes into the fill file, fsynced."""
    blocks = rng.sample(range(FILL // BLOCK), total // BLOCK)
    fd = os.open(path, os.O_WRONLY)
    try:
        for b in blocks:
            os.pwrite(fd, os.urandom(BLOCK), b * BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)


def delta_cycle(rt: DockerRuntime, ref: LabRef) -> dict[str, Any]:
    name = ref.plan.lab
    wait_point_after(name, time.time())
    changed = 8 * 1024**2
    sent0, wire0 = disk_status(name).bytes_sent, wire_bytes(rt, ref)
    random_writes(fill_path(name), changed, random.Random(7))
    wait_point_after(name, time.time())
    sent = disk_status(name).bytes_sent - sent0
    wire = wire_bytes(rt, ref) - wire0
    return {
        "changed_bytes": changed,
        "bytes_sent": sent,
        "wire_bytes": wire,
        "bytes_sent_per_changed": c.ratio(sent, changed),
        "wire_bytes_per_changed": c.ratio(wire, changed),
        "whole_image_bytes": DISK,
    }


SCAN_SCRIPT = """
import os, statistics, subprocess, time
from harness.replication.core import Shadow
img, shadow, size = "/disks/web1/data.img", "/state/shadow/web1/data.img", %d
sh = Shadow.load(shadow, size)
scan, cat = [], []
for _ in range(5):
    t = time.monotonic(); fd = os.open(img, os.O_RDONLY); sh.diff_fd(fd); os.close(fd)
    scan.append(time.monotonic() - t)
    t = time.monotonic(); subprocess.run("cat %%s > /dev/null" %% img, shell=True, check=True)
    cat.append(time.monotonic() - t)
print(statistics.median(scan), statistics.median(cat))
"""


def scan_rate(rt: DockerRuntime, ref: LabRef) -> dict[str, Any]:
    out = sh(rt, replicator.container(ref.plan), f"python3 -c '{SCAN_SCRIPT % DISK}'", "scan")
    scan_s, cat_s = (float(x) for x in out.split())
    return {
        "scan_s": round(scan_s, 4),
        "cat_s": round(cat_s, 4),
        "scan_mb_s": round(DISK / scan_s / 1e6, 1),
        "cat_mb_s": round(DISK / cat_s / 1e6, 1),
        "scan_ratio": c.ratio(cat_s, scan_s),
    }


def churn(name: str, rate_bps: float, seconds: float) -> dict[str, Any]:
    """Random 4 KiB writes at ``rate_bps`` while sampling RPO; medians and maxima."""
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        rng = random.Random(11)
        # Blocks are cut at random from a random pool (a fresh os.urandom per block, and an
        # fsync every 64 writes, held the writer under the higher levels' rates); the data
        # reaches the disk image by an fsync every 0.1 s.
        pool = os.urandom(4 * 1024**2)
        fd = os.open(fill_path(name), os.O_WRONLY)
        t0 = last_sync = time.monotonic()
        n = 0
        try:
            while not stop.is_set():
                cut = rng.randrange(0, len(pool) - BLOCK, 16)
                os.pwrite(fd, pool[cut : cut + BLOCK], rng.randrange(FILL // BLOCK) * BLOCK)
                n += 1
                written[0] += BLOCK
                if n % 64 == 0:
                    now = time.monotonic()
                    if now - last_sync >= 0.1:
                        os.fsync(fd)
                        last_sync = now
                    ahead = written[0] / rate_bps - (now - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        finally:
            os.close(fd)

    th = threading.Thread(target=writer, daemon=True)
    t0 = time.monotonic()
    th.start()
    rpos: list[float] = []
    times: list[float] = []
    try:
        while time.monotonic() - t0 < seconds:
            time.sleep(0.5)
            rpo = disk_status(name).rpo_s
            if rpo is not None:
                rpos.append(rpo)
                times.append(time.monotonic() - t0)
    finally:
        stop.set()
        th.join()
    elapsed = time.monotonic() - t0
    return {
        "target_mb_s": round(rate_bps / 1e6, 2),
        "achieved_mb_s": round(written[0] / elapsed / 1e6, 2),
        "rpo_median_s": c.median(rpos),
        "rpo_max_s": round(max(rpos), 3) if rpos else float("nan"),
        # Bounded RPO saw-tooths around a level (slope near 0); a growing backlog shows as a
        # slope near 1 - replication rate / churn rate.
        "rpo_slope": (
            round(statistics.linear_regression(times, rpos).slope, 3) if len(rpos) > 2 else None
        ),
        "samples": len(rpos),
    }


def measure(rt: DockerRuntime, name: str, args: argparse.Namespace) -> dict[str, Any]:
    ref = lab.open_lab(name, runtime=rt)
    trials = []
    for i in range(args.runs):
        c.log(f"trial {i + 1}/{args.runs}: iperf3 through the tunnel")
        mbit = iperf_mbit(rt, ref, args.iperf_s)
        c.log(f"tunnel: {mbit:.0f} Mbit/s; initial replication of {FILL >> 20} MiB")
        init = initial_replication(rt, ref)
        init_mbit = init["initial_bytes"] * 8 / init["initial_s"] / 1e6
        c.log(f"initial: {init_mbit:.0f} Mbit/s (ratio {init_mbit / mbit:.2f})")
        trials.append({"tunnel_mbit": round(mbit, 1), "initial_mbit": round(init_mbit, 1), **init})
    # The trial with the median ratio gives every figure of the initial replication.
    trials.sort(key=lambda t: t["initial_mbit"] / t["tunnel_mbit"])
    mid = trials[len(trials) // 2]
    mbit, init_mbit = mid["tunnel_mbit"], mid["initial_mbit"]
    init = {k: mid[k] for k in ("initial_bytes", "initial_s")}
    c.log("delta cycle of 8 MiB random 4 KiB writes")
    delta = delta_cycle(rt, ref)
    c.log("scan rate")
    scan = scan_rate(rt, ref)
    levels = {}
    for pct in (25, 50, 70):
        c.log(f"churn at {pct} % of the tunnel for {args.churn_s:.0f}s")
        levels[str(pct)] = churn(name, mbit * 1e6 / 8 * pct / 100, args.churn_s)
        wait_point_after(name, time.time())
    freezes = [e["freeze_ms"] for e in control.read_events(name) if e["kind"] == "point"]
    return {
        "bench": "replication",
        "disk_bytes": DISK,
        "tunnel_mbit": round(mbit, 1),
        "initial_mbit": round(init_mbit, 1),
        "throughput_ratio": c.ratio(init_mbit, mbit),
        "throughput_ratios": [c.ratio(t["initial_mbit"], t["tunnel_mbit"]) for t in trials],
        **init,
        **delta,
        **scan,
        "churn": levels,
        "rpo_median_s": {k: v["rpo_median_s"] for k, v in levels.items()},
        "rpo_max_s": {k: v["rpo_max_s"] for k, v in levels.items()},
        "freeze_median_ms": round(statistics.median(freezes), 3) if freezes else None,
        "freeze_max_ms": round(max(freezes), 3) if freezes else None,
        "points": len(freezes),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--churn-s", type=float, default=40, help="seconds per churn level")
    p.add_argument("--iperf-s", type=int, default=5, help="seconds of iperf3")
    p.add_argument(
        "--runs", type=int, default=5, help="initial replications, each after its own iperf3"
    )
    args = p.parse_args(argv)
    if not (5 <= args.churn_s <= 600 and 1 <= args.iperf_s <= 60 and 1 <= args.runs <= 9):
        p.error("--churn-s must be 5-600, --iperf-s 1-60, --runs 1-9")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return c.run_in_lab(topology(), lambda rt, name: measure(rt, name, args), "brepl")


if __name__ == "__main__":
    sys.exit(main())
