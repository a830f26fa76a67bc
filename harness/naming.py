"""Names and labels of everything the harness creates.

Every Docker object (container, network, volume) carries these labels:

    drill.lab        the lab name (``default`` unless ``--name`` says otherwise)
    drill.run        the run id of the ``drill up`` that created it (12 hex digits)
    drill.topology   the topology's name
    drill.kind       host | gateway | network | volume | ...
    drill.component  the component or host name inside the lab (e.g. ``sharepoint``, ``wan``)
    drill.site       the site it belongs to, where it belongs to one

and is named ``drill-<lab>-<component>``. Images are named ``drill/<role>`` and labelled
``drill.image=1``; they outlive labs and are never removed by ``drill down``.
Cleanup always selects by label, never by name pattern.
"""

from __future__ import annotations

import re
import secrets

LABEL_PREFIX = "drill."
LAB = "drill.lab"
RUN = "drill.run"
TOPOLOGY = "drill.topology"
KIND = "drill.kind"
COMPONENT = "drill.component"
SITE = "drill.site"
IMAGE = "drill.image"
CONTENT_HASH = "drill.content-hash"

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
"""Lab and component names: short, lowercase, DNS- and Docker-safe."""


def new_run_id() -> str:
    """A fresh random run id."""
    return secrets.token_hex(6)


def object_name(lab: str, component: str) -> str:
    """The Docker name of a lab's container, network or volume."""
    return f"drill-{lab}-{component}"


def image_ref(role: str) -> str:
    """The image a role's containers run."""
    return f"drill/{role}:current"


def lab_labels(lab: str, run_id: str, topology: str) -> dict[str, str]:
    """Labels every object of one lab carries."""
    return {LAB: lab, RUN: run_id, TOPOLOGY: topology}
