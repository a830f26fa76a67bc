"""DNS failover: time from killing the primary endpoint to the first answer naming the secondary.

On ``topologies/web-pair.yaml`` (an nginx server per site behind a priority profile), each trial
stops the primary web container and polls the DNS server from the client container until the
profile answers the secondary; then starts it again and polls until the primary is back. The
bound is the emulator's own: ``interval x (tolerated + 1) + timeout + update bound`` for the move
away, ``interval + timeout + update bound`` for the way back (one successful probe). Also measured
for the record: CoreDNS queries per second from one client, sequential, for 3 s.

Prints one JSON object: trials, detect_median_s, detect_max_s, bound_s, ratio (median/bound),
back_median_s, back_max_s, back_bound_s, within_bound (every trial), qps.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import emit, interruptible, log, median, ratio, unique_lab_name

from harness import lab, trafficmanager
from harness.runtime import DockerRuntime

TOPOLOGY = Path(__file__).resolve().parent.parent / "topologies" / "web-pair.yaml"

POLL = textwrap.dedent(
    """
    import sys, time, dns.message, dns.query, dns.rdatatype
    server, name, want, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    end = time.time() + limit
    while time.time() < end:
        r = dns.query.udp(dns.message.make_query(name, 'A'), server, timeout=1)
        got = [x.address for s in r.answer if s.rdtype == dns.rdatatype.A for x in s]
        if got == [want]:
            print(time.time())
            break
        time.sleep(0.01)
    else:
        print('timeout')
    """
)

QPS = textwrap.dedent(
    """
    import sys, time, dns.message, dns.query
    server, name = sys.argv[1], sys.argv[2]
    n, end = 0, time.time() + 3.0
    while time.time() < end:
        dns.query.udp(dns.message.make_query(name, 'A'), server, timeout=1)
        n += 1
    print(n / 3.0)
    """
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=10)
    args = p.parse_args()
    name = unique_lab_name("bdns")
    with interruptible():
        log(f"bringing up {TOPOLOGY.name} as {name}")
        st = lab.up(TOPOLOGY, name)
        try:
            ref = lab.open_lab(name)
            rt = ref.rt
            assert isinstance(rt, DockerRuntime)
            plan = ref.plan
            tm = trafficmanager.profile_of(plan)
            server = trafficmanager.dns_address(plan)
            primary = trafficmanager.endpoint_address(plan, "web1", "onprem")
            secondary = trafficmanager.endpoint_address(plan, "webdr", "azure")
            client = plan.hosts["users"].container
            web1 = plan.hosts["web1"].container
            timing = trafficmanager.timing(tm)
            bound = timing.emulator_answer_s
            m = tm.monitor
            back_bound = m.interval_s + m.timeout_s + trafficmanager.UPDATE_BOUND_S

            def poll(want: str, limit: float) -> float:
                res = rt.exec(client, ["python3", "-c", POLL, server, tm.profile, want, str(limit)])
                if not res.ok or res.output.startswith("timeout"):
                    raise SystemExit(f"answer never became {want}: {res.output}")
                return float(res.output)

            poll(primary, 30)
            detect, back = [], []
            for i in range(args.trials):
                rt.stop(web1, timeout_s=1)
                t0 = time.time()
                detect.append(poll(secondary, bound + 10) - t0)
                rt.start(web1)
                t1 = time.time()
                back.append(poll(primary, back_bound + 10) - t1)
                log(f"trial {i + 1}: moved {detect[-1]:.2f}s, back {back[-1]:.2f}s")
            res = rt.exec(client, ["python3", "-c", QPS, server, tm.profile])
            qps = round(float(res.output), 1) if res.ok else float("nan")
        finally:
            lab.down(name)
    emit(
        {
            "benchmark": "dns_failover",
            "topology": st.topology,
            "trials": args.trials,
            "detect_median_s": median(detect),
            "detect_max_s": round(max(detect), 3),
            "bound_s": round(bound, 3),
            "ratio": ratio(median(detect), bound),
            "back_median_s": median(back),
            "back_max_s": round(max(back), 3),
            "back_bound_s": round(back_bound, 3),
            "within_bound": max(detect) <= bound and max(back) <= back_bound,
            "azure_worst_case_s": timing.azure_degraded_s,
            "qps": qps,
        }
    )


if __name__ == "__main__":
    main()
