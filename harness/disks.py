"""Data disks: raw image files with a filesystem, attached to hosts through loop devices.

For each disk of a host in the topology, on the harness host (root)::

    <lab state>/disks/<host>/<disk>.img   a sparse raw image of the disk's size, mkfs.ext4
    <lab state>/mnt/<host>/<disk>         where it is mounted (``mount -o loop``)

The mount point is bind-mounted into the host's container at the disk's ``mount`` (``/data``),
so the app sees an ordinary filesystem; the replicator reads the image file block by block and
freezes the filesystem through its own bind of the mount point.

Teardown unmounts and detaches, bounded in time; ``detach_under`` finds leftovers with no
state at all by their loop devices' backing files (``losetup -J -l``) and by mount points
under the state root. A ``mount`` or ``mkfs`` that a killed ``up`` left running would finish
after the teardown and leave a mount behind: teardown first stops the disk tools (``DISK_TOOLS``)
whose arguments name a path under the lab's folder. The inode tables and journal are
initialised by mkfs itself (no lazy init), so a fresh disk does not change behind the
replicator's back.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from harness import state
from harness.errors import HarnessError, TeardownError
from harness.plan import HostPlan, LabPlan

TOOL_TIMEOUT_S = 20.0
DISK_TOOLS = frozenset({"mount", "umount", "mkfs.ext4", "mke2fs", "losetup", "fsfreeze"})


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
    _stop_tools_under(prefix)
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


def _tools_under(prefix: str) -> list[int]:
    """Pids of disk tools with an argument naming a path under ``prefix``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if os.path.basename(args[0].decode(errors="replace")) not in DISK_TOOLS:
            continue
        if any(a.decode(errors="replace").startswith(prefix) for a in args[1:]):
            found.append(int(entry))
    return found


def _stop_tools_under(prefix: str, timeout_s: float = 5.0) -> None:
    """Kill disk tools (mount, mkfs) still working under ``prefix`` and wait until they are gone."""
    pids = _tools_under(prefix)
    for pid in pids:
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if os.path.exists(f"/proc/{p}") and not _is_zombie(p)]
        time.sleep(0.02)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _run_ok(cmd: Sequence[str]) -> bool:
    try:
        _run(cmd, "unmounting")
    except HarnessError:
        return False
    return True


def thaw_under(root: Path) -> int:
    """Thaw every filesystem mounted under ``root``; returns how many were frozen.

    A replicator killed between FIFREEZE and FITHAW leaves its filesystems frozen, and a
    process writing to one waits uninterruptibly: not even SIGKILL removes its container.
    """
    prefix = str(root.resolve()).rstrip("/") + "/"
    return sum(_run_ok(["fsfreeze", "-u", mp]) for _, mp in _mounts() if mp.startswith(prefix))


def thaw(lab: str | None) -> int:
    """Thaw the filesystems of one lab's disks (None: of every lab)."""
    return thaw_under(state.lab_dir(lab) if lab else state.state_root())


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
