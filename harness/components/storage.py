"""The storage account: Azurite's Blob service in the recovery site.

The account name and key come from the topology (never the development key); its data lives on
a labelled volume so that restarting the container loses nothing.
"""

from __future__ import annotations

from harness import naming
from harness.components.common import base_spec, http_ready
from harness.plan import HostPlan, LabPlan
from harness.runtime import ContainerSpec, Runtime

BLOB_PORT = 10000


def volume_name(plan: LabPlan, hp: HostPlan) -> str:
    """The Docker volume holding the account's data."""
    return naming.object_name(plan.lab, f"{hp.name}-data")


def spec(plan: LabPlan, hp: HostPlan) -> ContainerSpec:
    """Azurite with the topology's account, data on the lab's volume."""
    acct = hp.host.storage
    assert acct is not None  # validated
    return base_spec(
        plan,
        hp,
        "storage",
        env={"AZURITE_ACCOUNTS": f"{acct.account}:{acct.key}"},
        binds={volume_name(plan, hp): "/data:rw"},
    )


def volumes(plan: LabPlan, hp: HostPlan) -> dict[str, dict[str, str]]:
    """Volumes to create (with labels) before the container starts."""
    return {volume_name(plan, hp): plan.object_labels("volume", f"{hp.name}-data", hp.site)}


def configure(rt: Runtime, plan: LabPlan, hp: HostPlan) -> None:
    """Nothing: the container routes the other site via its gateway as it starts."""


def endpoint(plan: LabPlan, hp: HostPlan) -> str:
    """The account's Blob endpoint URL."""
    acct = hp.host.storage
    assert acct is not None
    return f"http://{hp.address}:{BLOB_PORT}/{acct.account}"


def check_ready(rt: Runtime, plan: LabPlan, hp: HostPlan) -> str | None:
    """Ready when the Blob endpoint answers HTTP at all (an anonymous request gets an error)."""
    return http_ready(f"http://{hp.address}:{BLOB_PORT}/", expect=None)
