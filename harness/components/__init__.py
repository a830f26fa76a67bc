"""Components: one module per kind of container, each with the same small lifecycle.

Every host role maps to one module in ``ROLES`` below; gateways have their own module. A module
offers:

    spec(plan, host)            the ContainerSpec to start (pure)
    prepare(plan, host)         files it needs on the host before start (keys, configs), optional
    configure(rt, plan, host)   what must happen after start (routes, tunnel setup)
    check_ready(rt, plan, host) None when ready, else why not (polled until a deadline)

Start order in a lab: networks, gateways, then hosts by ``START_ORDER`` (storage and DNS before the
apps that use them, clients last); teardown is the reverse.
"""

from __future__ import annotations

from types import ModuleType

from harness.components import client, directory, dns, gateway, storage, web

ROLES: dict[str, ModuleType] = {
    "web": web,
    "app": web,
    "storage": storage,
    "dns": dns,
    "client": client,
    "directory": directory,
}
"""Which module runs each host role."""

START_ORDER = ("storage", "directory", "dns", "app", "web", "client")

__all__ = ["ROLES", "START_ORDER", "gateway"]
