"""Image definitions and content hashing, without a Docker engine."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from harness import artifacts
from harness.errors import ImageBuildError, UsageError
from harness.images import (
    ROLES,
    SPECS,
    RoleBuildError,
    _closure,
    _write_context,
    content_hash,
    hash_ref,
    role_hash,
)

CONTAINERS = Path(__file__).resolve().parents[2] / "containers"


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _tree(
        tmp_path / "role",
        {"Dockerfile": b"FROM x\n", "conf/a.conf": b"a=1\n", "start": b"#!/bin/sh\n"},
    )


def test_hash_is_stable(folder: Path) -> None:
    assert content_hash(folder, parent="p") == content_hash(folder, parent="p")
    assert re.fullmatch(r"[0-9a-f]{64}", content_hash(folder, parent="p"))


def test_hash_changes_when_a_file_changes(folder: Path) -> None:
    before = content_hash(folder, parent="p")
    (folder / "conf/a.conf").write_bytes(b"a=2\n")
    assert content_hash(folder, parent="p") != before


def test_hash_changes_when_a_file_is_added_renamed_or_made_executable(folder: Path) -> None:
    seen = {content_hash(folder, parent="p")}
    (folder / "extra").write_bytes(b"")
    seen.add(content_hash(folder, parent="p"))
    (folder / "extra").rename(folder / "extra2")
    seen.add(content_hash(folder, parent="p"))
    (folder / "start").chmod(0o755)
    seen.add(content_hash(folder, parent="p"))
    assert len(seen) == 4


def test_hash_ignores_modification_times_and_caches(folder: Path) -> None:
    before = content_hash(folder, parent="p")
    for p in folder.rglob("*"):
        os.utime(p, (1_000_000, 1_000_000))
    _tree(folder, {"__pycache__/x.cpython-311.pyc": b"junk", "conf/b.pyc": b"junk"})
    assert content_hash(folder, parent="p") == before


def test_hash_depends_on_parent_artifacts_and_exclusions(folder: Path) -> None:
    base = content_hash(folder, parent="p")
    assert content_hash(folder, parent="q") != base
    assert content_hash(folder, parent="p", artifact_hashes={"x": "1"}) != base
    assert content_hash(folder, parent="p", artifact_hashes={"x": "2"}) != content_hash(
        folder, parent="p", artifact_hashes={"x": "1"}
    )
    assert content_hash(folder, parent="p", exclude=("conf",)) != base


def test_hash_does_not_depend_on_the_folder_location(folder: Path, tmp_path: Path) -> None:
    copy = _tree(
        tmp_path / "elsewhere" / "copy",
        {"Dockerfile": b"FROM x\n", "conf/a.conf": b"a=1\n", "start": b"#!/bin/sh\n"},
    )
    assert content_hash(copy, parent="p") == content_hash(folder, parent="p")


def test_tree_files_excludes_prefixes_only(tmp_path: Path) -> None:
    root = _tree(tmp_path / "r", {"build/x": b"", "builder": b"", "a/build/y": b""})
    names = [rel for rel, _ in artifacts.tree_files(root, exclude=("build",))]
    assert names == ["a/build/y", "builder"]


def test_roles_are_in_build_order() -> None:
    assert ROLES[0] == "base"
    assert set(ROLES) == {
        "base",
        "web",
        "app",
        "gateway",
        "storage",
        "dns",
        "client",
        "directory",
        "replicator",
    }
    for i, role in enumerate(ROLES):
        parent = SPECS[role].parent
        assert parent is None or ROLES.index(parent) < i


def test_closure_adds_parents_and_rejects_unknown_roles() -> None:
    assert _closure(["dns"]) == ["base", "dns"]
    assert _closure(None) == list(ROLES)
    with pytest.raises(UsageError):
        _closure(["nope"])


def test_real_role_hashes_are_stable_and_distinct() -> None:
    hashes = {role: role_hash(role, "sha256:parent") for role in ROLES}
    assert hashes == {role: role_hash(role, "sha256:parent") for role in ROLES}
    assert len(set(hashes.values())) == len(ROLES)
    assert hash_ref("web", hashes["web"]) == f"drill/web:{hashes['web'][:12]}"


def test_artifact_recipes_are_cheap_and_stable() -> None:
    for a in (artifacts.AZURITE, artifacts.COREDNS, artifacts.WHEELS):
        assert a.recipe_hash() == a.recipe_hash()
    assert "azurite@3.35.0" in artifacts.AZURITE.pins


def test_every_role_has_a_dockerfile_built_from_base_arg() -> None:
    for role in ROLES:
        dockerfile = (CONTAINERS / role / "Dockerfile").read_text()
        assert re.search(r"^ARG BASE=\S+$", dockerfile, re.M), role
        assert re.search(r"^FROM \$\{BASE\}$", dockerfile, re.M), role


def test_no_registry_host_names_in_image_definitions() -> None:
    hosts = re.compile(
        r"(deb|ftp|security)\.debian\.org|pypi\.org|pythonhosted\.org|registry\.npmjs\.org"
        r"|(proxy|sum)\.golang\.org"
    )
    for rel, path in artifacts.tree_files(CONTAINERS):
        assert not hosts.search(path.read_bytes().decode(errors="replace")), rel
    for module in (artifacts, importlib.import_module("harness.images")):
        assert module.__file__ is not None
        assert not hosts.search(Path(module.__file__).read_text()), module.__name__


def test_context_holds_role_files_and_artifacts(tmp_path: Path) -> None:
    art = _tree(tmp_path / "art", {"coredns": b"\x7fELF"})
    buf = io.BytesIO()
    _write_context(SPECS["dns"], {"coredns": art}, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        names = set(tar.getnames())
        assert {"Dockerfile", "Corefile", "artifacts/coredns/coredns"} <= names
        assert not any(n.startswith("build/") for n in names)
        assert all(m.uid == 0 and m.mtime == 0 for m in tar.getmembers())


def test_role_build_error_names_role_step_and_tail() -> None:
    err = RoleBuildError("web", "docker build", "boom", "\n".join(f"line {i}" for i in range(50)))
    assert isinstance(err, ImageBuildError)
    assert err.role == "web" and err.step == "docker build"
    assert err.output_tail.splitlines() == [f"line {i}" for i in range(30, 50)]
    assert "web" in str(err) and "line 49" in str(err) and "line 29" not in str(err)


# --- the app role's store, in-process -----------------------------------------------------


def _app_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("drill_app", CONTAINERS / "app" / "app.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_app_store_persists_items_and_sequence(tmp_path: Path) -> None:
    app = _app_module()
    store = app.Store(tmp_path, "records", "h", "s")
    assert store.writable() is None
    first = store.put(b'{"a": 1}', "application/json")
    second = store.put(b"\x00\x01", "application/octet-stream")
    assert (first["seq"], second["seq"]) == (1, 2)
    again = app.Store(tmp_path, "records", "h", "s")  # a restarted app
    assert again.count() == 2 and again.last_seq() == 2
    meta, body = again.get(second["id"])
    assert body == b"\x00\x01" and meta["sha256"] == second["sha256"]
    assert [i["id"] for i in again.list()] == [first["id"], second["id"]]
    assert again.put(b"x", "text/plain")["seq"] == 3
    assert again.get("../../etc/passwd") is None
    assert again.flush()["items"] == 3
    assert not list(tmp_path.rglob(".tmp-*"))


def test_app_flush_syncs_only_its_own_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sync(2) would wait for every filesystem on the machine while the flush holds writes.
    app = _app_module()
    store = app.Store(tmp_path, "records", "h", "s")
    store.put(b"x", "text/plain")
    synced: list[Path] = []
    real = app.syncfs

    def spy(path: Path) -> None:
        synced.append(path)
        real(path)  # the real syscall, on the store's own filesystem

    def forbidden() -> None:
        raise AssertionError("sync(2) flushes every filesystem")

    monkeypatch.setattr(app, "syncfs", spy)
    monkeypatch.setattr(app.os, "sync", forbidden)
    assert store.flush()["items"] == 1
    assert synced == [tmp_path]
