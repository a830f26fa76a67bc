"""Failover orchestration: what Site Recovery does when someone presses the button.

Operations, each a job with timed steps (``<lab state>/jobs/j<N>-<kind>.json``):

    test_failover    protected hosts come up from a point in an isolated test network: the
                     recovery site's subnets at the same host addresses, in another /16, with no
                     gateway, no route to production and no internet; production is untouched
    cleanup_test     removes the test copies and their network
    failover         unplanned (from the chosen point; needs nothing on-prem) or planned (source
                     apps flushed and stopped, then a point taken after the stop: zero data loss);
                     hosts restored into the recovery site at their placements, in the order of
                     a recovery plan: a group starts when the previous group is healthy
    commit           fixes the choice: the other recovery points are deleted, as Azure does
    reprotect        replicates the recovery copies back to the on-prem disks: by changed chunks
                     where the on-prem image survived, in full where it did not
    failback         a planned failover back: recovery copies flushed and stopped, a final delta
                     sync to on-prem, on-prem hosts started on their updated disks

State machine (``<lab state>/failover.json``), with the next steps a refusal names:

    protected --failover--> failed-over --commit--> committed --reprotect--> reprotected
    reprotected --failback--> failed-back --reprotect--> protected

Recovery points: ``latest`` (the newest point), ``latest-processed`` (the same here: the
replicator publishes a point only once every block of it is durable), ``latest-app-consistent``,
``latest-multi-vm`` (the newest instant shared by every host of a replication group), or a point
id (sequence number).

Recovery plans: groups run in order, the hosts of a group in parallel; each group has
pre-actions (before its hosts start) and post-actions (once they are healthy): a script run in a
host's container (its recovery copy when one runs) or a manual action, which waits for
``drill plan confirm`` (a flag file, ``<lab state>/plan-confirm``, beside the waiting action in
``plan-pending.json``) unless the caller auto-confirms; either way the job records it. A failing
script stops a planned failover but is only logged in an unplanned one, as in Azure. The plan's
``timeout_s`` bounds the whole job.

A failover that fails or is interrupted is cancelled: the copies it started are removed, the
source hosts it stopped and the replicator are started again, and the state stays
``protected``, so it can simply be run again (Azure can cancel only a planned failover; an
unplanned one here has nothing on-prem to undo).

Recovered copies are named ``drill-<lab>-<host>-dr`` (``-test`` for test copies), labelled like
every lab object plus ``drill.failover``; their disks are restored to
``<lab state>/recovered/<tag>/<host>/<disk>.img`` and mounted beside them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from harness import disks, naming, state
from harness.components import ROLES, replicator
from harness.errors import DrillError, HarnessError, UsageError
from harness.lab import LabRef, open_lab
from harness.plan import HostPlan, candidate_spaces, relocate
from harness.replication import control, core
from harness.runtime import ContainerSpec, NetworkSpec
from harness.topology import ManualAction, PlanAction, PlanGroup, ScriptAction

Progress = Callable[[str], None]
FAILOVER_LABEL = "drill.failover"
READY_TIMEOUT_S = 90.0
CHUNK = 4 * 1024  # reprotect's unit of comparison (see _sync_image)
CHUNK_64K = 64 * 1024  # the replicator's chunk, reported for comparison
READ = 1024 * 1024
POINT_KINDS = ("latest", "latest-processed", "latest-app-consistent", "latest-multi-vm")


def _quiet(_: str) -> None:
    pass


# --- state and jobs --------------------------------------------------------------------------


def _state_file(lab: str) -> Path:
    return state.lab_dir(lab) / "failover.json"


def read_state(lab: str) -> dict[str, Any]:
    """The lab's failover state (``protected`` when nothing happened yet)."""
    try:
        data: dict[str, Any] = json.loads(_state_file(lab).read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault("state", "protected")
    data.setdefault("test", None)
    return data


def _write_state(lab: str, data: dict[str, Any]) -> None:
    state.write_json_atomic(_state_file(lab), data)


NEXT = {
    "protected": "drill failover [--planned] or drill failover --test",
    "failed-over": "drill commit",
    "committed": "drill reprotect",
    "reprotected": "drill failback",
    "failed-back": "drill reprotect",
}


def _require(lab: str, allowed: tuple[str, ...], action: str) -> dict[str, Any]:
    st = read_state(lab)
    if st["state"] not in allowed:
        raise UsageError(
            f"cannot {action}: lab {lab!r} is {st['state']}; allowed next: {NEXT[st['state']]}"
        )
    return st


@dataclass
class JobStep:
    """One step of a job."""

    name: str
    start: float
    end: float | None = None
    status: str = "running"
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    """An operation with its steps, like an Azure Site Recovery job."""

    id: str
    kind: str
    lab: str
    started_at: float
    ended_at: float | None = None
    status: str = "running"  # succeeded | failed | interrupted
    steps: list[JobStep] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    hint: str | None = None

    def save(self) -> None:
        state.write_json_atomic(state.lab_dir(self.lab) / "jobs" / f"{self.id}.json", asdict(self))

    @contextmanager
    def step(self, name: str, progress: Progress) -> Iterator[JobStep]:
        st = JobStep(name, time.time())
        self.steps.append(st)
        self.save()
        progress(f"{self.id}: {name}")
        try:
            yield st
        except BaseException:
            st.status = "failed"
            raise
        finally:
            st.end = time.time()
            if st.status == "running":
                st.status = "succeeded"
            self.save()


def _new_job(lab: str, kind: str) -> Job:
    d = state.lab_dir(lab) / "jobs"
    d.mkdir(parents=True, exist_ok=True)
    n = len(list(d.glob("j*.json"))) + 1
    return Job(f"j{n}-{kind}", kind, lab, time.time())


@contextmanager
def _running(job: Job, hint: str) -> Iterator[Job]:
    """Record how a job ended; on failure or interrupt, say how to continue or roll back."""
    try:
        yield job
        job.status = "succeeded"
    except KeyboardInterrupt:
        job.status, job.error, job.hint = "interrupted", "interrupted by a signal", hint
        raise
    except DrillError as exc:
        job.status, job.error, job.hint = "failed", str(exc), hint
        raise
    finally:
        job.ended_at = time.time()
        job.save()


def jobs(lab: str) -> list[Job]:
    """Every job of the lab, oldest first."""
    out = []
    for f in sorted(
        (state.lab_dir(lab) / "jobs").glob("j*.json"), key=lambda p: int(p.stem[1:].split("-")[0])
    ):
        data = json.loads(f.read_text())
        data["steps"] = [JobStep(**s) for s in data["steps"]]
        out.append(Job(**data))
    return out


def job(lab: str, job_id: str) -> Job:
    """One job by id; UsageError if there is none."""
    for j in jobs(lab):
        if j.id == job_id:
            return j
    raise UsageError(f"no job {job_id!r} in lab {lab!r} (see `drill jobs`)")


# --- recovery points -------------------------------------------------------------------------


def choose_points(ref: LabRef, point: str) -> dict[str, core.Manifest]:
    """The point each protected host fails over to; UsageError if one has none."""
    p = _protection(ref)
    store = control.open_store(ref)
    found = {h: control.list_points(store, h) for h in p.hosts}
    for h, pts in found.items():
        if not pts:
            raise UsageError(f"{h} has no recovery point yet: wait for replication to publish one")
    if point in ("latest", "latest-processed"):
        return {h: pts[-1] for h, pts in found.items()}
    if point == "latest-app-consistent":
        out = {}
        for h, pts in found.items():
            app = [m for m in pts if m.type == "app-consistent"]
            if not app:
                raise UsageError(f"{h} has no app-consistent point (is app_consistent_s set?)")
            out[h] = app[-1]
        return out
    if point == "latest-multi-vm":
        return _multi_vm(p, found)
    try:
        seq = int(point)
    except ValueError:
        raise UsageError(
            f"a point is one of {', '.join(POINT_KINDS)} or a point id, not {point!r}"
        ) from None
    return {h: control.find_point(store, h, seq) for h in p.hosts}


def _multi_vm(p: Any, found: dict[str, list[core.Manifest]]) -> dict[str, core.Manifest]:
    out: dict[str, core.Manifest] = {}
    grouped = {h for members in p.groups.values() for h in members}
    for members in p.groups.values():
        shared = set.intersection(*({m.taken_at for m in found[h]} for h in members))
        if not shared:
            raise UsageError(f"group {', '.join(members)} has no multi-VM consistent point yet")
        t = max(shared)
        for h in members:
            out[h] = next(m for m in found[h] if m.taken_at == t)
    for h, pts in found.items():
        if h not in grouped:
            out[h] = pts[-1]
    return out


def _protection(ref: LabRef) -> Any:
    p = ref.plan.topology.protection
    if p is None:
        raise UsageError(f"lab {ref.plan.lab!r} protects nothing (no protection section)")
    return p


# --- recovered hosts -------------------------------------------------------------------------


def _recovered_dir(lab: str, tag: str, host: str) -> Path:
    return state.lab_dir(lab) / "recovered" / tag / host


def recovered_images(lab: str, host: str, tag: str = "dr") -> list[Path]:
    """The restored disk images of ``host``'s copy (``dr`` or ``test``)."""
    return sorted(_recovered_dir(lab, tag, host).glob("*.img"))


def _mount(img: Path, mnt: Path) -> None:
    mnt.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(mnt):
        disks.run_tool(["mount", "-o", "loop", str(img), str(mnt)], f"mounting {img.name}")


def _restore_disks(ref: LabRef, host: str, m: core.Manifest, tag: str) -> dict[str, str]:
    """Restore every disk of ``host`` at point ``m``; container binds of the mounted copies."""
    d = _recovered_dir(ref.plan.lab, tag, host)
    binds = {}
    for disk in ref.plan.hosts[host].host.disks:
        img, mnt = d / f"{disk.name}.img", d / "mnt" / disk.name
        if mnt.exists() and os.path.ismount(mnt):
            disks.run_tool(["umount", str(mnt)], f"unmounting an old copy of {host}")
        img.unlink(missing_ok=True)
        img.parent.mkdir(parents=True, exist_ok=True)
        control.restore(ref.plan.lab, host, m.seq, img, disk=disk.name, runtime=ref.rt)
        _mount(img, mnt)
        binds[str(mnt)] = f"{disk.mount}:rw"
    return binds


def _copy_plan(
    ref: LabRef, host: str, tag: str, network: str, address: str, public: str | None, gw: str | None
) -> HostPlan:
    src = ref.plan.hosts[host]
    return HostPlan(
        name=host,
        site=ref.plan.topology.recovery_site if gw else None,
        host=src.host,
        container=naming.object_name(ref.plan.lab, f"{host}-{tag}"),
        network=network,
        address=address,
        public_address=public,
        gateway=gw,
    )


def recovery_copy(ref: LabRef, host: str) -> HostPlan:
    """Where ``host`` runs after failover: its placement in the recovery site."""
    plan = ref.plan
    pl = plan.hosts[host].host.recovery
    assert pl is not None  # validated for protected hosts
    rsite = plan.topology.recovery_site
    return _copy_plan(
        ref,
        host,
        "dr",
        plan.networks[f"{rsite}.{pl.subnet}"].name,
        plan.addr(pl.address),
        plan.addr(pl.public_address) if pl.public_address else None,
        plan.addr(plan.topology.sites[rsite].gateway.addresses[pl.subnet]),
    )


def _start_copy(ref: LabRef, hp: HostPlan, binds: dict[str, str], tag: str) -> None:
    spec = ROLES[hp.role].spec(ref.plan, hp)
    labels = {**ref.plan.object_labels("host", f"{hp.name}-{tag}", hp.site), FAILOVER_LABEL: tag}
    env = {**spec.env, "DRILL_SITE": hp.site or "test"}
    spec = dataclasses.replace(spec, binds=binds, labels=labels, env=env)
    if hp.gateway is None:
        spec = dataclasses.replace(spec, cap_add=())
    ref.rt.run(spec)
    ROLES[hp.role].configure(ref.rt, ref.plan, hp)


def _wait_ready(ref: LabRef, hps: list[HostPlan], timeout_s: float = READY_TIMEOUT_S) -> float:
    """Wait until every copy passes its role's readiness check; seconds waited."""
    t0 = time.monotonic()
    pending = list(hps)
    while pending:
        pending = [hp for hp in pending if ROLES[hp.role].check_ready(ref.rt, ref.plan, hp)]
        if not pending:
            break
        if time.monotonic() - t0 > timeout_s:
            names = ", ".join(hp.name for hp in pending)
            raise HarnessError(f"recovered host(s) {names} not ready after {timeout_s:.0f}s")
        time.sleep(0.1)
    return time.monotonic() - t0


def _groups(ref: LabRef, plan_name: str | None) -> list[PlanGroup]:
    """The groups to run: the plan's, or one group of every protected host without a plan."""
    p = _protection(ref)
    if plan_name is None:
        return [PlanGroup(hosts=tuple(p.hosts))]
    plans = ref.plan.topology.recovery_plans
    if plan_name not in plans:
        raise UsageError(
            f"unknown recovery plan {plan_name!r}; plans: {', '.join(plans) or 'none'}"
        )
    return list(plans[plan_name].groups)


# --- plan actions ----------------------------------------------------------------------------


@dataclass
class Actions:
    """How plan actions run in one job: planned or not, auto-confirmed or not, until when."""

    planned: bool
    auto_confirm: bool
    deadline: float  # time.monotonic() value; the plan's timeout bounds the whole job


def _pending_file(lab: str) -> Path:
    return state.lab_dir(lab) / "plan-pending.json"


def _confirm_file(lab: str) -> Path:
    return state.lab_dir(lab) / "plan-confirm"


def confirm(lab: str) -> dict[str, Any]:
    """Confirm the manual action a running plan waits for; UsageError if none waits."""
    open_lab(lab)
    try:
        pending: dict[str, Any] = json.loads(_pending_file(lab).read_text())
    except (OSError, ValueError):
        raise UsageError(f"no recovery plan of lab {lab!r} waits for a manual action") from None
    state.write_json_atomic(_confirm_file(lab), {"token": pending["token"], "at": time.time()})
    return pending


def _left(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise HarnessError(f"the recovery plan's timeout expired before {what}")
    return left


def _action_container(ref: LabRef, host: str) -> str:
    """Where a script for ``host`` runs: its running recovery copy, else the host itself."""
    running = {
        c.name for c in ref.rt.containers({naming.LAB: ref.plan.lab}) if c.state == "running"
    }
    copy = naming.object_name(ref.plan.lab, f"{host}-dr")
    return copy if copy in running else ref.plan.hosts[host].container


def _describe(action: PlanAction) -> str:
    if isinstance(action, ScriptAction):
        return f"script {action.script!r} in {action.container}"
    return f"manual action {action.manual!r}"


def _run_script(ref: LabRef, action: ScriptAction, how: Actions, label: str) -> dict[str, Any]:
    left = _left(how.deadline, label)
    container = _action_container(ref, action.container)
    # coreutils' timeout bounds the script by what is left of the plan's timeout
    res = ref.rt.exec(container, ["timeout", f"{left:.1f}", "sh", "-c", action.script])
    detail = {"container": container, "exit_code": res.exit_code, "output": res.output[-2000:]}
    if not res.ok:
        why = "timed out" if res.exit_code == 124 else f"exited {res.exit_code}"
        tail = res.output.strip().splitlines()[-1:] or [""]
        detail["error"] = f"{label} ({_describe(action)}) {why}: {tail[0]}".rstrip(": ")
    return detail


def _wait_manual(
    lab: str, job: Job, action: ManualAction, how: Actions, label: str
) -> dict[str, Any]:
    if how.auto_confirm:
        return {"confirmed_by": "auto", "instruction": action.manual}
    token = secrets.token_hex(6)
    _confirm_file(lab).unlink(missing_ok=True)
    state.write_json_atomic(
        _pending_file(lab),
        {"job": job.id, "action": label, "instruction": action.manual, "token": token},
    )
    try:
        while True:
            try:
                got = json.loads(_confirm_file(lab).read_text())
            except (OSError, ValueError):
                got = {}
            if got.get("token") == token:
                return {"confirmed_by": "drill plan confirm", "instruction": action.manual}
            _left(how.deadline, f"{label} ({action.manual!r}) was confirmed")
            time.sleep(0.2)
    finally:
        _pending_file(lab).unlink(missing_ok=True)
        _confirm_file(lab).unlink(missing_ok=True)


def _run_actions(
    ref: LabRef,
    job: Job,
    actions: tuple[PlanAction, ...],
    where: str,
    how: Actions,
    progress: Progress,
) -> None:
    """Run a group's pre- or post-actions in order, each a job step."""
    for i, action in enumerate(actions, 1):
        label = f"{where} {i}"
        with job.step(f"{label}: {_describe(action)}", progress) as st:
            if isinstance(action, ManualAction):
                if not how.auto_confirm:
                    progress(f"{job.id}: waiting for {action.manual!r}: run drill plan confirm")
                st.detail = _wait_manual(ref.plan.lab, job, action, how, label)
                continue
            st.detail = _run_script(ref, action, how, label)
            if "error" in st.detail:
                if how.planned:
                    raise HarnessError(f"planned failover stopped: {st.detail['error']}")
                st.status = "failed"  # an unplanned failover goes on, as in Azure
                job.result.setdefault("failed_actions", []).append(st.detail["error"])


def _bring_up(
    ref: LabRef,
    job: Job,
    points: dict[str, core.Manifest],
    groups: list[PlanGroup],
    make: Callable[[str], HostPlan],
    tag: str,
    progress: Progress,
    how: Actions,
) -> dict[str, Any]:
    """Start the groups in order: pre-actions, hosts in parallel until healthy, post-actions."""
    started: dict[str, Any] = {}
    for i, group in enumerate(groups, 1):
        _run_actions(ref, job, group.pre_actions, f"group {i} pre-action", how, progress)
        with job.step(f"group {i}: {', '.join(group.hosts)}", progress) as st:
            hps = [make(h) for h in group.hosts]

            def one(hp: HostPlan) -> None:
                binds = _restore_disks(ref, hp.name, points[hp.name], tag)
                _start_copy(ref, hp, binds, tag)

            with ThreadPoolExecutor(max_workers=len(hps)) as pool:
                for f in [pool.submit(one, hp) for hp in hps]:
                    f.result()
            waited = _wait_ready(ref, hps, _left(how.deadline, f"group {i} was healthy"))
            st.detail = {
                "hosts": {
                    hp.name: {"address": hp.address, "point": points[hp.name].seq} for hp in hps
                },
                "ready_after_s": round(waited, 3),
                "healthy_at": time.time(),
            }
            started.update(st.detail["hosts"])
        _run_actions(ref, job, group.post_actions, f"group {i} post-action", how, progress)
    return started


# --- test failover ---------------------------------------------------------------------------


def _test_networks(ref: LabRef, space: ipaddress.IPv4Network) -> dict[str, NetworkSpec]:
    plan = ref.plan
    rsite = plan.topology.recovery_site
    out = {}
    for sub, net in plan.topology.sites[rsite].subnets.items():
        lab_net = ipaddress.IPv4Network(plan.net(net))
        cidr = ipaddress.IPv4Network(
            (relocate(lab_net.network_address, plan.space, space), lab_net.prefixlen)
        )
        out[sub] = NetworkSpec(
            name=naming.object_name(plan.lab, f"test-{sub}"),
            subnet=str(cidr),
            gateway=str(cidr.network_address + 1),
            labels={**plan.object_labels("network", f"test-{sub}", rsite), FAILOVER_LABEL: "test"},
            internal=True,
        )
    return out


def test_failover(lab: str, point: str = "latest", *, progress: Progress = _quiet) -> Job:
    """Bring the protected hosts up from ``point`` in an isolated test network."""
    ref = open_lab(lab)
    st = _require(
        lab,
        ("protected", "failed-back", "reprotected", "committed", "failed-over"),
        "start a test failover",
    )
    if st["test"]:
        raise UsageError(
            "a test failover exists already; remove it with drill failover --cleanup-test"
        )
    points = choose_points(ref, point)
    job = _new_job(lab, "test-failover")
    with _running(job, "remove what was made with drill failover --cleanup-test"):
        with job.step("create the test network", progress) as s:
            used = [
                ipaddress.ip_network(x, strict=False) for x in ref.rt.all_subnets() if ":" not in x
            ]
            space = next(
                c
                for c in candidate_spaces(ref.plan.topology)
                if not any(c.overlaps(u) for u in used)
            )
            nets = _test_networks(ref, space)
            for spec in nets.values():
                ref.rt.create_network(spec)
            s.detail = {"space": str(space), "networks": [n.name for n in nets.values()]}
        st["test"] = {"space": str(space), "job": job.id}
        _write_state(lab, st)

        def make(h: str) -> HostPlan:
            pl = ref.plan.hosts[h].host.recovery
            assert pl is not None
            addr = relocate(ipaddress.IPv4Address(ref.plan.addr(pl.address)), ref.plan.space, space)
            return _copy_plan(ref, h, "test", nets[pl.subnet].name, str(addr), None, None)

        how = Actions(planned=False, auto_confirm=True, deadline=time.monotonic() + READY_TIMEOUT_S)
        group = PlanGroup(hosts=tuple(points))
        job.result["hosts"] = _bring_up(ref, job, points, [group], make, "test", progress, how)
        with job.step("isolate the test copies", progress) as s:
            s.detail = {h: _drop_default_route(ref, make(h)) for h in points}
        job.result["points"] = {
            h: {"seq": m.seq, "type": m.type, "taken_at": m.taken_at} for h, m in points.items()
        }
        st["test"]["hosts"] = job.result["hosts"]
        _write_state(lab, st)
    return job


def _drop_default_route(ref: LabRef, hp: HostPlan) -> str:
    """Remove the default route Docker gives even an internal network: the test has no gateway.

    A one-off task in the copy's network namespace does it, so the copy itself runs without
    NET_ADMIN and cannot put the route back.
    """
    spec = ContainerSpec(
        name=naming.object_name(ref.plan.lab, f"task-{secrets.token_hex(3)}"),
        image=naming.image_ref("base"),
        hostname="",
        networks=(),
        labels={naming.LAB: ref.plan.lab, naming.KIND: "task"},
        command=("sh", "-c", "ip route del default 2>/dev/null; ip route show"),
        cap_add=("NET_ADMIN",),
        network_mode=f"container:{hp.container}",
    )
    res = ref.rt.run_task(spec)
    if not res.ok:
        raise HarnessError(f"isolating the test copy of {hp.name}: {res.output.strip()}")
    return res.output.strip()


def cleanup_test(lab: str, *, progress: Progress = _quiet) -> Job:
    """Remove the test failover's copies, disks and network."""
    ref = open_lab(lab)
    st = read_state(lab)
    if not st["test"]:
        raise UsageError("there is no test failover to clean up")
    job = _new_job(lab, "cleanup-test")
    with _running(job, "run drill failover --cleanup-test again"):
        with job.step("remove test copies", progress) as s:
            s.detail["removed"] = _remove_copies(ref, "test")
        st["test"] = None
        _write_state(lab, st)
    return job


def _remove_copies(ref: LabRef, tag: str) -> int:
    sel = {naming.LAB: ref.plan.lab, FAILOVER_LABEL: tag}
    cs = ref.rt.containers(sel)
    for c in cs:
        ref.rt.remove_container(c.name)
    nets = ref.rt.networks(sel)
    for n in nets:
        ref.rt.remove_network(n.name)
    disks.detach_under(state.lab_dir(ref.plan.lab) / "recovered" / tag)
    return len(cs) + len(nets)


# --- failover --------------------------------------------------------------------------------


def _app_flush(hp: HostPlan) -> None:
    if hp.role == "app":
        requests.post(f"http://{hp.address}/admin/flush", timeout=5).raise_for_status()


def _final_points(ref: LabRef, after: float, timeout_s: float) -> dict[str, core.Manifest]:
    """Wait until every protected host has a point taken after ``after`` (the source stopped)."""
    p = _protection(ref)
    store = control.open_store(ref)
    deadline = time.monotonic() + timeout_s
    while True:
        latest = {h: control.list_points(store, h) for h in p.hosts}
        done = {h: pts[-1] for h, pts in latest.items() if pts and pts[-1].taken_at > after}
        if len(done) == len(p.hosts):
            return done
        if time.monotonic() > deadline:
            missing = ", ".join(h for h in p.hosts if h not in done)
            raise HarnessError(f"no final recovery point for {missing} within {timeout_s:.0f}s")
        time.sleep(0.2)


def failover(
    lab: str,
    *,
    planned: bool = False,
    point: str = "latest",
    plan: str | None = None,
    auto_confirm: bool = False,
    progress: Progress = _quiet,
) -> Job:
    """Fail the protected hosts over into the recovery site (unplanned unless ``planned``).

    ``auto_confirm`` confirms the plan's manual actions at once (drills); otherwise each waits
    for ``drill plan confirm``. Fails, interrupted or not, are cancelled (see the module).
    """
    ref = open_lab(lab)
    st = _require(lab, ("protected",), "fail over")
    if st["test"]:
        raise UsageError(
            f"cannot fail over: lab {lab!r} has a test failover; allowed next: "
            "drill failover --cleanup-test"
        )
    groups = _groups(ref, plan)
    timeout = ref.plan.topology.recovery_plans[plan].timeout_s if plan else READY_TIMEOUT_S * 2
    p = _protection(ref)
    running = {c.name for c in ref.rt.containers({naming.LAB: lab}) if c.state == "running"}
    rep_name = replicator.container(ref.plan)
    if planned:
        down = [h for h in p.hosts if ref.plan.hosts[h].container not in running]
        if down or rep_name not in running:
            raise UsageError(
                f"cannot shut the source down cleanly ({', '.join(down) or 'the replicator'} not "
                "running): use an unplanned failover"
            )
        points: dict[str, core.Manifest] = {}
    else:
        points = choose_points(ref, point)
    job = _new_job(lab, "planned-failover" if planned else "failover")
    how = Actions(planned, auto_confirm, time.monotonic() + timeout)
    stopped: list[HostPlan] = []
    hint = "cancelled: the lab is protected as before; fix the cause and run drill failover again"
    with _running(job, hint):
        try:
            if planned:
                with job.step("shut down the source", progress) as s:
                    hps = [ref.plan.hosts[h] for h in p.hosts]
                    for hp in hps:
                        _app_flush(hp)
                    for hp in hps:
                        ref.rt.stop(hp.container, timeout_s=5)
                        stopped.append(hp)
                    stopped_at = time.time()
                    s.detail = {"stopped": [hp.name for hp in hps]}
                with job.step("final sync", progress) as s:
                    wait = min(p.policy.crash_consistent_s * 3 + 30, _left(how.deadline, "sync"))
                    points = _final_points(ref, stopped_at, timeout_s=wait)
                    s.detail = {
                        h: {"point": m.seq, "taken_at": m.taken_at} for h, m in points.items()
                    }
            with job.step("stop replication", progress) as s:
                if rep_name in running:
                    replicator.stop(ref.rt, ref.plan, timeout_s=5)
                s.detail = {"replicator_was_running": rep_name in running}
            job.result["points"] = {
                h: {"seq": m.seq, "type": m.type, "taken_at": m.taken_at} for h, m in points.items()
            }
            job.result["hosts"] = _bring_up(
                ref, job, points, groups, lambda h: recovery_copy(ref, h), "dr", progress, how
            )
        except BaseException:
            _cancel(ref, job, stopped, rep_name in running, progress)
            raise
        st.update(
            state="failed-over",
            active=ref.plan.topology.recovery_site,
            job=job.id,
            points=job.result["points"],
            planned=planned,
        )
        _write_state(lab, st)
    return job


def _cancel(
    ref: LabRef, job: Job, stopped: list[HostPlan], restart_replicator: bool, progress: Progress
) -> None:
    """Undo a failover that did not finish: copies removed, source and replicator restarted."""
    with job.step("cancel: back to protected", progress) as s:
        s.detail["removed"] = _remove_copies(ref, "dr")
        for hp in stopped:
            ref.rt.start(hp.container)
            ROLES[hp.role].configure(ref.rt, ref.plan, hp)
        if stopped:
            _wait_ready(ref, stopped)
        if restart_replicator:
            ref.rt.start(replicator.container(ref.plan))
        s.detail.update(restarted=[hp.name for hp in stopped], replicator=restart_replicator)


def commit(lab: str, *, progress: Progress = _quiet) -> Job:
    """Fix the failover's choice: delete every other recovery point of the protected hosts."""
    ref = open_lab(lab)
    st = _require(lab, ("failed-over",), "commit")
    job = _new_job(lab, "commit")
    with _running(job, "run drill commit again"):
        with job.step("delete the other recovery points", progress) as s:
            store = control.open_store(ref)
            deleted = 0
            for host, chosen in st["points"].items():
                for m in control.list_points(store, host):
                    if m.seq == chosen["seq"]:
                        continue
                    for dp in m.disks:
                        store.delete_snapshot(core.head_blob(host, dp.name), dp.snapshot)
                    store.delete_manifest(core.manifest_blob(host, m.seq))
                    deleted += 1
            s.detail = {"deleted_points": deleted}
        st["state"] = "committed"
        _write_state(lab, st)
    return job


# --- reprotect and failback ------------------------------------------------------------------


def _sync_image(src: Path, dst: Path) -> tuple[int, int, int]:
    """Copy the blocks of ``src`` that differ into ``dst`` (all of it if ``dst`` is missing).

    Compares 1 MiB pieces and sends the differing 4 KiB blocks inside them: 4 KiB is the
    filesystem's block, so a small write changes one block, and the 64 KiB chunks of the
    replicator would send up to 16 times what changed. Returns (bytes sent, bytes compared,
    what 64 KiB chunks would have sent). The filesystems must not be mounted read-write.
    """
    size = src.stat().st_size
    full = not dst.exists() or dst.stat().st_size != size
    sent = 0
    chunks64: set[int] = set()
    with open(src, "rb") as fs, open(dst, "r+b" if not full else "wb") as fd:
        if full:
            fd.truncate(size)
        for off in range(0, size, READ):
            a = fs.read(READ)
            if full:
                for i in range(0, len(a), CHUNK_64K):  # leave zero runs as holes
                    part = a[i : i + CHUNK_64K]
                    if part.count(0) != len(part):
                        os.pwrite(fd.fileno(), part, off + i)
                        sent += len(part)
                        chunks64.add((off + i) // CHUNK_64K)
                continue
            b = os.pread(fd.fileno(), len(a), off)
            if a == b:
                continue
            for i in range(0, len(a), CHUNK):
                if a[i : i + CHUNK] != b[i : i + CHUNK]:
                    os.pwrite(fd.fileno(), a[i : i + CHUNK], off + i)
                    sent += min(CHUNK, len(a) - i)
                    chunks64.add((off + i) // CHUNK_64K)
        os.fsync(fd.fileno())
    return sent, size, len(chunks64) * CHUNK_64K


def _onprem_images(ref: LabRef, host: str) -> list[tuple[Path, Path, Path]]:
    """(recovered image, recovered mount, on-prem image) of each disk of ``host``."""
    d = _recovered_dir(ref.plan.lab, "dr", host)
    return [
        (
            d / f"{disk.name}.img",
            d / "mnt" / disk.name,
            disks.image_path(ref.plan.lab, host, disk.name),
        )
        for disk in ref.plan.hosts[host].host.disks
    ]


def reprotect(lab: str, *, progress: Progress = _quiet) -> Job:
    """Replicate the active site's disks to the other site (deltas where the disk survived)."""
    ref = open_lab(lab)
    st = _require(lab, ("committed", "failed-back"), "reprotect")
    p = _protection(ref)
    job = _new_job(lab, "reprotect")
    with _running(job, "run drill reprotect again: it compares before it copies"):
        if st["state"] == "committed":
            with job.step("sync recovery copies to on-prem", progress) as s:
                rep = replicator.container(ref.plan)
                if any(
                    c.name == rep and c.state == "running"
                    for c in ref.rt.containers({naming.LAB: lab})
                ):
                    # Came back with on-prem: not its turn yet.
                    replicator.stop(ref.rt, ref.plan, timeout_s=5)
                total_sent = total = total64 = 0
                for host in p.hosts:
                    hp = ref.plan.hosts[host]
                    if _running_container(ref, hp):  # on-prem came back with stale data
                        ref.rt.stop(hp.container, timeout_s=2)
                    for img, mnt, onprem in _onprem_images(ref, host):
                        onprem_mnt = disks.mount_path(lab, host, onprem.stem)
                        disks.unmount(onprem_mnt)
                        disks.run_tool(["fsfreeze", "-f", str(mnt)], "freezing a recovery copy")
                        try:
                            sent, size, at64 = _sync_image(img, onprem)
                        finally:
                            disks.run_tool(["fsfreeze", "-u", str(mnt)], "thawing", check=False)
                        total_sent += sent
                        total += size
                        total64 += at64
                s.detail = {
                    "bytes_sent": total_sent,
                    "bytes_compared": total,
                    "bytes_at_64k_chunks": total64,
                }
            st["state"] = "reprotected"
            st["reprotect_bytes"] = total_sent
        else:
            with job.step("resume replication to the recovery site", progress) as s:
                ref.rt.start(replicator.container(ref.plan))
                _remove_copies(ref, "dr")
                for host in p.hosts:
                    control.resync(lab, host, runtime=ref.rt)
                s.detail = {"resynced": list(p.hosts)}
            st["state"] = "protected"
            st["active"] = ref.plan.topology.primary_site
        _write_state(lab, st)
        job.result = {"state": st["state"]}
    return job


def _running_container(ref: LabRef, hp: HostPlan) -> bool:
    return any(
        c.name == hp.container and c.state == "running"
        for c in ref.rt.containers({naming.LAB: ref.plan.lab})
    )


def failback(lab: str, *, progress: Progress = _quiet) -> Job:
    """A planned failover back to on-prem: stop the copies, final delta sync, start on-prem."""
    ref = open_lab(lab)
    st = _require(lab, ("reprotected",), "fail back")
    p = _protection(ref)
    job = _new_job(lab, "failback")
    with _running(
        job, "the on-prem disks are consistent after each sync: run drill failback again"
    ):
        with job.step("shut down the recovery copies", progress) as s:
            copies = [recovery_copy(ref, h) for h in p.hosts]
            for hp in copies:
                _app_flush(hp)
            for hp in copies:
                ref.rt.stop(hp.container, timeout_s=5)
            s.detail = {"stopped": [hp.container for hp in copies]}
        with job.step("final sync to on-prem", progress) as s:
            sent = 0
            for host in p.hosts:
                for img, _, onprem in _onprem_images(ref, host):
                    sent += _sync_image(img, onprem)[0]
            s.detail = {"bytes_sent": sent}
        with job.step("start on-prem hosts", progress) as s:
            hps = [ref.plan.hosts[h] for h in p.hosts]
            for hp in hps:
                disks.attach(ref.plan, hp)
                ref.rt.start(hp.container)
                ROLES[hp.role].configure(ref.rt, ref.plan, hp)
            s.detail = {"ready_after_s": round(_wait_ready(ref, hps), 3)}
        st.update(state="failed-back", active=ref.plan.topology.primary_site)
        _write_state(lab, st)
    return job


# --- for drills ------------------------------------------------------------------------------


def run_recovery(
    lab: str,
    action: str,
    *,
    point: str = "latest",
    plan: str | None = None,
    auto_confirm: bool = True,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Run a drill's recovery action; the job's result as evidence.

    Drills run unattended, so manual plan actions are confirmed at once unless
    ``auto_confirm`` is False (the job records which).
    """
    ac = auto_confirm
    if action == "failover":
        j = failover(lab, point=point, plan=None, auto_confirm=ac, progress=progress)
    elif action == "recovery-plan":
        j = failover(lab, point=point, plan=plan, auto_confirm=ac, progress=progress)
    elif action == "planned-failover":
        j = failover(lab, planned=True, plan=plan, auto_confirm=ac, progress=progress)
    elif action == "test-failover":
        j = test_failover(lab, point=point, progress=progress)
    else:
        raise UsageError(f"unknown recovery action {action!r}")
    return {"job": j.id, **j.result}


def failback_all(lab: str, *, progress: Progress = _quiet) -> dict[str, Any]:
    """Commit, reprotect, fail back and reprotect again: home, protected as before."""
    out = {}
    for step in (commit, reprotect, failback, reprotect):
        j = step(lab, progress=progress)
        out[j.id] = j.result
    return out
