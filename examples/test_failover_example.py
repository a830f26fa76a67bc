"""Failover tests a team might keep in CI: copy this file and change the bounds to your own.

Run them (the engine running and images built: ``drill engine ensure && drill images build``):

    pytest examples/                       # one lab per topology, shared by the session
    pytest examples/ -p xdist -n 2         # each worker has its own labs, no collisions
    pytest examples/ --dr-keep             # leave the labs up afterwards to look around

The fixtures come from drill's pytest plugin (installed with the package): ``dr_drill`` drives
the test's lab (``dr_lab``, shared; or ``dr_fresh_lab``, this test's own). Tests that fail over
ask for ``dr_fresh_lab``: a failover changes a lab for good, so it must not be the shared one.
"""

from __future__ import annotations

import time

import pytest

from harness.lab import LabRef
from harness.pytest_plugin import Drill

APP = "app.contoso.test"  # the app's name in the example topologies (Traffic Manager's vanity)


@pytest.mark.dr_topology("web-pair")
def test_dns_moves_to_the_recovery_site_when_the_onprem_web_server_stops(
    dr_drill: Drill,
) -> None:
    """Traffic Manager notices the dead endpoint and answers with the recovery site."""
    dr_drill.assert_resolves_to(APP, "onprem")
    dr_drill.fault("host-outage", host="web1")
    # Monitor: 1 s interval, 1 failure tolerated, 0.5 s timeout; then the 2 s TTL runs out.
    dr_drill.assert_resolves_to(APP, "azure", within=10)


def test_a_tunnel_partition_loses_no_acknowledged_write(dr_drill: Drill) -> None:
    """Users on-prem keep writing while replication cannot reach the recovery site."""
    dr_drill.wait_protected(within=60)
    dr_drill.start_users(rate=20, write_ratio=0.5)
    time.sleep(2)
    fault = dr_drill.fault("partition")
    time.sleep(5)
    dr_drill.heal(fault.id)
    time.sleep(2)
    m = dr_drill.assert_no_acknowledged_write_lost()
    assert m.error_rate <= 0.01, f"users saw {m.error_rate:.1%} errors during the partition"


def test_an_unplanned_failover_after_a_site_outage_keeps_rpo_within_15s(
    dr_fresh_lab: LabRef, dr_drill: Drill
) -> None:
    """The whole on-prem site is lost; the recovery site serves users from the latest point."""
    dr_drill.wait_protected(within=60)
    dr_drill.start_users(rate=20, write_ratio=0.5)
    time.sleep(6)  # long enough for a point taken while users write (every 5 s in minimal)
    dr_drill.fault("site-outage", site="onprem")
    dr_drill.failover(point="latest")
    dr_drill.wait_recovered(within=30)
    dr_drill.assert_resolves_to(APP, "azure", within=10)
    m = dr_drill.assert_rpo_within(15)
    assert m.rto_s is not None and m.rto_s <= 30, f"RTO {m.rto_s} s"
