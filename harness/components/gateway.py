"""Site VPN gateways: a WireGuard (wireguard-go) tunnel, the only path between the two sites.

A gateway joins every subnet of its site and the ``wan`` network, which only gateways join. Its
``wg0`` interface has the other gateway as its one peer, with the other site's subnets as allowed
IPs, the topology's port, MTU and keepalive. Hosts route every other site subnet through their
own site gateway, so what crosses the wan is WireGuard UDP and nothing else.

Keys are made per lab on the host (X25519, ``cryptography``), kept in ``<lab state>/keys/`` with
mode 0600 and mounted read-only into the gateway; private keys are never printed or logged.
"""

from __future__ import annotations

import base64
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from harness import naming, state
from harness.errors import HarnessError
from harness.plan import GatewayPlan, LabPlan
from harness.runtime import Attachment, ContainerSpec, Runtime

INTERFACE = "wg0"
KEY_IN_CONTAINER = "/etc/wireguard/private.key"


def keys_dir(lab: str) -> Path:
    """Where a lab's WireGuard keys live on the host."""
    return state.lab_dir(lab) / "keys"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def ensure_keys(lab: str, site: str) -> str:
    """Make the site's key pair if missing (private key mode 0600); return the public key."""
    d = keys_dir(lab)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    priv_file, pub_file = d / f"{site}.key", d / f"{site}.pub"
    if not priv_file.exists():
        key = X25519PrivateKey.generate()
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        pub = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        fd = os.open(priv_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(_b64(raw) + "\n")
        pub_file.write_text(_b64(pub) + "\n")
    return pub_file.read_text().strip()


def peer_of(plan: LabPlan, site: str) -> GatewayPlan:
    """The gateway at the other end of the tunnel."""
    return next(gp for s, gp in plan.gateways.items() if s != site)


def prepare(plan: LabPlan, gp: GatewayPlan) -> None:
    """Make this site's keys before the container starts (it mounts the private key)."""
    ensure_keys(plan.lab, gp.site)


SOCKET_BUFFER = 7 << 20
"""wireguard-go's UDP socket buffers (``drill-wg-buffers``), the size later releases use."""

CPU_SHARES = 8192
"""The gateways' CPU weight, 8 times Docker's default.

A VPN gateway is an appliance with its own CPU; here the two wireguard-go processes share the
machine's cores with every server. At the default weight, an initial replication (Azurite busy
at the far end) crossed the tunnel about a quarter slower than with this weight (255-280 against
320-360 Mbit/s), while a plain iperf3 stream was about as fast either way (bench/RESULTS.md).
"""


def spec(plan: LabPlan, gp: GatewayPlan) -> ContainerSpec:
    """A gateway container with what wireguard-go needs (NET_ADMIN, /dev/net/tun), and
    SYS_PTRACE for ``drill-wg-buffers`` (see ``setup_script``)."""
    nets = [Attachment(name, addr) for name, addr in gp.lan.items()]
    nets.append(Attachment(plan.networks["wan"].name, gp.wan_address))
    key_file = keys_dir(plan.lab) / f"{gp.site}.key"
    return ContainerSpec(
        name=gp.container,
        image=naming.image_ref("gateway"),
        hostname=f"{gp.site}-gw",
        networks=tuple(nets),
        labels=plan.object_labels("gateway", f"{gp.site}-gw", gp.site),
        env={
            "DRILL_HOST": f"{gp.site}-gw",
            "DRILL_SITE": gp.site,
            "DRILL_LAB": plan.lab,
            "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1",
        },
        cap_add=("NET_ADMIN", "SYS_PTRACE"),
        devices=("/dev/net/tun",),
        sysctls={"net.ipv4.ip_forward": "1"},
        cpu_shares=CPU_SHARES,
        binds={str(key_file): f"{KEY_IN_CONTAINER}:ro"},
    )


def setup_script(plan: LabPlan, gp: GatewayPlan) -> str:
    """The shell that brings ``wg0`` up with its one peer (no secrets in it)."""
    t = plan.topology.tunnel
    peer = peer_of(plan, gp.site)
    lines = [
        f"wireguard-go {INTERFACE} 2>/dev/null",
        f"wg set {INTERFACE} listen-port {t.port} private-key {KEY_IN_CONTAINER} "
        + _peer_args(plan, gp),
        f"ip link set {INTERFACE} mtu {t.mtu} up",
        # wireguard-go 0.0.20220316 leaves its UDP sockets at the kernel's default buffers,
        # which overflow under load; this sizes them as later releases do. It opens them when
        # the interface comes up, so this comes after.
        f"drill-wg-buffers {SOCKET_BUFFER} >/dev/null",
        # Clamp TCP MSS to the tunnel's path MTU, as VPN gateways do.
        "iptables -t mangle -A FORWARD -p tcp --tcp-flags SYN,RST SYN "
        "-j TCPMSS --clamp-mss-to-pmtu",
    ]
    lines += [f"ip route replace {subnet} dev {INTERFACE}" for subnet in peer.lan_subnets]
    lines.append(f"nohup sh -c {shlex.quote(_RX_MONITOR)} >/dev/null 2>&1 &")
    return "\n".join(lines)


def _peer_args(plan: LabPlan, gp: GatewayPlan) -> str:
    """``wg set`` arguments for the gateway's one peer: the other site's gateway."""
    t = plan.topology.tunnel
    peer = peer_of(plan, gp.site)
    return (
        f"peer {ensure_keys(plan.lab, peer.site)} endpoint {peer.wan_address}:{t.port} "
        f"allowed-ips {','.join(peer.lan_subnets)} persistent-keepalive {t.keepalive_s}"
    )


RX_FILE = "/run/tunnel-rx"
_RX_MONITOR = (
    # Note when bytes last arrived from the peer: keepalives make that at most keepalive_s ago.
    'last=""; while :; do cur=$(wg show wg0 transfer | cut -f2); '
    f'if [ "$cur" != "$last" ]; then date +%s.%N > {RX_FILE}.tmp && mv {RX_FILE}.tmp {RX_FILE}; '
    "last=$cur; fi; sleep 0.25; done"
)
REJECT_AFTER_S = 180.0
"""WireGuard drops session keys this long after a handshake: no newer one means no tunnel."""


def configure(rt: Runtime, plan: LabPlan, gp: GatewayPlan) -> None:
    """Bring the tunnel interface up and route the other site's subnets into it."""
    script = setup_script(plan, gp)
    for attempt in range(3):
        res = rt.exec(gp.container, ["sh", "-ec", script])
        if res.ok:
            return
        # Seen rarely under load: wireguard-go reports "Address already in use" for its listen
        # port. Removing the interface ends that wireguard-go; a fresh start then succeeds.
        rt.exec(gp.container, ["sh", "-c", f"ip link del {INTERFACE} 2>/dev/null; sleep 0.2"])
        time.sleep(0.2 * (attempt + 1))
    raise HarnessError(f"setting up WireGuard on {gp.container}: {res.output.strip()}")


@dataclass(frozen=True)
class TunnelEnd:
    """One gateway's view of the tunnel (``wg show wg0 dump``)."""

    site: str
    container: str
    peer_site: str
    endpoint: str
    latest_handshake: float  # epoch seconds, 0 if never
    rx_bytes: int
    tx_bytes: int
    last_rx: float  # epoch seconds bytes last arrived from the peer, 0 if never
    handshake_bound_s: float

    @property
    def handshake_age_s(self) -> float | None:
        return None if not self.latest_handshake else max(0.0, time.time() - self.latest_handshake)

    @property
    def last_rx_age_s(self) -> float | None:
        return None if not self.last_rx else max(0.0, time.time() - self.last_rx)

    @property
    def up(self) -> bool:
        """Keys valid (a handshake within 180 s) and the peer heard within the bound."""
        hs, rx = self.handshake_age_s, self.last_rx_age_s
        return (
            hs is not None
            and hs <= REJECT_AFTER_S
            and rx is not None
            and rx <= self.handshake_bound_s
        )


def tunnel_end(rt: Runtime, plan: LabPlan, gp: GatewayPlan) -> TunnelEnd:
    """Read the gateway's peer counters; HarnessError if wg cannot be read."""
    # `wg show ... dump` would print the private key; these sub-commands never do.
    cmd = " && ".join(
        f"wg show {INTERFACE} {what}" for what in ("endpoints", "latest-handshakes", "transfer")
    )
    res = rt.exec(gp.container, ["sh", "-ec", f"{cmd} && (cat {RX_FILE} 2>/dev/null || echo 0)"])
    lines = [line.split("\t") for line in res.output.strip().splitlines()]
    if not res.ok or len(lines) != 4 or len(lines[2]) != 3:
        raise HarnessError(f"reading the tunnel on {gp.container}: {res.output.strip()[-200:]}")
    (_, endpoint), (_, handshake), (_, rx, tx), (last_rx,) = lines
    return TunnelEnd(
        site=gp.site,
        container=gp.container,
        peer_site=peer_of(plan, gp.site).site,
        endpoint=endpoint,
        latest_handshake=float(handshake),
        rx_bytes=int(rx),
        tx_bytes=int(tx),
        last_rx=float(last_rx),
        handshake_bound_s=plan.topology.tunnel.handshake_bound_s,
    )


def check_ready(rt: Runtime, plan: LabPlan, gp: GatewayPlan) -> str | None:
    """Ready when the tunnel has completed a handshake with the peer.

    When both gateways start at the same moment, each one's first handshake initiation can
    reach the other before it listens, and WireGuard retries only after 5 s (REKEY_TIMEOUT).
    So while there is no handshake, the peer is re-added at most once a second: a new peer
    sends its initiation at once, and the other gateway is listening by then.
    """
    try:
        end = tunnel_end(rt, plan, gp)
    except HarnessError as exc:
        return str(exc)
    if end.latest_handshake:
        return None
    if time.monotonic() - _kicked.get(gp.container, 0.0) >= 1.0:
        _kicked[gp.container] = time.monotonic()
        pub = ensure_keys(plan.lab, peer_of(plan, gp.site).site)
        again = f"wg set {INTERFACE} peer {pub} remove && wg set {INTERFACE} "
        rt.exec(gp.container, ["sh", "-c", again + _peer_args(plan, gp)])
    return "no WireGuard handshake with the peer yet"


_kicked: dict[str, float] = {}
"""When each gateway's peer was last re-added by ``check_ready`` (monotonic seconds)."""
