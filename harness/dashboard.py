"""A small live web page of one sandbox: ``drill dashboard [--name] [--port]``.

A stdlib ``ThreadingHTTPServer`` bound to 127.0.0.1 only (a sandbox's dashboard shows addresses
and state a trainer would not publish; other addresses are refused). Two routes:

    /             one self-contained HTML page (inline CSS and script, no external resources)
                  that polls /api/status every second and renders it
    /api/status   JSON from ``collect``: lab hosts with health, tunnel, DNS answer and
                  endpoints, replication RPO per disk, active faults, failover state, scenario

``collect`` gathers each part on its own and reports a part that fails as
``{"unavailable": "<why>"}``, so one broken component (the site is down, DNS stopped) never
blanks the page: that is exactly when a learner needs it.
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness.errors import UsageError

LOCALHOST = "127.0.0.1"


def _part(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # a part that fails is shown as unavailable, never fatal
        return {"unavailable": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}


def _lab(name: str) -> dict[str, Any]:
    from harness import lab

    return lab.status(name).to_json()


def _tunnel(name: str) -> list[dict[str, Any]]:
    from harness import tunnel

    return [e.to_json() for e in tunnel.status(name)]


def _dns(name: str) -> dict[str, Any]:
    from harness import trafficmanager

    st = trafficmanager.status(name)
    return {
        "profile": st.profile,
        "vanity": st.vanity,
        "profile_status": st.profile_status,
        "answer": asdict(st.answer) if st.answer else None,
        "answer_error": st.answer_error,
        "endpoints": [
            {"name": e.name, "site": e.site, "address": e.address, "status": e.status}
            for e in st.endpoints
        ],
    }


def _replication(name: str) -> dict[str, Any]:
    from harness.replication import control

    st = control.status(name)
    return {
        "replicator": st.replicator,
        "disks": [
            {
                "disk": f"{d.host}/{d.disk}",
                "state": d.state,
                "rpo_s": d.rpo_s,
                "rpo_alert": d.rpo_alert,
            }
            for d in st.disks
        ],
    }


def _faults(name: str) -> list[dict[str, Any]]:
    from harness import faults

    return [r.public() for r in faults.active(name)]


def _failover(name: str) -> dict[str, Any]:
    from harness import failover

    return failover.read_state(name)


def _scenario(name: str) -> dict[str, Any] | None:
    from harness import scenario

    if scenario.read_record(name) is None:
        return None
    return scenario.status(name)


def collect(name: str) -> dict[str, Any]:
    """Everything the page shows, each part on its own (see the module docstring)."""
    return {
        "lab": name,
        "at": time.time(),
        "status": _part(lambda: _lab(name)),
        "tunnel": _part(lambda: _tunnel(name)),
        "dns": _part(lambda: _dns(name)),
        "replication": _part(lambda: _replication(name)),
        "faults": _part(lambda: _faults(name)),
        "failover": _part(lambda: _failover(name)),
        "scenario": _part(lambda: _scenario(name)),
    }


PAGE_FILE = Path(__file__).with_name("dashboard.html")


def page(name: str) -> bytes:
    """The dashboard page of one lab."""
    return PAGE_FILE.read_text(encoding="utf-8").replace("__LAB__", html.escape(name)).encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "drill-dashboard"
    lab_name = "default"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, "text/html; charset=utf-8", page(self.lab_name))
        elif path == "/api/status":
            body = json.dumps(collect(self.lab_name), default=str).encode()
            self._send(200, "application/json", body)
        else:
            self._send(404, "text/plain", b"not found\n")

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one request a second per viewer: not worth a log line each


def make_server(name: str, port: int = 0, host: str = LOCALHOST) -> ThreadingHTTPServer:
    """A dashboard server for lab ``name`` on 127.0.0.1:``port`` (0: a free one), not started."""
    from harness import lab

    if host != LOCALHOST:
        raise UsageError(f"the dashboard listens on {LOCALHOST} only, not {host!r}")
    if not 0 <= port <= 65535:
        raise UsageError(f"invalid port {port}")
    lab.open_lab(name)  # refuse a lab that is not up before binding anything
    handler = type("Handler", (_Handler,), {"lab_name": name})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    server.daemon_threads = True
    return server


def serve(
    name: str, port: int = 0, host: str = LOCALHOST, ready: Callable[[str], None] | None = None
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C stops it cleanly); ``ready`` gets the URL."""
    server = make_server(name, port, host)
    url = f"http://{host}:{server.server_address[1]}/"
    if ready is not None:
        ready(url)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def start_background(name: str, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """A dashboard served from a thread (for tests and the API); ``server.shutdown()`` stops it."""
    server = make_server(name, port)
    threading.Thread(target=server.serve_forever, name="dashboard", daemon=True).start()
    return server, f"http://{LOCALHOST}:{server.server_address[1]}/"
