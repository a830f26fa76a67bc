"""Tunnel cost: throughput and round-trip time through the WireGuard tunnel against the bare wan.

Brings up a ``minimal`` lab (unique name, always taken down), then, between its two gateways:

raw (the baseline)
    iperf3 TCP from the primary (onprem) gateway's wan address to an iperf3 server bound on the
    recovery (azure) gateway's wan address: straight across the lab's ``wan`` Docker network,
    never through ``wg0``.
tunnel
    iperf3 TCP from the onprem gateway's LAN address to a server bound on the azure gateway's LAN
    address: the route to the other site's subnet is ``dev wg0``, so every byte is encrypted by
    wireguard-go, carried over the wan as UDP and decrypted at the other end.

The script checks both routes (``ip route get``) before measuring and that the tunnel's byte
counters grew by at least what iperf3 sent through it. Raw and tunnel tests alternate, each
``--seconds`` long (after a 1 s omitted warm-up), ``--reps`` times; figures are medians of the
receiver's rate. Round-trip times are the median of ``--pings`` pings (0.2 s apart) between the
wan addresses and between the LAN addresses across the tunnel.

Output, one JSON line on stdout: ``raw_mbit``, ``tunnel_mbit``, ``ratio`` (tunnel/raw, the share
of the bare path's throughput the tunnel keeps), ``rtt_raw_ms``, ``rtt_tunnel_ms``, plus the
samples. Both ends and wireguard-go share the machine's cores with everything else, so the figures
are CPU-bound and noisy. Traffic stays on the lab's own internal Docker networks.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import _common as c

from harness import lab
from harness.components import gateway
from harness.errors import HarnessError
from harness.plan import GatewayPlan
from harness.runtime import DockerRuntime

RAW_PORT = 5201
TUNNEL_PORT = 5202
_RTT_RE = re.compile(r"time=([0-9.]+) ms")


def sh(rt: DockerRuntime, container: str, script: str, what: str) -> str:
    """Run a shell script in a container; HarnessError with its output if it fails."""
    res = rt.exec(container, ["sh", "-ec", script])
    if not res.ok:
        raise HarnessError(f"{what} in {container}: {res.output.strip()[-400:]}")
    return str(res.output)


def lan_address(gp: GatewayPlan) -> str:
    """The gateway's address on its site's first subnet."""
    return str(next(iter(gp.lan.values())))


def check_route(rt: DockerRuntime, container: str, dst: str, src: str, via_wg: bool) -> str:
    """The route from src to dst; HarnessError unless it is (or is not) through wg0."""
    out = sh(rt, container, f"ip -o route get {dst} from {src}", "looking up a route").strip()
    if (f"dev {gateway.INTERFACE}" in out) != via_wg:
        want = "through" if via_wg else "outside"
        raise HarnessError(f"route {src} -> {dst} is not {want} {gateway.INTERFACE}: {out}")
    return out


def wg_bytes(rt: DockerRuntime, container: str) -> int:
    """Bytes sent plus received by the gateway's one WireGuard peer."""
    out = sh(rt, container, f"wg show {gateway.INTERFACE} transfer", "reading wg counters")
    _, rx, tx = out.split()
    return int(rx) + int(tx)


def start_server(rt: DockerRuntime, container: str, bind: str, port: int) -> None:
    """An iperf3 server in the background, bound on one address; waits until it listens."""
    sh(
        rt,
        container,
        f"iperf3 -s -D -B {bind} -p {port} --pidfile /run/iperf3-{port}.pid\n"
        f"for i in $(seq 50); do ss -ltn | grep -q '{bind}:{port} ' && exit 0; sleep 0.1; done\n"
        "exit 1",
        f"starting iperf3 on {bind}:{port}",
    )


def iperf(
    rt: DockerRuntime, container: str, src: str, dst: str, port: int, seconds: int
) -> tuple[float, int]:
    """(receiver Mbit/s, bytes sent) of one iperf3 TCP test from src to dst."""
    res = rt.exec(
        container,
        [
            "iperf3",
            "-c",
            dst,
            "-B",
            src,
            "-p",
            str(port),
            "-t",
            str(seconds),
            "-O",
            "1",
            "-J",
            "--connect-timeout",
            "3000",
        ],
    )
    try:
        data = json.loads(res.output)
    except ValueError:
        raise HarnessError(f"iperf3 {src} -> {dst}: {res.output.strip()[-400:]}") from None
    if not res.ok or "error" in data:
        raise HarnessError(f"iperf3 {src} -> {dst}: {data.get('error', res.output[-400:])}")
    end = data["end"]
    return end["sum_received"]["bits_per_second"] / 1e6, int(end["sum_sent"]["bytes"])


def rtts(rt: DockerRuntime, container: str, src: str, dst: str, count: int) -> list[float]:
    """Round-trip times (ms) of ``count`` pings from src to dst, after two unrecorded ones."""
    sh(rt, container, f"ping -c 2 -i 0.2 -W 2 -I {src} {dst}", f"warming up ping to {dst}")
    out = sh(
        rt, container, f"ping -c {count} -i 0.2 -W 2 -I {src} {dst}", f"pinging {dst} from {src}"
    )
    return [float(m) for m in _RTT_RE.findall(out)]


def measure(rt: DockerRuntime, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, from a lab that is up."""
    ref = lab.open_lab(name, runtime=rt)
    topo = ref.plan.topology
    cli = ref.plan.gateways[topo.primary_site]
    srv = ref.plan.gateways[topo.recovery_site]
    paths = {
        "raw": (cli.wan_address, srv.wan_address, RAW_PORT, False),
        "tunnel": (lan_address(cli), lan_address(srv), TUNNEL_PORT, True),
    }
    for kind, (src, dst, port, via_wg) in paths.items():
        route = check_route(rt, cli.container, dst, src, via_wg)
        c.log(f"{kind}: {src} -> {dst}: {route}")
        start_server(rt, srv.container, dst, port)

    mbit: dict[str, list[float]] = {"raw": [], "tunnel": []}
    for rep in range(args.reps):
        order = ["raw", "tunnel"] if rep % 2 == 0 else ["tunnel", "raw"]
        for kind in order:
            src, dst, port, via_wg = paths[kind]
            before = wg_bytes(rt, cli.container)
            rate, sent = iperf(rt, cli.container, src, dst, port, args.seconds)
            grew = wg_bytes(rt, cli.container) - before
            if via_wg and grew < sent:
                raise HarnessError(f"wg0 carried {grew} bytes but iperf3 sent {sent}")
            if not via_wg and grew > sent // 10:
                raise HarnessError(f"raw test moved {grew} bytes through wg0 (iperf3 sent {sent})")
            mbit[kind].append(rate)
            c.log(f"rep {rep + 1}/{args.reps} {kind}: {rate:.0f} Mbit/s (wg0 +{grew} bytes)")

    rtt: dict[str, list[float]] = {}
    for kind, (src, dst, _, _) in paths.items():
        rtt[kind] = rtts(rt, cli.container, src, dst, args.pings)
        if len(rtt[kind]) < args.pings // 2:
            raise HarnessError(f"{kind}: only {len(rtt[kind])} of {args.pings} pings answered")
        c.log(f"{kind} rtt: median {c.median(rtt[kind])} ms over {len(rtt[kind])} pings")

    raw_m, tun_m = c.median(mbit["raw"], 1), c.median(mbit["tunnel"], 1)
    return {
        "raw_mbit": raw_m,
        "tunnel_mbit": tun_m,
        "ratio": c.ratio(tun_m, raw_m, 4),
        "rtt_raw_ms": c.median(rtt["raw"]),
        "rtt_tunnel_ms": c.median(rtt["tunnel"]),
        "seconds": args.seconds,
        "reps": args.reps,
        "pings": args.pings,
        "samples": {
            "raw_mbit": [round(v, 1) for v in mbit["raw"]],
            "tunnel_mbit": [round(v, 1) for v in mbit["tunnel"]],
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="iperf3 and ping between the two gateways of a minimal lab: straight over "
        "the wan network (baseline) and through the WireGuard tunnel; JSON on stdout.",
    )
    p.add_argument("--seconds", type=int, default=5, help="length of each iperf3 test (5)")
    p.add_argument("--reps", type=int, default=3, help="iperf3 tests per path (3)")
    p.add_argument("--pings", type=int, default=20, help="pings per path (20)")
    p.add_argument("--topology", default="minimal", help="topology to bring up (minimal)")
    args = p.parse_args(argv)
    if not (1 <= args.seconds <= 60 and 1 <= args.reps <= 20 and 1 <= args.pings <= 200):
        p.error("--seconds must be 1-60, --reps 1-20, --pings 1-200")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return c.run_in_lab(args.topology, lambda rt, name: measure(rt, name, args), "bench")


if __name__ == "__main__":
    sys.exit(main())
