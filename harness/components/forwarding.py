"""Host forwarding rules that let site hosts reach their gateway's other side.

Docker isolates ``internal`` networks with iptables rules that drop any packet entering or leaving
the bridge with an address outside the network's subnet; with bridge netfilter on (the usual
case), this also drops packets that a host sends *through* its site gateway on the same bridge.
For each site network the lab inserts one rule in Docker's ``DOCKER-USER`` chain that accepts
traffic staying on that bridge (``-i br -o br``); nothing ever crosses between networks because
of it. Rules carry the comment ``drill-lab=<lab>`` and are removed by that comment.

The rules are changed from a short-lived container in the host's network namespace (NET_ADMIN
only), so this works wherever the engine runs, with whichever iptables back end it uses.
"""

from __future__ import annotations

import shlex

from harness import naming
from harness.errors import HarnessError
from harness.plan import LabPlan
from harness.runtime import ContainerSpec, Runtime

COMMENT_PREFIX = "drill-lab="

_PICK_BACKEND = (
    "if iptables-nft -S DOCKER-USER >/dev/null 2>&1; then I=iptables-nft; "
    "elif iptables-legacy -S DOCKER-USER >/dev/null 2>&1; then I=iptables-legacy; "
    "else echo 'no DOCKER-USER chain: is this a Docker host?' >&2; exit 3; fi"
)


def _delete_script(pattern: str) -> str:
    """Shell that deletes every DOCKER-USER rule whose comment matches ``pattern``."""
    return (
        f'$I -S DOCKER-USER | grep -E -- {shlex.quote(pattern)} | sed "s/^-A /-D /" | '
        'while read -r rule; do eval "$I $rule"; done'
    )


def _task(rt: Runtime, name: str, labels: dict[str, str], script: str) -> None:
    spec = ContainerSpec(
        name=name,
        image=naming.image_ref("base"),
        hostname="forwarding",
        networks=(),
        labels=labels,
        command=("sh", "-ec", script),
        cap_add=("NET_ADMIN", "NET_RAW"),
        network_mode="host",
    )
    res = rt.run_task(spec)
    if not res.ok:
        raise HarnessError(f"changing host forwarding rules failed: {res.output.strip()}")


def allow(rt: Runtime, plan: LabPlan, bridges: list[str]) -> None:
    """Accept traffic that stays on each of ``bridges`` (the lab's site networks)."""
    comment = f"{COMMENT_PREFIX}{plan.lab}"
    lines = [_PICK_BACKEND, _delete_script(f'--comment "?{comment}"? ')]
    lines += [
        f"$I -I DOCKER-USER -i {br} -o {br} -m comment --comment {comment} -j ACCEPT"
        for br in bridges
    ]
    labels = plan.object_labels("task", "forwarding")
    _task(rt, naming.object_name(plan.lab, f"fwd-{plan.run_id[:6]}"), labels, "\n".join(lines))


def remove(rt: Runtime, lab: str | None, labels: dict[str, str]) -> None:
    """Delete the rules of one lab, or of every lab when ``lab`` is None."""
    name_re = lab if lab else "[a-z0-9-]+"
    pattern = f'--comment "?{COMMENT_PREFIX}{name_re}"? '
    name = naming.object_name(lab or "all", f"fwd-rm-{naming.new_run_id()[:6]}")
    _task(rt, name, labels, "\n".join([_PICK_BACKEND, _delete_script(pattern)]))
