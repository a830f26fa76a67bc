"""Data disks: raw image files with a filesystem, attached to hosts through loop devices.

For each disk of a host in the topology, on the harness host (root)::

    <lab state>/disks/<host>/<disk>.img   a sparse raw image of the disk's size, mkfs.ext4
    <lab state>/mnt/<host>/<disk>         where it is mounted (``mount -o loop``)

The mount point is bind-mounted into the host's container at the disk's ``mount`` (``/data``),
so the app sees an ordinary filesystem; the replicator reads the image file block by block and
freezes the filesystem through its own bind of the mount point.

Teardown unmounts and detaches, bounded in time; ``detach_under`` finds leftovers with no
state at all by their loop devices' backing files (``losetup -J -l``) and by mount points
under the state root, never by process name. The inode tables and journal are initialised by
mkfs itself (no lazy init), so a fresh disk does not change behind the replicator's back.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from harness import state
from harness.errors import HarnessError, TeardownError
from harness.plan import HostPlan, LabPlan

TOOL_TIMEOUT_S = 20.0


def image_path(lab: str, host: str, disk: str) -> Path:
    """The raw image of one disk."""
    return state.lab_dir(lab) / "disks" / host / f"{disk}.img"


def mount_path(lab: str, host: str, disk: str) -> Path:
    """Where one disk's filesystem is mounted on the harness host."""
    return state.lab_dir(lab) / "mnt" / host / disk


def _run(cmd: Sequence[str], what: str, *, check: bool = True) -> str:
    try:
        done = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise HarnessError(f"{what}: {cmd[0]} is not installed (see the Makefile)") from exc
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{what}: {' '.join(cmd)} took over {TOOL_TIMEOUT_S:.0f}s") from exc
    if check and done.returncode != 0:
        raise HarnessError(f"{what}: {' '.join(cmd)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def attach(plan: LabPlan, hp: HostPlan) -> None:
    """Create (if missing), format and mount every disk of a host."""
    for disk in hp.host.disks:
        img = image_path(plan.lab, hp.name, disk.name)
        mnt = mount_path(plan.lab, hp.name, disk.name)
        img.parent.mkdir(parents=True, exist_ok=True)
        mnt.mkdir(parents=True, exist_ok=True)
        if os.path.ismount(mnt):
            continue
        if not img.exists():
            with open(img, "wb") as f:
                f.truncate(disk.size)  # sparse: only what the filesystem writes takes space
            _run(
                [
                    "mkfs.ext4",
                    "-q",
                    "-F",
                    # 4 KiB filesystem blocks, as the change tracker's: small filesystems would
                    # get 1 KiB blocks, and an aligned 4 KiB file write could touch two blocks.
                    "-b",
                    "4096",
                    "-L",
                    disk.name[:16],
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0",
                    str(img),
                ],
                f"formatting disk {disk.name} of {hp.name}",
            )
        _run(["mount", "-o", "loop", str(img), str(mnt)], f"mounting disk {disk.name} of {hp.name}")


def binds(plan: LabPlan, hp: HostPlan) -> dict[str, str]:
    """The host container's binds: each disk's mount point at the disk's ``mount``."""
    return {str(mount_path(plan.lab, hp.name, d.name)): f"{d.mount}:rw" for d in hp.host.disks}


def _loop_devices() -> list[tuple[str, str]]:
    """(device, backing file) of every loop device."""
    out = _run(["losetup", "-J", "-l"], "listing loop devices", check=False).strip()
    if not out:
        return []
    try:
        devs = json.loads(out).get("loopdevices") or []
    except ValueError:
        return []
    return [(d["name"], str(d.get("back-file") or "").removesuffix(" (deleted)")) for d in devs]


def _mounts() -> list[tuple[str, str]]:
    """(source, mount point) of every mount in this namespace."""
    out = []
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out.append((parts[0], parts[1].replace("\\040", " ")))
    return out


def detach_under(root: Path) -> int:
    """Unmount and detach every disk whose image or mount point lies under ``root``.

    Returns how many loop devices or mounts were released; TeardownError if one stays.
    """
    prefix = str(root.resolve()).rstrip("/") + "/"
    loops = {dev for dev, back in _loop_devices() if back.startswith(prefix)}
    targets = [mp for src, mp in _mounts() if src in loops or mp.startswith(prefix)]
    released = 0
    for mp in sorted(set(targets), key=len, reverse=True):
        # A filesystem a killed replicator left frozen would block writes forever: thaw first.
        _run(["fsfreeze", "-u", mp], f"thawing {mp}", check=False)
        if _run_ok(["umount", mp]) or _run_ok(["umount", "-l", mp]):
            released += 1
    for dev in loops:
        if any(d == dev for d, _ in _loop_devices()):
            _run(["losetup", "-d", dev], f"detaching {dev}", check=False)
            released += 1
    left = [mp for _, mp in _mounts() if mp.startswith(prefix)]
    if left:
        raise TeardownError(f"could not unmount: {', '.join(left)}")
    return released


def _run_ok(cmd: Sequence[str]) -> bool:
    try:
        _run(cmd, "unmounting")
    except HarnessError:
        return False
    return True


def detach(lab: str) -> int:
    """Release every disk of one lab (images stay until its state folder goes)."""
    return detach_under(state.lab_dir(lab))


def detach_all() -> int:
    """Release every disk of every lab, found under the state root (works with no lab.json)."""
    return detach_under(state.state_root())


def run_tool(cmd: Sequence[str], what: str, *, check: bool = True) -> str:
    """Run a disk tool (mount, fsfreeze, ...) bounded in time; HarnessError when it fails."""
    return _run(cmd, what, check=check)


def unmount(mnt: Path) -> None:
    """Unmount one mount point if mounted (thawing it first, in case it was left frozen)."""
    if os.path.ismount(mnt):
        _run(["fsfreeze", "-u", str(mnt)], f"thawing {mnt}", check=False)
        _run(["umount", str(mnt)], f"unmounting {mnt}")
