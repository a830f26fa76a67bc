"""Disk teardown: tools a killed ``up`` left running are stopped before unmounting."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from harness import disks


def _tool(tmp_path: Path, name: str) -> Path:
    """A stand-in for a disk tool that keeps running: ``tail -F`` under the tool's name."""
    link = tmp_path / "bin" / name
    link.parent.mkdir(exist_ok=True)
    link.symlink_to("/usr/bin/tail")
    return link


def test_teardown_stops_disk_tools_working_under_the_lab(tmp_path: Path) -> None:
    lab = tmp_path / "labs" / "x"
    lab.mkdir(parents=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    # tail -F waits for a missing file forever, with the path in its command line.
    mount = subprocess.Popen([_tool(tmp_path, "mount"), "-F", f"{lab}/mnt/web1/data"], **quiet)
    other = subprocess.Popen([_tool(tmp_path, "mkfs.ext4"), "-F", f"{tmp_path}/x.img"], **quiet)
    not_a_tool = subprocess.Popen(["/usr/bin/tail", "-F", f"{lab}/disks/web1/data.img"], **quiet)
    try:
        time.sleep(0.1)
        assert disks._tools_under(f"{lab}/") == [mount.pid]
        t0 = time.monotonic()
        assert disks.detach_under(lab) == 0
        assert mount.wait(timeout=5) == -9
        assert time.monotonic() - t0 < 5
        assert other.poll() is None and not_a_tool.poll() is None
    finally:
        for p in (mount, other, not_a_tool):
            if p.poll() is None:
                p.kill()
            p.wait()
    assert os.path.isdir(lab)
