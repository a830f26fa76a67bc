"""Lab lifecycle: how long ``harness.lab.up`` and ``harness.lab.down`` take, against raw Docker.

What is measured, per topology (``minimal`` and ``enterprise`` by default), with warm images:

``up_s``
    wall time of ``harness.lab.up(topology, name)``: networks, volumes, keys, host forwarding
    rules, every container started and configured, and every host's readiness check passed
    (tunnel handshake, HTTP/LDAP/Blob endpoints answering).
``down_s``
    wall time of ``harness.lab.down(name)``: every container, network, volume and forwarding rule
    of the lab removed.
``raw_run_s`` (the baseline)
    wall time to start the same number of containers from the same images with the docker SDK,
    ``client.containers.run(image, detach=True, network=...)``, on one plain ``internal`` network
    created for the benchmark (labelled ``drill.lab=<bench name>``), with as many threads as the
    harness uses (``harness.lab.WORKERS``); the containers are removed afterwards (not timed in
    the ratio, reported as ``raw_rm_s``). No configuration, no readiness: the floor the engine
    sets for starting that many containers.

``overhead_ratio`` is ``up_s / raw_run_s``, both medians of the same run, lab and baseline runs
interleaved so that a noisy neighbour hits both. Targets (issue): enterprise ``up_s`` <= 5 s
warm, ``overhead_ratio`` <= 2.0; reported, not asserted.

A ``lab.up`` that fails (the engine is shared) is retried once and its error listed in
``up_failures``; a failed retry, or more than ``MAX_FAILURES`` per topology, ends the benchmark
with exit status 2.

Output: one JSON line per topology on stdout; progress on stderr. Every lab and baseline object is
removed in ``finally`` (labs by their own ``down``, baseline objects by their label).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import _common as c
import docker
import docker.errors
import docker.models.containers

from harness import engine, lab, naming
from harness import topology as topo_mod
from harness.components import ROLES, gateway, replicator
from harness.errors import DrillError, HarnessError
from harness.plan import make_plan
from harness.runtime import DockerRuntime
from harness.topology import Topology

DEFAULT_TOPOLOGIES = ("minimal", "enterprise")
UP_TARGET_S = 5.0
RATIO_TARGET = 2.0
MAX_FAILURES = 2
"""Failed ``lab.up`` calls tolerated per topology (each retried once); more is an error."""


def lab_images(topo: Topology) -> list[str]:
    """The image of every container a lab of this topology runs (gateways, hosts, replicator)."""
    plan = make_plan(topo, "bench", "0" * 12, topo.addressing.space)
    images = [gateway.spec(plan, gp).image for gp in plan.gateways.values()]
    images += [ROLES[hp.role].spec(plan, hp).image for hp in plan.hosts.values()]
    if replicator.enabled(plan):
        images.append(naming.image_ref("replicator"))
    return images


def time_lab(topo: Topology, rt: DockerRuntime, ready_timeout_s: float) -> tuple[float, float]:
    """(up seconds, down seconds) of one lab; the lab is always taken down."""
    name = c.unique_lab_name()
    down_done = False
    try:
        with c.Timer() as t_up:
            lab.up(topo, name, runtime=rt, ready_timeout_s=ready_timeout_s)
        with c.Timer() as t_down:
            lab.down(name, runtime=rt)
        down_done = True
    finally:
        if not down_done:
            c.log(f"taking lab {name} down after a failure")
            lab.down(name, runtime=rt)
    return t_up.s, t_down.s


class RawBaseline:
    """Plain containers on one internal network, all labelled ``drill.lab=<name>``."""

    def __init__(self, client: docker.DockerClient, name: str, workers: int) -> None:
        self.client = client
        self.name = name
        self.workers = workers
        self.labels = {naming.LAB: name, naming.KIND: "bench"}
        self.network = naming.object_name(name, "raw")
        self._runs = 0

    def __enter__(self) -> RawBaseline:
        self.client.networks.create(
            self.network, driver="bridge", internal=True, labels=self.labels
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _run_one(self, name: str, image: str) -> docker.models.containers.Container:
        return self.client.containers.run(
            image,
            detach=True,
            name=name,
            network=self.network,
            labels=self.labels,
        )

    def run(self, images: list[str]) -> tuple[float, float]:
        """(seconds to start every image, seconds to remove them all)."""
        self._runs += 1
        names = [naming.object_name(self.name, f"r{self._runs}-{i}") for i in range(len(images))]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            with c.Timer() as t_run:
                started = list(pool.map(self._run_one, names, images))
            with c.Timer() as t_rm:
                list(pool.map(lambda ct: ct.remove(force=True, v=True), started))
        return t_run.s, t_rm.s

    def cleanup(self) -> None:
        """Remove whatever the baseline left, by label."""
        api = self.client.api
        for ct in api.containers(all=True, filters={"label": f"{naming.LAB}={self.name}"}):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(ct["Id"], force=True, v=True)
        for net in api.networks(filters={"label": f"{naming.LAB}={self.name}"}):
            for attempt in range(20):
                try:
                    api.remove_network(net["Id"])
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError:
                    if attempt == 19:
                        raise
                    time.sleep(0.1)


def bench_topology(
    ref: str,
    runs: int,
    client: docker.DockerClient,
    rt: DockerRuntime,
    deadline: float,
    ready_timeout_s: float,
) -> dict[str, Any]:
    """Interleaved lab and raw runs of one topology; the JSON result."""
    topo = topo_mod.load(lab.resolve_topology(ref))
    images = lab_images(topo)
    ups: list[float] = []
    downs: list[float] = []
    raws: list[float] = []
    rms: list[float] = []
    failures: list[str] = []
    with RawBaseline(client, c.unique_lab_name(), lab.WORKERS) as raw:
        for i in range(runs):
            if ups and time.monotonic() > deadline:
                c.log(f"{topo.name}: time budget spent; stopping after {len(ups)} run(s)")
                break
            try:
                up_s, down_s = time_lab(topo, rt, ready_timeout_s)
            except HarnessError as exc:
                failures.append(str(exc).splitlines()[0][:300])
                c.log(f"{topo.name} run {i + 1}: lab.up failed ({failures[-1]})")
                if len(failures) > MAX_FAILURES:
                    raise
                c.log("retrying once more (failures are reported in the JSON)")
                up_s, down_s = time_lab(topo, rt, ready_timeout_s)
            raw_s, rm_s = raw.run(images)
            ups.append(up_s)
            downs.append(down_s)
            raws.append(raw_s)
            rms.append(rm_s)
            c.log(
                f"{topo.name} run {i + 1}/{runs}: up {up_s:.2f}s down {down_s:.2f}s | "
                f"raw run {raw_s:.2f}s rm {rm_s:.2f}s ({len(images)} containers)"
            )
    up_m, raw_m = c.median(ups), c.median(raws)
    return {
        "topology": topo.name,
        "containers": len(images),
        "up_s": up_m,
        "down_s": c.median(downs),
        "raw_run_s": raw_m,
        "overhead_ratio": c.ratio(up_m, raw_m),
        "runs": len(ups),
        "up_failures": failures,
        "raw_rm_s": c.median(rms),
        "raw_workers": lab.WORKERS,
        "samples": {
            "up_s": [round(v, 3) for v in ups],
            "down_s": [round(v, 3) for v in downs],
            "raw_run_s": [round(v, 3) for v in raws],
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time harness.lab up/down per topology against starting the same containers "
        "with the docker SDK; one JSON line per topology on stdout.",
        epilog=f"Targets (reported, not asserted): enterprise up <= {UP_TARGET_S:g} s warm, "
        f"overhead ratio <= {RATIO_TARGET:g}.",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per topology (default 3)")
    p.add_argument(
        "--topology",
        action="append",
        dest="topologies",
        metavar="NAME",
        help="topology name or file; repeat for several (default: minimal and enterprise)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=240.0,
        help="start no new run after this many seconds (default 240); at least one run each",
    )
    p.add_argument(
        "--ready-timeout-s",
        type=float,
        default=60.0,
        help="readiness timeout passed to lab.up (default 60)",
    )
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client = engine.connect()
    rt = DockerRuntime(client)
    deadline = time.monotonic() + args.budget_s
    try:
        with c.interruptible():
            for ref in args.topologies or DEFAULT_TOPOLOGIES:
                c.emit(bench_topology(ref, args.runs, client, rt, deadline, args.ready_timeout_s))
    except KeyboardInterrupt:
        c.log("interrupted; what this benchmark created has been removed")
        return 130
    except DrillError as exc:
        c.log(f"error: {exc}")
        return 2
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
