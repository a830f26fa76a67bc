"""The ``drill`` command line: each sub-command parses options and calls one library function.

Exit codes: 0 success; 1 a drill objective was missed; 2 bad input or a harness failure (the
message says which); 130 interrupted (after cleaning up what the interrupted run created).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from harness import __version__, engine, lab
from harness import topology as topo_mod
from harness.errors import DrillError
from harness.signals import interruptible


def _progress(msg: str) -> None:
    click.echo(msg, err=True)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def run_command(fn: Callable[[], int | None]) -> None:
    """Run a command body with the harness's error and signal handling."""
    try:
        with interruptible():
            code = fn()
    except DrillError as exc:
        click.echo(f"drill: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("drill: interrupted; what this run created has been removed", err=True)
        sys.exit(130)
    sys.exit(code or 0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="drill")
def main() -> None:
    """Rehearse an enterprise disaster-recovery design on one machine, with real containers."""


# --- engine ----------------------------------------------------------------------------------


@main.group("engine")
def engine_group() -> None:
    """Find, start or stop the Docker engine drill uses."""


@engine_group.command("ensure")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def engine_ensure(as_json: bool) -> None:
    """Use the engine that answers, or install and start a private dockerd (root)."""

    def body() -> None:
        info = engine.ensure(progress=_progress)
        if as_json:
            _emit_json(info.__dict__)
        else:
            click.echo(info.describe())
            if info.private and os.environ.get("DOCKER_HOST") != info.docker_host:
                click.echo(f"to use it with the docker CLI: export DOCKER_HOST={info.docker_host}")

    run_command(body)


@engine_group.command("stop")
def engine_stop() -> None:
    """Stop the private engine, if drill started one (never any other engine)."""

    def body() -> None:
        click.echo("private engine stopped" if engine.stop() else "no private engine running")

    run_command(body)


@engine_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def engine_status(as_json: bool) -> int:
    """Say which engine answers, if any."""
    info = engine.find()
    if as_json:
        _emit_json(info.__dict__ if info else None)
    else:
        click.echo(info.describe() if info else "no engine answers")
    sys.exit(0 if info else 2)


# --- images ----------------------------------------------------------------------------------


@main.group("images")
def images_group() -> None:
    """Build the container images of every role (offline, cached by content)."""


@images_group.command("build")
@click.argument("roles", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even when the content is unchanged.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def images_build(roles: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Build ROLES (default: all), skipping roles whose content is unchanged."""
    from harness import images

    def body() -> None:
        unknown = sorted(set(roles) - set(images.ROLES))
        if unknown:
            from harness.errors import UsageError

            raise UsageError(
                f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(images.ROLES)}"
            )
        results = images.build_images(
            engine.connect(timeout=600), roles or None, progress=_progress, force=force
        )
        if as_json:
            _emit_json([r.__dict__ for r in results])
        else:
            for r in results:
                what = "built" if r.built else "up to date"
                click.echo(f"{r.role:10} {r.ref:40} {what} ({r.seconds:.1f}s)")

    run_command(body)


# --- topology --------------------------------------------------------------------------------


@main.command("validate")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
def validate(files: tuple[str, ...], as_json: bool) -> None:
    """Check topology FILES; exit 0 if all are valid, else 2 with every problem by its path."""
    from harness.errors import TopologyError

    results: list[dict[str, Any]] = []
    for f in files:
        try:
            t = topo_mod.load(lab.resolve_topology(f))
            results.append({"file": f, "valid": True, "name": t.name, "problems": []})
        except TopologyError as exc:
            results.append(
                {
                    "file": f,
                    "valid": False,
                    "problems": [{"path": p.path, "message": p.message} for p in exc.problems],
                }
            )
            if not as_json:
                click.echo(str(exc), err=True)
    if as_json:
        _emit_json(results)
    elif all(r["valid"] for r in results):
        for r in results:
            click.echo(f"{r['file']}: valid (topology {r['name']!r})")
    sys.exit(0 if all(r["valid"] for r in results) else 2)


@main.command("schema")
def schema() -> None:
    """Print the JSON Schema of topology files."""
    _emit_json(topo_mod.json_schema())


# --- lab lifecycle ---------------------------------------------------------------------------


@main.command("up")
@click.argument("topology", required=False)
@click.option("--name", default="default", show_default=True, help="The lab's name.")
@click.option("--json", "as_json", is_flag=True, help="Print the lab's status as JSON.")
@click.option(
    "--timeout", default=lab.READY_TIMEOUT_S, show_default=True, help="Seconds to wait for hosts."
)
def up(topology: str | None, name: str, as_json: bool, timeout: float) -> None:
    """Bring TOPOLOGY (a file or a name in topologies/, default enterprise) up as a lab."""

    def body() -> None:
        st = lab.up(topology, name, progress=_progress, ready_timeout_s=timeout)
        _print_status(st, as_json)

    run_command(body)


@main.command("status")
@click.option("--name", default="default", show_default=True, help="The lab's name.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(name: str, as_json: bool) -> None:
    """Show a lab's hosts: site, addresses, state and health."""

    def body() -> int:
        st = lab.status(name)
        _print_status(st, as_json)
        return 0 if st.healthy else 1

    run_command(body)


def _print_status(st: lab.LabStatus, as_json: bool) -> None:
    if as_json:
        _emit_json(st.to_json())
        return
    age = time.time() - st.created_at if st.created_at else 0
    click.echo(
        f"lab {st.lab}  topology {st.topology}  space {st.space}  run {st.run_id}  "
        f"age {age:.0f}s  {'healthy' if st.healthy else 'NOT healthy'}"
    )
    click.echo(f"  {'HOST':12} {'SITE':9} {'ROLE':10} {'STATE':8} {'ADDRESSES':34} HEALTH")
    for h in st.hosts:
        addrs = ",".join(a for a in h.addresses.values() if a)
        click.echo(
            f"  {h.name:12} {h.site or 'internet':9} {h.role:10} {h.state:8} {addrs:34} {h.health}"
        )


@main.command("down")
@click.option("--name", default="default", show_default=True, help="The lab's name.")
@click.option("--all", "all_labs", is_flag=True, help="Remove every lab, found by label.")
def down(name: str, all_labs: bool) -> None:
    """Take a lab down (or every lab with --all), leaving nothing behind."""

    def body() -> None:
        n = lab.down_all(progress=_progress) if all_labs else lab.down(name, progress=_progress)
        click.echo(f"removed {n} objects")

    run_command(body)


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print the labs as JSON.")
def ls(as_json: bool) -> None:
    """List the labs (sandboxes) on the engine: age, state, running scenario."""
    from harness import sandbox

    def body() -> None:
        labs = sandbox.list_sandboxes()
        if as_json:
            _emit_json([s.to_json() for s in labs])
            return
        if not labs:
            click.echo("no labs")
        for s in labs:
            age = "?" if s.age_s is None else f"{s.age_s:.0f}s"
            scen = f"  scenario {s.scenario}" if s.scenario else ""
            click.echo(
                f"{s.lab:16} {s.topology:12} {s.state:12} age {age:>6}  "
                f"{s.running}/{s.containers} running  run {s.run_id}{scen}"
            )

    run_command(body)


# --- tunnel and faults ------------------------------------------------------------------------


@main.group("tunnel")
def tunnel_group() -> None:
    """The site-to-site VPN tunnel between the gateways."""


@tunnel_group.command("status")
@click.option("--name", default="default", show_default=True, help="The lab's name.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def tunnel_status(name: str, as_json: bool) -> None:
    """Per gateway: peer, endpoint, latest handshake age, bytes in and out, up or down."""
    from harness import tunnel

    def body() -> int:
        ends = tunnel.status(name)
        if as_json:
            _emit_json([e.to_json() for e in ends])
        else:
            for e in ends:
                age = "never" if e.handshake_age_s is None else f"{e.handshake_age_s:.1f}s ago"
                click.echo(
                    f"{e.site:8} -> {e.peer_site:8} {e.state:5} endpoint {e.endpoint or '-':22} "
                    f"handshake {age:12} rx {e.rx_bytes} B  tx {e.tx_bytes} B"
                )
        return 0 if all(e.up for e in ends) else 1

    run_command(body)


@main.group("fault")
def fault_group() -> None:
    """Inject, list and heal network faults (each recorded with start and end times)."""


def _fault_cmd(kind: str, **params: Any) -> Callable[[], None]:
    from harness import faults

    name = params.pop("name")
    as_json = params.pop("as_json")

    def body() -> None:
        rec = faults.inject(name, kind, **params)
        if as_json:
            _emit_json(rec.public())
        else:
            click.echo(f"{rec.id} injected into lab {name!r} ({_fmt_params(rec.params)})")

    return body


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if v not in (None, 0, 0.0)) or "-"


_name_opt = click.option("--name", default="default", show_default=True, help="The lab's name.")
_json_opt = click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")


@fault_group.command("partition")
@_name_opt
@_json_opt
def fault_partition(name: str, as_json: bool) -> None:
    """No packet crosses the wan between the gateways."""
    run_command(_fault_cmd("partition", name=name, as_json=as_json))


@fault_group.command("degrade")
@_name_opt
@_json_opt
@click.option("--delay", "delay_ms", type=float, help="Added one-way delay, ms (each direction).")
@click.option("--jitter", "jitter_ms", type=float, help="Delay varies by up to this, ms.")
@click.option("--loss", "loss_pct", type=float, help="Packets lost, percent (seeded).")
@click.option("--rate", "rate_mbit", type=float, help="Rate limit, Mbit/s (kernel tbf).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for loss and jitter.")
def fault_degrade(name: str, as_json: bool, **params: Any) -> None:
    """Delay, jitter, loss and rate limit on the wan between the gateways."""
    run_command(_fault_cmd("degrade", name=name, as_json=as_json, **params))


@fault_group.command("gateway-down")
@click.argument("site")
@_name_opt
@_json_opt
def fault_gateway_down(site: str, name: str, as_json: bool) -> None:
    """Stop SITE's gateway container."""
    run_command(_fault_cmd("gateway-down", name=name, as_json=as_json, site=site))


@fault_group.command("mtu-blackhole")
@_name_opt
@_json_opt
@click.option(
    "--mtu", type=int, default=1280, show_default=True, help="Largest packet that passes."
)
def fault_mtu_blackhole(name: str, as_json: bool, mtu: int) -> None:
    """Tunnel packets larger than MTU bytes are silently dropped on the wan."""
    run_command(_fault_cmd("mtu-blackhole", name=name, as_json=as_json, mtu=mtu))


@fault_group.command("site-outage")
@click.argument("site", required=False)
@_name_opt
@_json_opt
def fault_site_outage(site: str | None, name: str, as_json: bool) -> None:
    """Stop every container of SITE (default: the primary site), gateway included."""
    run_command(_fault_cmd("site-outage", name=name, as_json=as_json, site=site))


@fault_group.command("host-outage")
@click.argument("host")
@_name_opt
@_json_opt
def fault_host_outage(host: str, name: str, as_json: bool) -> None:
    """Stop HOST's container."""
    run_command(_fault_cmd("host-outage", name=name, as_json=as_json, host=host))


@fault_group.command("storage-outage")
@_name_opt
@_json_opt
def fault_storage_outage(name: str, as_json: bool) -> None:
    """Stop the storage account's host."""
    run_command(_fault_cmd("storage-outage", name=name, as_json=as_json))


@fault_group.command("dns-outage")
@_name_opt
@_json_opt
def fault_dns_outage(name: str, as_json: bool) -> None:
    """Stop the DNS host serving Traffic Manager."""
    run_command(_fault_cmd("dns-outage", name=name, as_json=as_json))


@fault_group.command("heal")
@click.argument("fault_id", required=False)
@_name_opt
@_json_opt
def fault_heal(fault_id: str | None, name: str, as_json: bool) -> None:
    """Undo FAULT_ID, or every active fault."""
    from harness import faults

    def body() -> None:
        healed = faults.heal(name, fault_id)
        if as_json:
            _emit_json([r.public() for r in healed])
        else:
            for r in healed:
                assert r.ended_at is not None
                click.echo(f"{r.id} healed after {r.ended_at - r.started_at:.1f}s")

    run_command(body)


@fault_group.command("list")
@_name_opt
@_json_opt
@click.option("--all", "show_all", is_flag=True, help="Include healed faults.")
def fault_list(name: str, as_json: bool, show_all: bool) -> None:
    """Show the active faults (with --all, healed ones too)."""
    from harness import faults

    def body() -> None:
        lab.open_lab(name)
        recs = faults.history(name) if show_all else faults.active(name)
        if as_json:
            _emit_json([r.public() for r in recs])
            return
        if not recs:
            click.echo("no active faults" if not show_all else "no faults")
        for r in recs:
            when = (
                "active" if r.ended_at is None else f"healed after {r.ended_at - r.started_at:.1f}s"
            )
            click.echo(f"{r.id:20} {r.kind:14} {_fmt_params(r.params):40} {when}")

    run_command(body)


# --- Traffic Manager (DNS) -------------------------------------------------------------------


@main.group("dns")
def dns_group() -> None:
    """Traffic Manager on CoreDNS: endpoint health, answers and control."""


@dns_group.command("status")
@_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def dns_status(name: str, as_json: bool) -> None:
    """Each endpoint's monitor status and last probes, the current answer, and timing."""
    from harness import trafficmanager

    def body() -> None:
        st = trafficmanager.status(name)
        if as_json:
            _emit_json(st.to_json())
            return
        ans = st.answer
        answer = (
            f"{ans.rcode} {','.join(ans.addresses) or '-'} (ttl {ans.ttl})"
            if ans
            else f"no answer: {st.answer_error}"
        )
        click.echo(
            f"profile {st.profile} ({st.routing}, ttl {st.ttl_s}s) "
            f"{'enabled' if st.enabled else 'DISABLED'}: {st.profile_status}; answer {answer}"
        )
        if st.vanity:
            click.echo(f"  {st.vanity} is a CNAME to {st.profile}")
        click.echo(
            f"  {'ENDPOINT':14} {'TARGET':16} {'ADDRESS':15} {'PRIO':>4} {'STATUS':17} PROBES"
        )
        for e in st.endpoints:
            probes = " ".join(
                ("ok" if p["ok"] else "FAIL") + f"({p['detail']})" for p in e.last_probes
            )
            click.echo(
                f"  {e.name:14} {e.target + '@' + e.site:16} {e.address:15} "
                f"{e.priority or '-':>4} {e.status:17} {probes}"
            )
        t = st.timing
        update = t.emulator_answer_s - t.emulator_degraded_s
        click.echo(
            f"  clients move within {t.emulator_clients_move_s:.1f}s here "
            f"(degraded {t.emulator_degraded_s:.1f}s + answer {update:.1f}s + ttl {t.ttl_s}s); "
            f"real Traffic Manager: up to {t.azure_clients_move_s:.0f}s (interval "
            f"{t.azure_interval_s:.0f}s, timeout {t.azure_timeout_s:.0f}s, ttl {t.ttl_s}s)"
        )

    run_command(body)


@dns_group.command("endpoint")
@click.argument("action", type=click.Choice(["enable", "disable", "stop", "start"]))
@click.argument("endpoint")
@_name_opt
def dns_endpoint(action: str, endpoint: str, name: str) -> None:
    """Enable or disable ENDPOINT, or mark its resource stopped or started."""
    from harness import trafficmanager

    def body() -> None:
        if action in ("enable", "disable"):
            trafficmanager.set_endpoint(name, endpoint, enabled=action == "enable")
        else:
            trafficmanager.set_endpoint(name, endpoint, stopped=action == "stop")
        click.echo(
            f"endpoint {endpoint}: {action}d"
            if action.endswith("e")
            else f"endpoint {endpoint}: {action}ped"
            if action == "stop"
            else f"endpoint {endpoint}: started"
        )

    run_command(body)


@dns_group.command("profile")
@click.argument("action", type=click.Choice(["enable", "disable"]))
@_name_opt
def dns_profile(action: str, name: str) -> None:
    """Enable or disable the whole profile (a disabled profile answers NXDOMAIN)."""
    from harness import trafficmanager

    def body() -> None:
        trafficmanager.set_profile(name, enabled=action == "enable")
        click.echo(f"profile {action}d")

    run_command(body)


# --- replication ------------------------------------------------------------------------------


@main.group("replication")
def replication_group() -> None:
    """Site Recovery replication: health, recovery points, verify, restore, resync."""


@replication_group.command("status")
@_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def replication_status(name: str, as_json: bool) -> None:
    """Per protected disk: state, RPO (age of the newest point), backlog and RPO alert."""
    from harness.replication import control

    def body() -> int:
        st = control.status(name)
        if as_json:
            _emit_json(st.to_json())
        else:
            click.echo(
                f"replicator {st.replicator}  freeze median {st.freeze_ms_median} ms  "
                f"max {st.freeze_ms_max} ms"
            )
            click.echo(f"  {'DISK':20} {'STATE':18} {'RPO':>8} {'BACKLOG':>10} {'SENT':>12} LATEST")
            for d in st.disks:
                rpo = "-" if d.rpo_s is None else f"{d.rpo_s:.1f}s"
                latest = (
                    f"#{d.latest_point['seq']} {d.latest_point['type']}" if d.latest_point else "-"
                )
                alert = "  RPO ALERT" if d.rpo_alert else ""
                click.echo(
                    f"  {d.host + '/' + d.disk:20} {d.state:18} {rpo:>8} {d.backlog_bytes:>10} "
                    f"{d.bytes_sent:>12} {latest}{alert}"
                )
        return 0 if st.healthy else 1

    run_command(body)


@replication_group.command("points")
@click.argument("host")
@_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the points as JSON.")
def replication_points(host: str, name: str, as_json: bool) -> None:
    """List HOST's recovery points, oldest first (ids are sequence numbers)."""
    from harness.replication import control

    def body() -> None:
        pts = control.points(name, host)
        if as_json:
            _emit_json([p.summary() for p in pts])
            return
        if not pts:
            click.echo(f"{host} has no recovery point yet")
        for p in pts:
            age = time.time() - p.taken_at
            click.echo(
                f"{p.seq:>6}  {p.type:17} taken {age:7.1f}s ago  freeze {p.freeze_ms:6.1f} ms"
                f"  {p.group or '-'}"
            )

    run_command(body)


@replication_group.command("verify")
@click.argument("host")
@_name_opt
@click.option("--point", "point", default="latest", show_default=True, help="Point id.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def replication_verify(host: str, name: str, point: str, as_json: bool) -> None:
    """Check that HOST's replica at --point equals its recorded source hash (exit 1 if not)."""
    from harness.replication import control

    def body() -> int:
        res = control.verify(name, host, point)
        if as_json:
            _emit_json(res.to_json())
        else:
            for d in res.disks:
                what = "ok" if d.ok else f"MISMATCH in MiB chunk(s) {d.bad_chunks[:10]}"
                click.echo(f"{host}/{d.disk} point {res.point} ({res.type}): {what}")
        return 0 if res.ok else 1

    run_command(body)


@replication_group.command("restore")
@click.argument("host")
@_name_opt
@click.option("--point", "point", required=True, help="Point id (or 'latest').")
@click.option("--to", "to", required=True, help="A new file to write the disk image to.")
@click.option("--disk", default=None, help="Which disk, when the host has several.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def replication_restore(
    host: str, name: str, point: str, to: str, disk: str | None, as_json: bool
) -> None:
    """Write HOST's disk at --point to the new file --to (never overwrites), checked by hash."""
    from harness.replication import control

    def body() -> None:
        res = control.restore(name, host, point, to, disk=disk)
        if as_json:
            _emit_json(res.__dict__)
        else:
            click.echo(f"{res.host}/{res.disk} point {res.point} ({res.type}) -> {res.path}")

    run_command(body)


@replication_group.command("resync")
@click.argument("host")
@_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def replication_resync(host: str, name: str, as_json: bool) -> None:
    """Compare HOST's replicas with the source by checksums and send only what differs."""
    from harness.replication import control

    def body() -> None:
        res = control.resync(name, host)
        if as_json:
            _emit_json(res)
        else:
            for e in res["events"]:
                click.echo(
                    f"{host}/{e['disk']}: compared {e['compared_bytes']} B, "
                    f"{e['differing_bytes']} B differed, sent {e['sent_bytes']} B"
                )

    run_command(body)


# --- drills ----------------------------------------------------------------------------------


@main.command("run")
@click.argument("drill_file", required=False, default="site-outage")
@click.option("--topology", help="Topology file or name (default: the drill's own).")
@click.option("--name", default="drill", show_default=True, help="The lab's name.")
@click.option("--seed", default=0, show_default=True, help="Seed for users, loss and routing.")
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards, for a look around.")
@click.option("--report", "report_dir", help="Report folder (default reports/<drill>-<time>).")
@click.option("--json", "as_json", is_flag=True, help="Print the journal as JSON on stdout.")
def run_drill(
    drill_file: str,
    topology: str | None,
    name: str,
    seed: int,
    keep: bool,
    report_dir: str | None,
    as_json: bool,
) -> None:
    """Run DRILL_FILE (a file or a name in drills/, default site-outage) and report RTO/RPO.

    Exit codes: 0 every objective met, 1 an objective missed, 2 the harness failed.
    """
    from harness import report, runner

    def body() -> int:
        j = runner.run(drill_file, topology, name=name, seed=seed, keep=keep, progress=_progress)
        folder = (
            Path(report_dir)
            if report_dir
            else (Path("reports") / f"{j.drill}-{time.strftime('%Y%m%d-%H%M%S')}")
        )
        paths = report.write(j, folder)
        if as_json:
            _emit_json(j.to_json())
        else:
            click.echo(report.markdown(j, paths))
        return j.exit_code

    run_command(body)


@main.group("drills")
def drills_group() -> None:
    """The drill files: list the built-in ones, check a file, print the schema."""


@drills_group.command("list")
def drills_list() -> None:
    """List the built-in drills."""
    from harness import drill

    for f in sorted(drill.DRILL_DIR.glob("*.yaml")):
        d = drill.load(f)
        click.echo(f"{d.name:20} {d.topology:12} {d.description}")


@drills_group.command("validate")
@click.argument("files", nargs=-1, required=True)
@click.option("--topology", help="Also check each drill against this topology.")
def drills_validate(files: tuple[str, ...], topology: str | None) -> None:
    """Check drill FILES (and that their topology has what they need)."""
    from harness import drill

    def body() -> None:
        for f in files:
            d = drill.load(f)
            topo = topo_mod.load(lab.resolve_topology(topology or d.topology))
            drill.check_against(d, topo, f)
            click.echo(f"{f}: valid (drill {d.name!r} on topology {topo.name!r})")

    run_command(body)


@drills_group.command("schema")
def drills_schema() -> None:
    """Print the JSON Schema of drill files."""
    from harness import drill

    _emit_json(drill.json_schema())


# --- identity --------------------------------------------------------------------------------


@main.group("identity")
def identity_group() -> None:
    """The directory on-prem and its replica in the recovery site: status, users."""


@identity_group.command("status")
@_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def identity_status(name: str, as_json: bool) -> None:
    """Each directory's entries, contextCSN, last sync and the replica's lag."""
    from harness import identity

    def body() -> None:
        sts = identity.status(name)
        if as_json:
            _emit_json([st.to_json() for st in sts])
            return
        click.echo(
            f"{'HOST':8} {'ROLE':9} {'SITE':8} {'UP':3} {'ENTRIES':>7} {'USERS':>5} "
            f"{'SYNCED TO':29} LAG"
        )
        for st in sts:
            synced = st.to_json()["synced_to_iso"] or "-"
            lag = "-" if st.lag_s is None else f"{st.lag_s:.1f}s (every {st.sync_interval_s}s)"
            click.echo(
                f"{st.host:8} {st.role:9} {st.site or '-':8} {'yes' if st.reachable else 'NO':3} "
                f"{st.entries if st.entries is not None else '-':>7} "
                f"{st.users if st.users is not None else '-':>5} {synced:29} {lag}"
            )
            if st.error:
                click.echo(f"  {st.error}")

    run_command(body)


@identity_group.group("user")
def identity_user_group() -> None:
    """Create and change users on-prem; the replica gets the change at its next sync."""


def _groups_opt(values: tuple[str, ...]) -> list[str]:
    return [g for v in values for g in v.split(",") if g]


def _new_password(from_stdin: bool) -> str | None:
    """A password read from stdin's first line, or None (one is generated)."""
    if not from_stdin:
        return None
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        from harness.errors import UsageError

        raise UsageError("--password-stdin: no password on standard input")
    return line


_pw_stdin_opt = click.option(
    "--password-stdin", is_flag=True, help="Read the password from stdin (else one is generated)."
)
_show_pw_opt = click.option(
    "--show-password", is_flag=True, help="Print the password on stdout (never printed otherwise)."
)


@identity_user_group.command("add")
@click.argument("user")
@click.option("--groups", "groups", multiple=True, help="Groups, comma-separated (repeatable).")
@click.option("--display-name", default="", help="The user's display name.")
@_pw_stdin_opt
@_show_pw_opt
@_name_opt
def identity_user_add(
    user: str,
    groups: tuple[str, ...],
    display_name: str,
    password_stdin: bool,
    show_password: bool,
    name: str,
) -> None:
    """Create USER on-prem, with a password from stdin or a generated one (kept for drills)."""
    from harness import identity

    def body() -> None:
        pw = _new_password(password_stdin)
        creds = identity.add_user(name, user, _groups_opt(groups), pw, display_name=display_name)
        click.echo(f"user {user}: created on-prem ({creds.dn})", err=True)
        if show_password:
            click.echo(creds.password)

    run_command(body)


@identity_user_group.command("passwd")
@click.argument("user")
@_pw_stdin_opt
@_show_pw_opt
@_name_opt
def identity_user_passwd(user: str, password_stdin: bool, show_password: bool, name: str) -> None:
    """Set USER's password on-prem (from stdin, or generated)."""
    from harness import identity

    def body() -> None:
        creds = identity.set_password(name, user, _new_password(password_stdin))
        click.echo(f"user {user}: password changed on-prem", err=True)
        if show_password:
            click.echo(creds.password)

    run_command(body)


@identity_user_group.command("disable")
@click.argument("user")
@_name_opt
def identity_user_disable(user: str, name: str) -> None:
    """Disable USER on-prem: apps refuse it (403) once the change reaches their directory."""
    run_command(_set_disabled(name, user, True))


@identity_user_group.command("enable")
@click.argument("user")
@_name_opt
def identity_user_enable(user: str, name: str) -> None:
    """Enable a disabled USER on-prem."""
    run_command(_set_disabled(name, user, False))


def _set_disabled(lab_name: str, user: str, disabled: bool) -> Callable[[], None]:
    def body() -> None:
        from harness import identity

        identity.set_disabled(lab_name, user, disabled)
        click.echo(f"user {user}: {'disabled' if disabled else 'enabled'} on-prem")

    return body


@identity_user_group.command("groups")
@click.argument("user")
@click.argument("groups", nargs=-1)
@_name_opt
def identity_user_groups(user: str, groups: tuple[str, ...], name: str) -> None:
    """Make GROUPS exactly USER's groups on-prem (none: no group)."""
    from harness import identity

    def body() -> None:
        info = identity.set_groups(name, user, _groups_opt(groups))
        click.echo(f"user {user}: groups {', '.join(info.groups) or '(none)'}")

    run_command(body)


@identity_user_group.command("list")
@click.option("--site", default=None, help="Whose directory (default: on-prem).")
@_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the users as JSON.")
def identity_user_list(site: str | None, name: str, as_json: bool) -> None:
    """The users of a site's directory, their groups and whether they are disabled."""
    from dataclasses import asdict

    from harness import identity

    def body() -> None:
        found = identity.users(name, site)
        if as_json:
            _emit_json([asdict(u) for u in found])
            return
        for u in found:
            flag = " (disabled)" if u.disabled else ""
            click.echo(f"{u.name:16} {', '.join(u.groups) or '-'}{flag}")

    run_command(body)


# --- failover ---------------------------------------------------------------------------------


def _print_job(j: Any, as_json: bool) -> None:
    from dataclasses import asdict

    if as_json:
        _emit_json(asdict(j))
        return
    took = (j.ended_at or time.time()) - j.started_at
    click.echo(f"{j.id}: {j.status} in {took:.1f}s")
    for s in j.steps:
        dur = (s.end or time.time()) - s.start
        click.echo(f"  {s.start - j.started_at:6.1f}s  {s.name:40} {s.status:10} {dur:.1f}s")
    if j.error:
        click.echo(f"  error: {j.error}")
    if j.hint:
        click.echo(f"  next: {j.hint}")


@main.command("failover")
@_name_opt
@click.option("--test", "test", is_flag=True, help="Test failover into an isolated network.")
@click.option("--cleanup-test", is_flag=True, help="Remove the test failover.")
@click.option("--planned", is_flag=True, help="Stop the source, sync, fail over: no data loss.")
@click.option(
    "--point",
    default="latest",
    show_default=True,
    help="latest | latest-processed | latest-app-consistent | latest-multi-vm | a point id.",
)
@click.option("--plan", "plan_name", help="Run a recovery plan from the topology.")
@click.option(
    "--auto-confirm", is_flag=True, help="Confirm the plan's manual actions without waiting."
)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def failover_cmd(
    name: str,
    test: bool,
    cleanup_test: bool,
    planned: bool,
    point: str,
    plan_name: str | None,
    auto_confirm: bool,
    as_json: bool,
) -> None:
    """Fail the protected hosts over to the recovery site (unplanned unless --planned)."""
    from harness import failover

    def body() -> None:
        if sum([test, cleanup_test, planned]) > 1:
            from harness.errors import UsageError

            raise UsageError("choose one of --test, --cleanup-test and --planned")
        if test:
            j = failover.test_failover(name, point, progress=_progress)
        elif cleanup_test:
            j = failover.cleanup_test(name, progress=_progress)
        else:
            j = failover.failover(
                name,
                planned=planned,
                point=point,
                plan=plan_name,
                auto_confirm=auto_confirm,
                progress=_progress,
            )
        _print_job(j, as_json)

    run_command(body)


def _simple_job(fn_name: str, doc: str) -> None:
    @main.command(fn_name, help=doc)
    @_name_opt
    @click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
    def cmd(name: str, as_json: bool) -> None:
        from harness import failover

        run_command(
            lambda: _print_job(getattr(failover, fn_name)(name, progress=_progress), as_json)
        )

    cmd.__doc__ = doc


_simple_job("commit", "Commit the failover: delete the other recovery points, as Azure does.")
_simple_job("reprotect", "Replicate the active site back to the other (by deltas where possible).")
_simple_job("failback", "Planned failover back to on-prem (after reprotect).")


@main.group("jobs", invoke_without_command=True)
@_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@click.pass_context
def jobs_group(ctx: click.Context, name: str, as_json: bool) -> None:
    """List the lab's failover jobs (drill jobs show ID for one)."""
    if ctx.invoked_subcommand is not None:
        return
    from dataclasses import asdict

    from harness import failover

    def body() -> None:
        lab.open_lab(name)
        js = failover.jobs(name)
        if as_json:
            _emit_json([asdict(j) for j in js])
            return
        if not js:
            click.echo("no jobs")
        for j in js:
            took = (j.ended_at or time.time()) - j.started_at
            click.echo(f"{j.id:24} {j.status:11} {took:6.1f}s  {len(j.steps)} steps")

    run_command(body)


@jobs_group.command("show")
@click.argument("job_id")
@_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def jobs_show(job_id: str, name: str, as_json: bool) -> None:
    """Show one job with its steps."""
    from harness import failover

    run_command(lambda: _print_job(failover.job(name, job_id), as_json))


@main.group("plan")
def plan_group() -> None:
    """Recovery plans in progress."""


@plan_group.command("confirm")
@_name_opt
def plan_confirm(name: str) -> None:
    """Confirm the manual action a running recovery plan waits for."""
    from harness import failover

    def body() -> None:
        pending = failover.confirm(name)
        click.echo(f"confirmed {pending['action']} of {pending['job']}: {pending['instruction']}")

    run_command(body)


# --- sandboxes: shell, logs, scenarios, grading, dashboard ------------------------------------


@main.command("shell", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
@_name_opt
def shell(host: str, cmd: tuple[str, ...], name: str) -> None:
    """Open a shell in HOST (as `drill status` names it), or run `-- CMD...` there."""
    from harness import sandbox

    def body() -> int:
        if not cmd:
            sandbox.exec_shell(name, host)  # replaces this process; returns only on error
        res = sandbox.run(name, host, list(cmd))
        click.echo(res.output, nl=False)
        return res.exit_code

    run_command(body)


@main.command("logs")
@click.argument("host")
@_name_opt
@click.option("--tail", default=100, show_default=True, help="How many lines.")
def logs(host: str, name: str, tail: int) -> None:
    """The last lines of HOST's output."""
    from harness import sandbox

    run_command(lambda: click.echo(sandbox.logs(name, host, tail), nl=False))


@main.group("scenario")
def scenario_group() -> None:
    """Training scenarios: inject a disaster into a sandbox; the learner recovers."""


@scenario_group.command("list")
def scenario_list() -> None:
    """The built-in scenarios (scenarios/*.yaml)."""
    from harness import scenario

    def body() -> None:
        for n in scenario.builtin():
            click.echo(f"{n:16} {scenario.load(n).description}")

    run_command(body)


@scenario_group.command("start")
@click.argument("scenario_ref", metavar="SCENARIO")
@_name_opt
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the users.")
def scenario_start(scenario_ref: str, name: str, seed: int) -> None:
    """Inject SCENARIO's faults into a running sandbox and start its clock (no recovery)."""
    from harness import scenario

    def body() -> None:
        rec = scenario.start(name, scenario_ref, seed=seed, progress=_progress)
        click.echo(
            f"scenario {rec.scenario} running in {name}: faults {', '.join(rec.faults) or 'none'}"
            f"; grade with `drill grade --name {name}`"
        )

    run_command(body)


@scenario_group.command("status")
@_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def scenario_status(name: str, as_json: bool) -> None:
    """The scenario's clock, its faults and how users fare."""
    from harness import scenario

    def body() -> None:
        st = scenario.status(name)
        if as_json:
            _emit_json(st)
            return
        ok = st["recent_success"]
        click.echo(
            f"scenario {st['scenario']} {'running' if st['running'] else 'ended'}  "
            f"T+{st['clock_s']:.0f}s  faults active: {', '.join(st['active_faults']) or 'none'}  "
            f"users: {st['requests']} requests, last 5s " + ("-" if ok is None else f"{ok:.0%} ok")
        )

    run_command(body)


@scenario_group.command("stop")
@_name_opt
@click.option("--heal", is_flag=True, help="Also heal every active fault.")
def scenario_stop(name: str, heal: bool) -> None:
    """End the scenario: users stopped (faults healed with --heal); grading still works."""
    from harness import scenario

    def body() -> None:
        rec = scenario.stop(name, heal=heal)
        healed = f"; healed {', '.join(rec.healed)}" if rec.healed else ""
        click.echo(f"scenario {rec.scenario} ended{healed}")

    run_command(body)


@main.command("grade")
@_name_opt
@click.option("--json", "as_json", is_flag=True, help="Print the grade as JSON.")
def grade(name: str, as_json: bool) -> None:
    """Score the learner against the scenario's objectives: exit 0 all met, 1 otherwise."""
    from harness import scenario

    def body() -> int:
        g = scenario.grade(name)
        if as_json:
            _emit_json(g.to_json())
        else:
            met = sum(o.met for o in g.objectives)
            click.echo(f"scenario {g.scenario} in {g.lab}: {met}/{len(g.objectives)} met")
            for o in g.objectives:
                click.echo(f"  {'met   ' if o.met else 'MISSED'} {o.name}: {o.explanation}")
        return 0 if g.met else 1

    run_command(body)


@main.command("dashboard")
@_name_opt
@click.option("--port", type=int, default=0, show_default=True, help="0: pick a free port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Only 127.0.0.1.")
def dashboard_cmd(name: str, port: int, host: str) -> None:
    """Serve a live page of the sandbox on 127.0.0.1 until Ctrl-C."""
    from harness import dashboard

    def body() -> None:
        try:
            dashboard.serve(name, port, host, ready=lambda url: click.echo(url))
        except KeyboardInterrupt:
            click.echo("dashboard stopped", err=True)  # nothing to undo: a clean stop

    run_command(body)


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


if __name__ == "__main__":  # pragma: no cover
    main()
