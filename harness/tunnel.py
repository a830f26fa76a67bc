"""The site-to-site tunnel as a whole: both gateways' view of it.

A tunnel end is ``up`` when its session keys are valid (a WireGuard handshake within the last
180 s, WireGuard's reject-after time; a live tunnel re-handshakes every 120 s) and bytes arrived
from the peer within the topology's ``tunnel.handshake_bound_s``: the peer's keepalives arrive
every ``keepalive_s``, so a silent peer is noticed within the bound, not only after 180 s. A small
monitor in each gateway notes when bytes last arrived.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.components import gateway
from harness.lab import open_lab


@dataclass(frozen=True)
class TunnelStatus:
    """One gateway's view of the tunnel."""

    site: str
    peer_site: str
    container: str
    endpoint: str
    handshake_age_s: float | None
    last_rx_age_s: float | None
    rx_bytes: int
    tx_bytes: int
    up: bool

    @property
    def state(self) -> str:
        return "up" if self.up else "down"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state
        return data


def status(lab: str) -> list[TunnelStatus]:
    """Both ends of the lab's tunnel; a stopped gateway reports its end down."""
    ref = open_lab(lab)
    running = {c.name for c in ref.rt.containers({"drill.lab": lab}) if c.state == "running"}
    out = []
    for gp in ref.plan.gateways.values():
        peer = gateway.peer_of(ref.plan, gp.site)
        if gp.container not in running:
            out.append(TunnelStatus(gp.site, peer.site, gp.container, "", None, None, 0, 0, False))
            continue
        end = gateway.tunnel_end(ref.rt, ref.plan, gp)
        out.append(
            TunnelStatus(
                site=gp.site,
                peer_site=end.peer_site,
                container=gp.container,
                endpoint=end.endpoint if end.endpoint != "(none)" else "",
                handshake_age_s=end.handshake_age_s,
                last_rx_age_s=end.last_rx_age_s,
                rx_bytes=end.rx_bytes,
                tx_bytes=end.tx_bytes,
                up=end.up,
            )
        )
    return out
