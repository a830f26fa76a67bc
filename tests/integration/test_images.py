"""The images, for real: build them (cached) and check each role's contract in a container.

The engine client is the ``client`` fixture of tests/integration/conftest.py. Containers run
on a bridge network made for this module (internal: nothing routes off the machine); the host
reaches them on their bridge addresses. Everything is labelled ``drill.lab=test-images`` and
removed at the end, leftovers of earlier runs first.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import docker
import docker.errors
import pytest
import requests
from docker.models.containers import Container
from docker.models.networks import Network

from harness.images import (
    ROLES,
    RoleBuildError,
    RoleSpec,
    _build_role,
    build_images,
    missing_images,
)
from harness.naming import LAB, image_ref
from harness.runtime import DockerRuntime

from .conftest import wait_for

pytestmark = pytest.mark.integration

LAB_NAME = "test-images"
LABELS = {LAB: LAB_NAME}
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _cleanup(client: docker.DockerClient) -> None:
    for c in client.containers.list(all=True, filters={"label": f"{LAB}={LAB_NAME}"}):
        c.remove(force=True)
    for n in client.networks.list(filters={"label": f"{LAB}={LAB_NAME}"}):
        n.remove()


@pytest.fixture(scope="module")
def images(client: docker.DockerClient) -> None:
    started = time.monotonic()
    build_images(client, progress=lambda s: print("images:", s))
    print(f"images ready in {time.monotonic() - started:.1f} s")
    assert missing_images(client) == []


@pytest.fixture(scope="module")
def network(client: docker.DockerClient, images: None) -> Iterator[Network]:
    _cleanup(client)
    net = client.networks.create(
        f"drill-{LAB_NAME}-{secrets.token_hex(3)}", driver="bridge", internal=True, labels=LABELS
    )
    try:
        yield net
    finally:
        _cleanup(client)


Run = Callable[..., tuple[Container, str]]


@pytest.fixture
def run(client: docker.DockerClient, network: Network) -> Iterator[Run]:
    """Start a role's container on the test network; returns it and its address."""
    started: list[Container] = []

    def _run(role: str, **kwargs: Any) -> tuple[Container, str]:
        name = f"drill-{LAB_NAME}-{role}-{secrets.token_hex(3)}"
        c = client.containers.run(
            image_ref(role), name=name, detach=True, labels=LABELS, network=network.name, **kwargs
        )
        started.append(c)
        c.reload()
        ip = c.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        assert ip, f"{name} has no address on {network.name}"
        return c, ip

    try:
        yield _run
    finally:
        for c in started:
            c.remove(force=True)


def _wait_http(url: str, container: Container, timeout: float = 30.0) -> requests.Response:
    """GET ``url`` until it answers with any HTTP status; fails with the container's logs."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return requests.get(url, timeout=2)
        except requests.RequestException as e:
            last = e
            time.sleep(0.2)
    logs = container.logs(tail=30).decode(errors="replace")
    pytest.fail(f"{url} did not answer in {timeout}s: {last}\n{logs}")


def test_all_roles_have_current_images(client: docker.DockerClient, images: None) -> None:
    for role in ROLES:
        img = client.images.get(image_ref(role))
        assert img.labels["drill.image"] == "1"
        assert len(img.labels["drill.content-hash"]) == 64


def test_warm_build_is_a_noop(client: docker.DockerClient, images: None) -> None:
    """Unchanged roles are neither built nor have their artifacts prepared again (the speed
    of that is a benchmark's business, not a test's)."""
    said: list[str] = []
    results = build_images(client, progress=said.append)
    assert [r.role for r in results] == list(ROLES)
    assert not any(r.built for r in results)
    assert not [m for m in said if m.startswith(("building", "preparing"))], said


def test_a_failing_build_names_role_step_and_output(
    client: docker.DockerClient, images: None, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nRUN echo preparing-the-thing && echo it-broke >&2 && exit 3\n"
    )
    spec = RoleSpec("broken", parent="base", root=tmp_path)
    with pytest.raises(RoleBuildError) as err:
        _build_role(client, spec, "0" * 64, image_ref("base"), nocache=False, progress=print)
    assert err.value.role == "broken" and err.value.step == "docker build"
    assert "preparing-the-thing" in err.value.output_tail
    assert "it-broke" in str(err.value) and "\x1b[" not in str(err.value)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("drill/broken:000000000000")


def test_web(run: Run) -> None:
    c, ip = run("web", environment={"DRILL_HOST": "web-1", "DRILL_SITE": "site-a"})
    r = _wait_http(f"http://{ip}/health", c)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "host": "web-1", "site": "site-a"}
    page = requests.get(f"http://{ip}/", timeout=5)
    assert page.status_code == 200
    assert "web-1" in page.text and "site-a" in page.text
    # Access log on stdout; the engine copies a container's output to its log asynchronously.
    wait_for("the access log on stdout", lambda: "GET /health" in c.logs().decode(), timeout=10)


def test_exec_returns_all_output_and_the_exit_code(run: Run, rt: DockerRuntime) -> None:
    c, _ = run("base", command=["sleep", "infinity"])
    res = rt.exec(c.name, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    # Both streams, though not in a fixed order: the engine copies them from two pipes.
    assert (res.exit_code, sorted(res.output.splitlines())) == (3, ["err", "out"])
    # A busy caller reads the exec's response late, after a quick command's output arrived:
    # the docker SDK's exec_start lost it then (docker/docker-py#2042), about 1 exec in 100.
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            pass

    burners = [threading.Thread(target=busy, daemon=True) for _ in range(2)]
    for b in burners:
        b.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(lambda i: rt.exec(c.name, ["echo", f"n{i}"]), range(400)))
    finally:
        stop.set()
    assert [r.output for r in results] == [f"n{i}\n" for i in range(400)]
    assert all(r.ok for r in results)


def test_app_stores_and_returns_a_document(run: Run) -> None:
    c, ip = run(
        "app",
        environment={"APP_KIND": "documents", "DRILL_HOST": "sp-1", "DRILL_SITE": "site-a"},
    )
    base = f"http://{ip}"
    health = _wait_http(f"{base}/health", c).json()
    assert health["status"] == "ok" and health["items"] == 0 and health["kind"] == "documents"

    doc = {"title": "DR runbook", "body": "fail over to site B"}
    r = requests.post(f"{base}/documents", json=doc, timeout=5)
    assert r.status_code == 201, r.text
    stored = r.json()
    assert stored["seq"] == 1 and len(stored["sha256"]) == 64

    got = requests.get(f"{base}/documents/{stored['id']}", timeout=5)
    assert got.status_code == 200 and json.loads(got.content) == doc
    assert got.headers["X-Item-Sha256"] == stored["sha256"]
    listing = requests.get(f"{base}/documents", timeout=5).json()
    assert [(i["id"], i["seq"]) for i in listing["items"]] == [(stored["id"], 1)]
    assert requests.post(f"{base}/admin/flush", timeout=5).status_code == 200

    health = requests.get(f"{base}/health", timeout=5).json()
    assert health == {
        "status": "ok", "host": "sp-1", "site": "site-a", "kind": "documents",
        "data_dir": "/data", "items": 1, "seq": 1,
    }  # fmt: skip

    second = requests.post(f"{base}/documents", data=b"\x00bytes", timeout=5).json()
    assert second["seq"] == 2


def test_app_is_unhealthy_when_data_dir_is_read_only(run: Run) -> None:
    c, ip = run("app", environment={"APP_KIND": "records"}, read_only=True)
    r = _wait_http(f"http://{ip}/health", c)
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


def test_dns_answers_whoami(client: docker.DockerClient, network: Network, run: Run) -> None:
    c, ip = run("dns")
    ready = _wait_http(f"http://{ip}:8181/ready", c)
    assert ready.status_code == 200
    assert _wait_http(f"http://{ip}:8080/health", c).status_code == 200
    network.reload()
    host_ip = network.attrs["IPAM"]["Config"][0]["Gateway"]
    answer = dns.query.udp(dns.message.make_query("whoami.drill.", "A"), ip, timeout=3)
    addresses = [
        rd.address for rrset in answer.additional if rrset.rdtype == dns.rdatatype.A for rd in rrset
    ]
    assert addresses == [host_ip]


@pytest.mark.parametrize("custom_account", [False, True], ids=["dev-account", "AZURITE_ACCOUNTS"])
def test_storage_blob_api(run: Run, custom_account: bool) -> None:
    from azure.storage.blob import BlobServiceClient

    account, key = DEV_ACCOUNT, DEV_KEY
    env: dict[str, str] = {}
    if custom_account:
        account, key = "drillsitea", base64.b64encode(b"drill-test-key-0123456789abcdef").decode()
        env["AZURITE_ACCOUNTS"] = f"{account}:{key}"
    c, ip = run("storage", environment=env)
    _wait_http(f"http://{ip}:10000/", c)  # any HTTP answer: the Blob endpoint is up
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
        f"BlobEndpoint=http://{ip}:10000/{account};"
    )
    svc = BlobServiceClient.from_connection_string(conn)
    container = svc.create_container("drill-test")
    container.upload_blob("hello.txt", b"hello from the host")
    assert container.download_blob("hello.txt").readall() == b"hello from the host"
    assert [x.name for x in svc.list_containers()] == ["drill-test"]


def test_gateway_has_wireguard(run: Run, rt: DockerRuntime) -> None:
    c, _ = run(
        "gateway",
        cap_add=["NET_ADMIN"],
        devices=["/dev/net/tun:/dev/net/tun"],
        sysctls={"net.ipv4.ip_forward": "1"},
        environment={"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"},
    )
    for cmd in (["wg", "--version"], ["wireguard-go", "--version"], ["nft", "--version"],
                ["iperf3", "--version"]):  # fmt: skip
        res = rt.exec(c.name, cmd)
        assert res.ok, f"{cmd}: {res.output}"
    res = rt.exec(
        c.name, ["sh", "-c", "wireguard-go wgtest && wg show wgtest && ip link show wgtest"]
    )
    assert res.ok, res.output


def test_client_has_its_tools(run: Run, rt: DockerRuntime) -> None:
    c, _ = run("client")
    for cmd in (
        ["python3", "-c", "import dns, requests; print(dns.version.version, requests.__version__)"],
        ["dig", "-v"],
        ["iperf3", "--version"],
        ["curl", "--version"],
        ["ping", "-V"],
    ):
        res = rt.exec(c.name, cmd)
        assert res.ok, f"{cmd}: {res.output}"


def test_directory_serves_ldap(run: Run, rt: DockerRuntime) -> None:
    c, _ = run("directory")
    deadline = time.monotonic() + 30
    while True:
        res = rt.exec(
            c.name,
            [
                "ldapsearch",
                "-x",
                "-H",
                "ldap://127.0.0.1",
                "-b",
                "",
                "-s",
                "base",
                "namingContexts",
            ],
        )
        if res.ok or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert res.ok, res.output
    assert "dc=contoso,dc=test" in res.output


@pytest.mark.parametrize("role", [r for r in ROLES if r != "base"])
def test_stop_is_fast(run: Run, role: str) -> None:
    """SIGTERM ends the role's main process: docker stop never has to fall back to SIGKILL.

    Judged by how the container ended (a SIGKILL shows as exit code 137), not by a clock.
    """
    kwargs: dict[str, Any] = {}
    if role == "gateway":
        kwargs = {"cap_add": ["NET_ADMIN"], "devices": ["/dev/net/tun:/dev/net/tun"]}
    c, _ = run(role, **kwargs)
    time.sleep(1.0)  # let the main process start and install its handlers
    c.reload()
    assert c.status == "running", c.logs(tail=20).decode(errors="replace")
    c.stop(timeout=30)
    c.reload()
    code = c.attrs["State"]["ExitCode"]
    assert code != 137, f"{role} ignored SIGTERM and was killed after the stop timeout"
