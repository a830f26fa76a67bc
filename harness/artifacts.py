"""Host-side preparation of what the image builds need but cannot fetch themselves.

Inside ``docker build`` only Debian's apt works, so three artifacts are made on the host with
the ordinary clients and copied into build contexts:

    azurite   ``npm install --omit=dev azurite@3.35.0``, packed as ``azurite.tar``   (storage)
    coredns   a lean, static CoreDNS v1.15.0 built from ``containers/dns/build``    (dns)
    wheels    the client's pinned wheels, from ``pip download``                     (client)
    app-wheels the app's pinned wheels (ldap3)                                       (app)
    replicator-wheels  the replicator's pinned wheels (azure-storage-blob)       (replicator)
    replicator-code    ``harness/replication`` copied as a package              (replicator)

plus, when no Debian image is available, a ``debootstrap --variant=minbase bookworm`` root
file system packed as a tar for ``docker import``.

Each artifact is cached under ``<cache>/artifacts/<name>-<recipe hash>``: the hash covers the
*recipe* (pinned versions, build settings and build sources), never the output, so deciding
that nothing needs preparing costs a few small file reads. ``<cache>`` is ``<repo>/.cache``,
or ``$DRILL_CACHE_DIR``. Go's module and build caches, npm's and pip's stay where the tools
keep them by default (under ``$HOME``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTAINERS_DIR = REPO_ROOT / "containers"

AZURITE_VERSION = "3.35.0"
"""Azurite 3.36 and later need Node >= 21; bookworm ships Node 18."""
COREDNS_VERSION = "v1.15.0"
"""Pinned in containers/dns/build/go.mod too; kept here for messages and the recipe."""

IGNORED_NAMES = frozenset(
    {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".DS_Store", ".git"}
)
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")

Progress = Callable[[str], None]


class ArtifactFailure(Exception):
    """Preparing an artifact failed at ``step``; ``output`` is what the tool printed."""

    def __init__(self, artifact: str, step: str, message: str, output: str = "") -> None:
        self.artifact = artifact
        self.step = step
        self.output = output
        super().__init__(f"{artifact}: {step}: {message}")


def cache_dir() -> Path:
    """The artifact cache: ``$DRILL_CACHE_DIR`` or ``<repo>/.cache`` (created if missing)."""
    path = Path(os.environ.get("DRILL_CACHE_DIR") or REPO_ROOT / ".cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ignored(name: str) -> bool:
    return name in IGNORED_NAMES or name.endswith(IGNORED_SUFFIXES)


def tree_files(root: Path, exclude: Collection[str] = ()) -> list[tuple[str, Path]]:
    """Files (and symlinks) under ``root`` as sorted ``(relative posix path, path)`` pairs.

    Caches and editor droppings (``__pycache__``, ``*.pyc``, ...) are skipped, and so is every
    path whose relative form equals or starts with one of ``exclude`` (``"build"`` skips
    ``build/`` and everything in it). A single file as ``root`` yields itself by its name.
    """
    if root.is_file():
        return [(root.name, root)]
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [
            d for d in dirnames if not _ignored(d) and not _excluded(rel_dir + d, exclude)
        ]
        for d in dirnames:  # symlinks to directories are kept as links, not followed
            if (base / d).is_symlink():
                out.append((rel_dir + d, base / d))
        dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
        for f in filenames:
            if not _ignored(f) and not _excluded(rel_dir + f, exclude):
                out.append((rel_dir + f, base / f))
    out.sort(key=lambda item: item[0])
    return out


def _excluded(rel: str, exclude: Collection[str]) -> bool:
    return any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude)


def hash_tree(h: hashlib._Hash, root: Path, exclude: Collection[str] = ()) -> None:
    """Feed ``root``'s files into ``h``: paths, executable bits and bytes, never times."""
    for rel, path in tree_files(root, exclude):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            h.update(b"L\0" + rel.encode() + b"\0" + os.readlink(path).encode() + b"\0")
            continue
        executable = b"x" if st.st_mode & 0o111 else b"-"
        h.update(b"F\0" + rel.encode() + b"\0" + executable + str(st.st_size).encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)


@dataclass(frozen=True)
class Artifact:
    """Something prepared on the host and put in a build context under ``artifacts/<name>/``.

    ``pins`` (versions, flags, target) and the bytes of ``sources`` make up the recipe;
    ``prepare(out_dir)`` fills the empty ``out_dir`` with the files for the context.
    """

    name: str
    description: str
    pins: tuple[str, ...]
    sources: tuple[Path, ...]
    prepare: Callable[[Path], None]

    def recipe_hash(self) -> str:
        """sha256 of the recipe: name, pins and source files."""
        h = hashlib.sha256(b"drill-artifact-v1\0" + self.name.encode() + b"\0")
        for pin in self.pins:
            h.update(pin.encode() + b"\0")
        for src in self.sources:
            h.update(b"S\0" + src.relative_to(REPO_ROOT).as_posix().encode() + b"\0")
            hash_tree(h, src)
        return h.hexdigest()


def ensure_artifact(artifact: Artifact, progress: Progress) -> Path:
    """The directory holding ``artifact``'s prepared files, preparing them if not cached."""
    root = cache_dir() / "artifacts"
    key = artifact.recipe_hash()[:16]
    final = root / f"{artifact.name}-{key}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{artifact.name}-{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    progress(f"preparing artifact {artifact.name}: {artifact.description}")
    try:
        artifact.prepare(tmp)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in root.glob(f"{artifact.name}-*"):  # earlier recipes of the same artifact
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def run_tool(
    artifact: str,
    step: str,
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 1200,
) -> str:
    """Run a host tool; its combined output, or ArtifactFailure naming the step."""
    full_env = {**os.environ, **(env or {})}
    try:
        done = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise ArtifactFailure(artifact, step, f"{cmd[0]} is not installed on this host") from e
    except subprocess.TimeoutExpired as e:
        out = e.output if isinstance(e.output, str) else (e.output or b"").decode(errors="replace")
        raise ArtifactFailure(artifact, step, f"timed out after {timeout:.0f}s", out) from e
    if done.returncode != 0:
        raise ArtifactFailure(
            artifact, step, f"{' '.join(cmd)} exited with {done.returncode}", done.stdout
        )
    return done.stdout


# --- the artifacts -----------------------------------------------------------------------


def _prepare_azurite(out: Path) -> None:
    stage = out.parent / (out.name + ".npm")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        run_tool(
            "azurite",
            "npm install",
            [
                "npm",
                "install",
                "--omit=dev",
                "--no-audit",
                "--no-fund",
                "--save-exact",
                f"azurite@{AZURITE_VERSION}",
            ],
            cwd=stage,
        )
        if not (stage / "node_modules" / ".bin" / "azurite-blob").exists():
            raise ArtifactFailure(
                "azurite", "npm install", "node_modules/.bin/azurite-blob missing"
            )
        members = [
            m for m in ("node_modules", "package.json", "package-lock.json") if (stage / m).exists()
        ]
        run_tool(
            "azurite",
            "pack azurite.tar",
            [
                "tar",
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "-C",
                str(stage),
                "-cf",
                str(out / "azurite.tar"),
                *members,
            ],
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)


COREDNS_SOURCES = CONTAINERS_DIR / "dns" / "build"


def _go() -> str:
    """The go command: on PATH, else where the official toolchain installs itself."""
    found = shutil.which("go")
    if found is None and Path("/usr/local/go/bin/go").exists():
        return "/usr/local/go/bin/go"
    return found or "go"


def _prepare_coredns(out: Path) -> None:
    binary = out / "coredns"
    run_tool(
        "coredns",
        "go build",
        [
            _go(),
            "build",
            "-mod=readonly",
            "-trimpath",
            "-buildvcs=false",
            "-ldflags=-s -w",
            "-o",
            str(binary),
            ".",
        ],
        cwd=COREDNS_SOURCES,
        env={"CGO_ENABLED": "0", "GOOS": "linux", "GOFLAGS": ""},
        timeout=1800,
    )
    version = run_tool("coredns", "check binary", [str(binary), "-version"], timeout=30)
    if COREDNS_VERSION.lstrip("v") not in version:
        raise ArtifactFailure("coredns", "check binary", "unexpected version", version)


CLIENT_DIR = CONTAINERS_DIR / "client"
WHEEL_TARGET = (
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
    "--platform",
    f"manylinux_2_28_{platform.machine()}",
    "--platform",
    f"manylinux_2_17_{platform.machine()}",
    "--platform",
    f"manylinux2014_{platform.machine()}",
)
"""Bookworm's python3 (3.11, glibc 2.36) on the machine's own architecture."""


def _prepare_wheels(out: Path, requirements: Path) -> None:
    run_tool(
        "wheels",
        "pip download",
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary=:all:",
            *WHEEL_TARGET,
            "--dest",
            str(out),
            "-r",
            str(requirements),
            "-r",
            str(CLIENT_DIR / "requirements-pip.txt"),
        ],
        timeout=600,
    )
    if not list(out.glob("pip-*.whl")):
        raise ArtifactFailure("wheels", "pip download", "no pip wheel was downloaded")


AZURITE = Artifact(
    name="azurite",
    description=f"npm install --omit=dev azurite@{AZURITE_VERSION}",
    pins=(f"azurite@{AZURITE_VERSION}", "--omit=dev", "tar:node_modules"),
    sources=(),
    prepare=_prepare_azurite,
)

COREDNS = Artifact(
    name="coredns",
    description=f"go build CoreDNS {COREDNS_VERSION} (lean, CGO_ENABLED=0)",
    pins=(
        f"coredns@{COREDNS_VERSION}",
        "CGO_ENABLED=0",
        "GOOS=linux",
        f"arch={platform.machine()}",
        "-trimpath -ldflags=-s -w",
    ),
    sources=(COREDNS_SOURCES,),
    prepare=_prepare_coredns,
)


def _wheels(name: str, role_dir: Path, what: str) -> Artifact:
    """pip download of one role's pinned wheels, with pip's own wheel to install them offline."""
    requirements = role_dir / "requirements.txt"
    return Artifact(
        name=name,
        description=f"pip download {what}",
        pins=WHEEL_TARGET,
        sources=(requirements, CLIENT_DIR / "requirements-pip.txt"),
        prepare=lambda out: _prepare_wheels(out, requirements),
    )


WHEELS = _wheels("wheels", CLIENT_DIR, "the client's pinned wheels")

APP_DIR = CONTAINERS_DIR / "app"
APP_WHEELS = _wheels(
    "app-wheels", APP_DIR, "the app's pinned wheels (ldap3, for logins against the directory)"
)

REPLICATOR_DIR = CONTAINERS_DIR / "replicator"
REPLICATOR_WHEELS = _wheels(
    "replicator-wheels", REPLICATOR_DIR, "the replicator's pinned wheels (azure-storage-blob)"
)

HARNESS_DIR = REPO_ROOT / "harness"
REPLICATOR_MODULES = ("__init__.py", "core.py", "store.py", "agent.py")
"""The replication modules the replicator runs; they import nothing else of the harness."""


def _prepare_replicator_code(out: Path) -> None:
    pkg = out / "harness" / "replication"
    pkg.mkdir(parents=True)
    shutil.copyfile(HARNESS_DIR / "__init__.py", out / "harness" / "__init__.py")
    for name in REPLICATOR_MODULES:
        shutil.copyfile(HARNESS_DIR / "replication" / name, pkg / name)


REPLICATOR_CODE = Artifact(
    name="replicator-code",
    description="copy harness/replication into the replicator's build context",
    pins=REPLICATOR_MODULES,
    # The recipe hash covers these files' bytes, so a code change rebuilds the image.
    sources=(
        HARNESS_DIR / "__init__.py",
        *(HARNESS_DIR / "replication" / name for name in REPLICATOR_MODULES),
    ),
    prepare=_prepare_replicator_code,
)

# --- the base OS, when no Debian image is available -------------------------------------


DEBIAN_SUITE = "bookworm"


def debootstrap_rootfs(progress: Progress) -> Path:
    """A tar of a ``debootstrap --variant=minbase bookworm`` root file system (cached).

    The mirror is debootstrap's default. The tar leaves out /dev, /proc and /sys contents and
    the downloaded .deb files; it is what ``docker import`` takes.
    """
    root = cache_dir() / "debootstrap"
    root.mkdir(parents=True, exist_ok=True)
    tar_path = root / f"{DEBIAN_SUITE}-minbase.tar"
    if tar_path.is_file():
        return tar_path
    rootfs = root / f"{DEBIAN_SUITE}-minbase"
    done_marker = root / f"{DEBIAN_SUITE}-minbase.done"
    if not done_marker.exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        progress(f"base OS: debootstrap --variant=minbase {DEBIAN_SUITE} (about a minute)")
        run_tool(
            "debian",
            "debootstrap",
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs)],
            timeout=1800,
        )
        done_marker.touch()
    for junk in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        junk.unlink()
    for junk in (rootfs / "var/lib/apt/lists").glob("*_*"):
        junk.unlink()
    partial = tar_path.with_suffix(".tar.partial")
    progress(f"base OS: packing {rootfs.name} for docker import")
    run_tool(
        "debian",
        "pack rootfs",
        [
            "tar",
            "--numeric-owner",
            "-C",
            str(rootfs),
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
            "-cf",
            str(partial),
            ".",
        ],
    )
    os.replace(partial, tar_path)
    shutil.rmtree(rootfs, ignore_errors=True)
    done_marker.unlink(missing_ok=True)
    return tar_path
