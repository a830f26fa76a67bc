"""Build drill's images, one per role, each cached by the hash of its content.

Roles and their folders under ``containers/`` (each has a Dockerfile)::

    base      the common layer: python3, iproute2, iptables, ping, procps, curl, tcpdump,
              ca-certificates, dumb-init; FROM the base OS
    web       nginx on :80                             FROM base
    app       documents/records stand-in on :80        FROM base, + artifact app-wheels
    gateway   wireguard-go, wireguard-tools, nftables  FROM base
    storage   Azurite Blob on :10000 (Node 18)         FROM base, + artifact azurite
    dns       lean CoreDNS v1.15.0                     FROM base, + artifact coredns
    client    dnspython, requests, dig, iperf3         FROM base, + artifact wheels
    directory OpenLDAP slapd on :389                   FROM base
    replicator ASR process server (harness/replication) FROM base, + replicator-wheels, -code

The base OS is ``debian:bookworm-slim`` when the engine has it, else ``drill/debian:bookworm``
(made earlier by this module), else a pull of ``debian:bookworm-slim`` is tried for
``PULL_TIMEOUT_S``, else ``drill/debian:bookworm`` is made with debootstrap and docker import.

A role's content hash is sha256 over its folder's files (sorted paths, executable bits, bytes;
never times), the recipe hashes of its artifacts and its parent's identity (the base OS image
id for ``base``, the base role's content hash for the others). The image is tagged
``drill/<role>:<hash[:12]>`` and ``drill/<role>:current`` and labelled ``drill.image=1`` and
``drill.content-hash=<hash>``. When the hash tag exists, nothing is prepared or built: only
``:current`` is pointed at it. The other roles are built ``FROM drill/base:<hash[:12]>``,
passed as the build argument ``BASE``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests.exceptions

from harness import artifacts
from harness.artifacts import CONTAINERS_DIR, Artifact, ArtifactFailure
from harness.errors import ImageBuildError, UsageError
from harness.naming import CONTENT_HASH, IMAGE, image_ref

ROLES: tuple[str, ...] = (
    "base",
    "web",
    "app",
    "gateway",
    "storage",
    "dns",
    "client",
    "directory",
    "replicator",
)
"""Every role, in build order (base first: the others are built FROM it)."""

BASE_OS_IMAGE = "debian:bookworm-slim"
LOCAL_BASE_OS_REPO = "drill/debian"
LOCAL_BASE_OS_TAG = "bookworm"
LOCAL_BASE_OS = f"{LOCAL_BASE_OS_REPO}:{LOCAL_BASE_OS_TAG}"
PULL_TIMEOUT_S = 20.0
BUILD_READ_TIMEOUT_S = 1800
"""A build step silent for longer than this fails the build."""
ROLE_LABEL = "drill.role"
TAIL_LINES = 20
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
"""Colour codes the classic builder puts around a step's stderr."""


@dataclass(frozen=True)
class RoleSpec:
    """How one role is built: its parent role, artifacts and context exclusions."""

    name: str
    parent: str | None
    artifacts: tuple[Artifact, ...] = ()
    exclude: tuple[str, ...] = ()
    """Paths of the role folder kept out of the build context (and so out of the hash)."""
    root: Path = CONTAINERS_DIR

    @property
    def folder(self) -> Path:
        """The role's folder: ``containers/<name>``."""
        return self.root / self.name


SPECS: Mapping[str, RoleSpec] = {
    "base": RoleSpec("base", parent=None),
    "web": RoleSpec("web", parent="base"),
    "app": RoleSpec("app", parent="base", artifacts=(artifacts.APP_WHEELS,)),
    "gateway": RoleSpec("gateway", parent="base"),
    "storage": RoleSpec("storage", parent="base", artifacts=(artifacts.AZURITE,)),
    "dns": RoleSpec("dns", parent="base", artifacts=(artifacts.COREDNS,), exclude=("build",)),
    "client": RoleSpec("client", parent="base", artifacts=(artifacts.WHEELS,)),
    "directory": RoleSpec("directory", parent="base"),
    "replicator": RoleSpec(
        "replicator",
        parent="base",
        artifacts=(artifacts.REPLICATOR_WHEELS, artifacts.REPLICATOR_CODE),
    ),
}


@dataclass(frozen=True)
class BuildResult:
    """What ``build_images`` did for one role."""

    role: str
    ref: str
    """``drill/<role>:current``."""
    content_hash: str
    built: bool
    """False when an image with this content hash already existed."""
    seconds: float


class RoleBuildError(ImageBuildError):
    """Building one role's image failed: which role, at which step, and the last output."""

    def __init__(self, role: str, step: str, message: str, output: str = "") -> None:
        self.role = role
        self.step = step
        self.output_tail = "\n".join(output.rstrip().splitlines()[-TAIL_LINES:])
        text = f"image {role}: {step} failed: {message}"
        if self.output_tail:
            tail = "\n".join("    " + line for line in self.output_tail.splitlines())
            text += f"\n  last output lines:\n{tail}"
        super().__init__(text)


def hash_ref(role: str, content_hash: str) -> str:
    """The content-addressed tag of a role's image: ``drill/<role>:<hash[:12]>``."""
    return f"{repository(role)}:{content_hash[:12]}"


def repository(role: str) -> str:
    """``drill/<role>``."""
    return image_ref(role).rsplit(":", 1)[0]


def content_hash(
    folder: Path,
    *,
    parent: str,
    artifact_hashes: Mapping[str, str] | None = None,
    exclude: Sequence[str] = (),
) -> str:
    """sha256 over a role folder's files, its artifacts' recipe hashes and its parent's identity.

    File paths, executable bits and bytes count; modification times do not, nor do caches such
    as ``__pycache__``.
    """
    h = hashlib.sha256(b"drill-image-v1\0")
    h.update(b"parent\0" + parent.encode() + b"\0")
    for name, recipe in sorted((artifact_hashes or {}).items()):
        h.update(b"artifact\0" + name.encode() + b"\0" + recipe.encode() + b"\0")
    artifacts.hash_tree(h, folder, exclude)
    return h.hexdigest()


def role_hash(role: str, parent_identity: str) -> str:
    """The content hash of ``role`` given its parent's identity."""
    spec = SPECS[role]
    return content_hash(
        spec.folder,
        parent=parent_identity,
        artifact_hashes={a.name: a.recipe_hash() for a in spec.artifacts},
        exclude=spec.exclude,
    )


def _closure(roles: Sequence[str] | None) -> list[str]:
    wanted = set(ROLES if roles is None else roles)
    unknown = sorted(wanted - set(ROLES))
    if unknown:
        raise UsageError(f"unknown image role(s): {', '.join(unknown)}; roles: {', '.join(ROLES)}")
    for role in list(wanted):
        parent = SPECS[role].parent
        while parent is not None:
            wanted.add(parent)
            parent = SPECS[parent].parent
    return [r for r in ROLES if r in wanted]


def _drill_tags(client: docker.DockerClient) -> dict[str, str]:
    """``{repo:tag: image id}`` of every image labelled ``drill.image=1``."""
    tags: dict[str, str] = {}
    for img in client.api.images(filters={"label": f"{IMAGE}=1"}):
        for tag in img.get("RepoTags") or ():
            tags[tag] = img["Id"]
    return tags


def missing_images(client: docker.DockerClient) -> list[str]:
    """Roles whose ``drill/<role>:current`` image is absent, in build order."""
    try:
        tags = _drill_tags(client)
    except docker.errors.DockerException as e:
        raise ImageBuildError(f"cannot list images: {e}") from e
    return [role for role in ROLES if image_ref(role) not in tags]


@contextlib.contextmanager
def _build_lock(progress: Callable[[str], None]) -> Iterator[None]:
    """One image build at a time per cache directory (across processes)."""
    path = artifacts.cache_dir() / "images.lock"
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("waiting for another image build to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _inspect(client: docker.DockerClient, ref: str) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = client.api.inspect_image(ref)
        return result
    except docker.errors.ImageNotFound:
        return None


def _try_pull(client: docker.DockerClient, ref: str, progress: Callable[[str], None]) -> bool:
    """Pull ``ref`` within PULL_TIMEOUT_S; False (never an error) when that fails."""
    progress(f"base OS: trying to pull {ref} ({PULL_TIMEOUT_S:.0f} s at most)")
    repo, tag = ref.rsplit(":", 1)
    api = client.api
    saved_timeout = api.timeout
    api.timeout = PULL_TIMEOUT_S
    deadline = time.monotonic() + PULL_TIMEOUT_S
    try:
        for event in api.pull(repo, tag=tag, stream=True, decode=True):
            if "error" in event:
                progress(f"base OS: pull failed: {str(event['error']).strip()[:200]}")
                return False
            if time.monotonic() > deadline:
                progress("base OS: pull took too long, giving up")
                return False
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        progress(f"base OS: pull failed: {str(e).strip()[:200]}")
        return False
    finally:
        api.timeout = saved_timeout
    return _inspect(client, ref) is not None


def _base_os(client: docker.DockerClient, progress: Callable[[str], None]) -> tuple[str, str]:
    """``(reference, image id)`` of the base OS image, making it if the engine has none."""
    for ref in (BASE_OS_IMAGE, LOCAL_BASE_OS):
        img = _inspect(client, ref)
        if img is not None:
            return ref, str(img["Id"])
    if _try_pull(client, BASE_OS_IMAGE, progress):
        img = _inspect(client, BASE_OS_IMAGE)
        if img is not None:
            return BASE_OS_IMAGE, str(img["Id"])
    tar_path = artifacts.debootstrap_rootfs(progress)
    progress(f"base OS: docker import {tar_path.name} as {LOCAL_BASE_OS}")
    client.api.import_image_from_file(
        str(tar_path),
        repository=LOCAL_BASE_OS_REPO,
        tag=LOCAL_BASE_OS_TAG,
        changes=[
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"LABEL {IMAGE}=1",
            'CMD ["bash"]',
        ],
    )
    img = _inspect(client, LOCAL_BASE_OS)
    if img is None:
        raise RoleBuildError("base", "base OS import", f"{tar_path} did not give {LOCAL_BASE_OS}")
    return LOCAL_BASE_OS, str(img["Id"])


def _add_tree(tar: tarfile.TarFile, root: Path, prefix: str, exclude: Sequence[str]) -> None:
    """Add ``root``'s files under ``prefix`` with neutral owners, modes and times."""
    for rel, path in artifacts.tree_files(root, exclude):
        st = path.lstat()
        info = tarfile.TarInfo(prefix + rel)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        if path.is_symlink():
            info.type = tarfile.SYMTYPE
            info.linkname = str(path.readlink())
            info.mode = 0o777
            tar.addfile(info)
            continue
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
        with open(path, "rb") as f:
            tar.addfile(info, f)


def _write_context(spec: RoleSpec, artifact_dirs: Mapping[str, Path], out: IO[bytes]) -> None:
    """The build context: the role folder, plus each artifact under ``artifacts/<name>/``."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_tree(tar, spec.folder, "", spec.exclude)
        for name, adir in artifact_dirs.items():
            _add_tree(tar, adir, f"artifacts/{name}/", ())


def _docker_build(
    client: docker.DockerClient,
    spec: RoleSpec,
    context: IO[bytes],
    *,
    tag: str,
    base_ref: str,
    labels: dict[str, str],
    nocache: bool,
    progress: Callable[[str], None],
) -> str:
    """Run the build, streaming its steps to ``progress``; the new image's id."""
    role = spec.name
    tail: deque[str] = deque(maxlen=200)
    image_id = ""
    try:
        stream = client.api.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            buildargs={"BASE": base_ref},
            labels=labels,
            rm=True,
            forcerm=True,
            pull=False,
            nocache=nocache,
            decode=True,
            timeout=BUILD_READ_TIMEOUT_S,
        )
        for chunk in stream:
            if "stream" in chunk:
                for line in ANSI_RE.sub("", str(chunk["stream"])).splitlines():
                    if line.strip():
                        tail.append(line)
                    if line.startswith("Step "):
                        progress(f"{role}: {line}")
                    found = re.match(r"Successfully built ([0-9a-f]+)", line)
                    if found:
                        image_id = found.group(1)
            if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = str(chunk["aux"]["ID"])
            if "error" in chunk:
                tail.append(str(chunk["error"]).rstrip())
                raise RoleBuildError(
                    role, "docker build", str(chunk["error"]).strip()[:500], "\n".join(tail)
                )
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        raise RoleBuildError(role, "docker build", str(e), "\n".join(tail)) from e
    if not image_id:
        raise RoleBuildError(
            role, "docker build", "the engine reported no image id", "\n".join(tail)
        )
    return image_id


def _point_current(
    client: docker.DockerClient, role: str, image_id: str, tags: Mapping[str, str]
) -> None:
    """Tag ``image_id`` as ``drill/<role>:current`` unless it already is."""
    if tags.get(image_ref(role)) != image_id:
        client.api.tag(image_id, repository(role), tag="current", force=True)


def _build_role(
    client: docker.DockerClient,
    spec: RoleSpec,
    h: str,
    base_ref: str,
    *,
    nocache: bool,
    progress: Callable[[str], None],
) -> str:
    """Prepare the artifacts and the context of one role and build it; the image id."""
    role = spec.name
    artifact_dirs: dict[str, Path] = {}
    for artifact in spec.artifacts:
        try:
            artifact_dirs[artifact.name] = artifacts.ensure_artifact(artifact, progress)
        except ArtifactFailure as e:
            raise RoleBuildError(role, f"prepare {e.artifact} ({e.step})", str(e), e.output) from e
        except OSError as e:
            raise RoleBuildError(role, f"prepare {artifact.name}", str(e)) from e
    progress(f"building {hash_ref(role, h)} FROM {base_ref}")
    tmpdir = artifacts.cache_dir() / "tmp"
    tmpdir.mkdir(exist_ok=True)
    with tempfile.TemporaryFile(dir=tmpdir, prefix=f"context-{role}-") as ctx:
        try:
            _write_context(spec, artifact_dirs, ctx)
            ctx.seek(0)
        except OSError as e:
            raise RoleBuildError(role, "build context", str(e)) from e
        return _docker_build(
            client,
            spec,
            ctx,
            tag=hash_ref(role, h),
            base_ref=base_ref,
            labels={IMAGE: "1", CONTENT_HASH: h, ROLE_LABEL: role},
            nocache=nocache,
            progress=progress,
        )


def build_images(
    client: docker.DockerClient,
    roles: Sequence[str] | None = None,
    *,
    progress: Callable[[str], None] = lambda s: None,
    force: bool = False,
) -> list[BuildResult]:
    """Make sure the images of ``roles`` (default: all) and their parents exist and are current.

    Roles whose content-hash tag already exists are not rebuilt; ``:current`` is (re)pointed
    at it. ``force`` rebuilds every selected role without Docker's layer cache (prepared host
    artifacts are still reused). Returns one result per role handled, in build order (parents
    included). Raises ``RoleBuildError`` (an ``ImageBuildError``) naming the role and step.
    """
    order = _closure(roles)
    results: list[BuildResult] = []
    with _build_lock(progress):
        try:
            tags = _drill_tags(client)
        except docker.errors.DockerException as e:
            raise RoleBuildError(order[0], "list images", str(e)) from e
        try:
            base_os_ref, base_os_id = _base_os(client, progress)
        except ArtifactFailure as e:
            raise RoleBuildError("base", f"base OS ({e.step})", str(e), e.output) from e
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
            raise RoleBuildError("base", "base OS", str(e)) from e
        hashes: dict[str, str] = {}
        for role in order:
            started = time.monotonic()
            spec = SPECS[role]
            if spec.parent is None:
                parent_identity, parent_ref = base_os_id, base_os_ref
            else:
                parent_identity = hashes[spec.parent]
                parent_ref = hash_ref(spec.parent, parent_identity)
            if not (spec.folder / "Dockerfile").is_file():
                raise RoleBuildError(role, "content hash", f"{spec.folder}/Dockerfile is missing")
            try:
                h = role_hash(role, parent_identity)
            except OSError as e:
                raise RoleBuildError(role, "content hash", str(e)) from e
            hashes[role] = h
            ref = hash_ref(role, h)
            built = force or ref not in tags
            try:
                if built:
                    image_id = _build_role(
                        client, spec, h, parent_ref, nocache=force, progress=progress
                    )
                    tags = {**tags, ref: image_id}
                else:
                    image_id = tags[ref]
                _point_current(client, role, image_id, tags)
            except docker.errors.DockerException as e:
                raise RoleBuildError(role, "tag", str(e)) from e
            tags = {**tags, image_ref(role): image_id}
            seconds = time.monotonic() - started
            if built:
                progress(f"built {ref} in {seconds:.1f} s")
            else:
                progress(f"{role}: up to date ({ref})")
            results.append(BuildResult(role, image_ref(role), h, built, seconds))
    return results
