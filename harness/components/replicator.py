"""The replicator: ASR's process server, one container in the primary site.

It runs ``harness.replication.agent`` at ``protection.process_server`` with:

    /etc/drill/replicator.json       its configuration (mode 0600: it holds the account key)
    /disks/<host>/<disk>.img         each protected disk's image, read-only
    /mnt/disks/<host>/<disk>         each disk's mounted filesystem, read-only (FIFREEZE)
    /state                           ``<lab state>/replication/state``: shadows, intent log,
                                     status.json and events.jsonl, surviving SIGKILL

CAP_SYS_ADMIN lets it freeze the filesystems (``--privileged`` does not work on every kernel);
NET_ADMIN lets it route the recovery site's subnets through its site gateway, the only path
to the storage account. Container name: ``drill-<lab>-replicator``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from harness import disks, naming, state
from harness.components.storage import BLOB_PORT
from harness.plan import LabPlan
from harness.runtime import Attachment, ContainerSpec, Runtime

COMPONENT = "replicator"
CONFIG_IN_CONTAINER = "/etc/drill/replicator.json"
STATUS_STALE_S = 10.0
"""The replicator rewrites its status every loop; older than this, it is not running."""


def enabled(plan: LabPlan) -> bool:
    """True when the topology protects hosts and places a process server."""
    p = plan.topology.protection
    return p is not None and p.process_server is not None and bool(p.hosts)


def container(plan: LabPlan) -> str:
    """The replicator's container name."""
    return naming.object_name(plan.lab, COMPONENT)


def stop(rt: Runtime, plan: LabPlan, timeout_s: int) -> None:
    """Stop the replicator, then thaw whatever filesystem it was killed holding frozen.

    A process writing to a frozen filesystem waits uninterruptibly: left frozen, its host
    could be neither stopped nor removed.
    """
    rt.stop(container(plan), timeout_s=timeout_s)
    disks.thaw(plan.lab)


def replication_dir(lab: str) -> Path:
    """``<lab state>/replication``: the config file and the state folder."""
    return state.lab_dir(lab) / "replication"


def state_dir(lab: str) -> Path:
    """The replicator's state folder on the harness host."""
    return replication_dir(lab) / "state"


def _network(plan: LabPlan) -> tuple[str, str, str]:
    """(Docker network, address, site gateway address) of the process server."""
    p = plan.topology.protection
    assert p is not None and p.process_server is not None
    ps = p.process_server
    site = plan.topology.primary_site
    net = plan.networks[f"{site}.{ps.subnet}"].name
    gw = plan.addr(plan.topology.sites[site].gateway.addresses[ps.subnet])
    return net, plan.addr(ps.address), gw


def endpoint(plan: LabPlan) -> tuple[str, str, str]:
    """(Blob endpoint URL, account, key) of the storage account holding the replicas."""
    p = plan.topology.protection
    assert p is not None
    sh = plan.hosts[p.storage_host]
    acct = sh.host.storage
    assert acct is not None
    return f"http://{sh.address}:{BLOB_PORT}/{acct.account}", acct.account, acct.key


def config(plan: LabPlan) -> dict[str, Any]:
    """The agent's configuration (``harness.replication.agent.Config``)."""
    p = plan.topology.protection
    assert p is not None
    group_of = {h: g for g, members in p.groups.items() for h in members}
    url, account, key = endpoint(plan)
    hosts = []
    for name in p.hosts:
        hp = plan.hosts[name]
        hosts.append(
            {
                "name": name,
                "group": group_of.get(name),
                "flush_url": f"http://{hp.address}/admin/flush" if hp.role == "app" else None,
                "disks": [
                    {
                        "name": d.name,
                        "size": d.size,
                        "image": f"/disks/{name}/{d.name}.img",
                        "mount": f"/mnt/disks/{name}/{d.name}",
                    }
                    for d in hp.host.disks
                ],
            }
        )
    pol = p.policy
    _, _, gw = _network(plan)
    routes = [
        {"subnet": subnet, "via": gw}
        for site in plan.topology.sites
        if site != plan.topology.primary_site
        for subnet in plan.site_subnets(site)
    ]
    return {
        "routes": routes,
        "endpoint": url,
        "account": account,
        "key": key,
        "crash_consistent_s": pol.crash_consistent_s,
        "app_consistent_s": pol.app_consistent_s,
        "retention_s": pol.retention_s,
        "rpo_threshold_s": pol.rpo_threshold_s,
        "hosts": hosts,
    }


def prepare(plan: LabPlan) -> None:
    """Write the configuration (0600) and make the state folder."""
    d = replication_dir(plan.lab)
    state_dir(plan.lab).mkdir(parents=True, exist_ok=True)
    state.write_json_atomic(d / "replicator.json", config(plan), mode=0o600)


def spec(plan: LabPlan) -> ContainerSpec:
    """The replicator container (CAP_SYS_ADMIN for FIFREEZE, NET_ADMIN for its routes)."""
    p = plan.topology.protection
    assert p is not None
    net, addr, _ = _network(plan)
    site = plan.topology.primary_site
    binds = {
        str(replication_dir(plan.lab) / "replicator.json"): f"{CONFIG_IN_CONTAINER}:ro",
        str(state_dir(plan.lab)): "/state:rw",
    }
    for name in p.hosts:
        for d in plan.hosts[name].host.disks:
            binds[str(disks.image_path(plan.lab, name, d.name))] = f"/disks/{name}/{d.name}.img:ro"
            binds[str(disks.mount_path(plan.lab, name, d.name))] = f"/mnt/disks/{name}/{d.name}:ro"
    return ContainerSpec(
        name=container(plan),
        image=naming.image_ref("replicator"),
        hostname=COMPONENT,
        networks=(Attachment(net, addr),),
        labels=plan.object_labels("host", COMPONENT, site),
        env={"DRILL_HOST": COMPONENT, "DRILL_SITE": site, "DRILL_LAB": plan.lab},
        cap_add=("SYS_ADMIN", "NET_ADMIN"),
        binds=binds,
    )


def configure(rt: Runtime, plan: LabPlan) -> None:
    """Nothing: the agent sets its own routes (from its config) before its first request."""


def read_status(lab: str) -> dict[str, Any] | None:
    """The agent's last status file, or None if it has written none."""
    try:
        data: dict[str, Any] = json.loads((state_dir(lab) / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def check_ready(rt: Runtime, plan: LabPlan) -> str | None:
    """Ready when the agent runs: its status file was rewritten within STATUS_STALE_S."""
    st = read_status(plan.lab)
    if st is None:
        return "the replicator has written no status yet"
    age = time.time() - float(st.get("updated_at", 0))
    if age > STATUS_STALE_S:
        return f"the replicator's status is {age:.0f}s old"
    return None


def status_path(lab: str) -> str:
    """Where the agent's status file is on the harness host."""
    return os.fspath(state_dir(lab) / "status.json")
