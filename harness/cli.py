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
    """List the labs on the engine."""

    def body() -> None:
        labs = lab.list_labs()
        if as_json:
            _emit_json([s.__dict__ for s in labs])
            return
        if not labs:
            click.echo("no labs")
        for s in labs:
            age = f"{time.time() - s.created_at:.0f}s" if s.created_at else "?"
            click.echo(
                f"{s.lab:16} {s.topology:12} run {s.run_id}  {s.running}/{s.containers} running"
                f"  age {age}"
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


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


if __name__ == "__main__":  # pragma: no cover
    main()
