#!/usr/bin/python3
"""drill's app role: a tiny stand-in for SharePoint (documents) or a CRM (records).

Python 3 standard library only. One process serves HTTP on port 80 (``APP_PORT``)::

    GET  /health          200 {"status":"ok","host","site","kind","data_dir","items","seq"}
                          when DATA_DIR is writable, else 503 with "status":"unavailable"
    POST /<kind>          store the request body (JSON or any bytes) as one item:
                          201 {"id","seq","sha256","stored_at"}
    GET  /<kind>          200 {"kind","count","items":[{"id","seq","sha256","size","stored_at"}]}
    GET  /<kind>/<id>     200 the item's bytes with the Content-Type it was stored with
                          (headers X-Item-Seq, X-Item-Sha256), or 404
    POST /admin/flush     fsync every item, the sequence file and the directories: 200
                          (a quiesce point for app-consistent recovery points)

``<kind>`` is ``APP_KIND``: ``documents`` (SharePoint stand-in, the default) or ``records``
(CRM stand-in). ``DRILL_HOST`` and ``DRILL_SITE`` name this host and its site.

Logins, only when ``LDAP_URL`` is set (``ldap://host:389`` of the site's own directory, with
``LDAP_BASE``, ``LDAP_READ_GROUPS`` and ``LDAP_WRITE_GROUPS``, comma lists): every request but
``/health`` and ``/admin/flush`` (the replicator's quiesce hook) needs HTTP Basic auth, checked by
an LDAP bind as ``uid=<user>,ou=people,<LDAP_BASE>``; groups are the posixGroups under
``ou=groups`` whose memberUid is the user. GET and HEAD need a read or write group, POST a write
group. Wrong password or unknown user: 401; member of ``disabled`` or not in a needed group: 403;
directory unreachable: 503. Passwords and Authorization headers are never logged.

Layout of ``DATA_DIR`` (default /data); every file is written to a temporary file, fsynced,
renamed into place, and its directory fsynced, so a crash leaves whole items only::

    seq                           the last sequence number handed out (decimal)
    <kind>/<seq:010d>-<id>.item   one item: a JSON header line, then the body bytes
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import threading
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

KINDS = ("documents", "records")
MAX_BODY = 256 * 1024 * 1024
ID_RE = re.compile(r"^[0-9a-f]{32}$")
ITEM_RE = re.compile(r"^(\d{10})-([0-9a-f]{32})\.item$")
USER_RE = re.compile(r"^[a-z][a-z0-9._-]{0,31}$")
"""User names the directory holds; anything else cannot log in (and never reaches a filter)."""
LDAP_TIMEOUT_S = 5  # whole seconds: ldap3 packs it into SO_RCVTIMEO
DISABLED_GROUP = "disabled"


_LIBC = ctypes.CDLL(None, use_errno=True)


def syncfs(path: Path) -> None:
    """Flush the one filesystem holding ``path``.

    Not sync(2): that waits for every filesystem on the machine (other labs' disks under
    load, or one left frozen), and a flush holds every write of the store meanwhile.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: temp file, fsync, rename, fsync the directory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


class Store:
    """The items of one kind in DATA_DIR. Writes are serialised by one lock."""

    def __init__(self, data_dir: Path, kind: str, host: str, site: str) -> None:
        self.data_dir = data_dir
        self.kind = kind
        self.host = host
        self.site = site
        self.items_dir = data_dir / kind
        self.seq_file = data_dir / "seq"
        self.lock = threading.Lock()

    def writable(self) -> str | None:
        """None if DATA_DIR can be written (probed with a real file), else the reason."""
        try:
            self.items_dir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.data_dir, prefix=".probe-")
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as e:
            return f"{type(e).__name__}: {e}"
        return None

    def _names(self) -> list[str]:
        """Item file names, in sequence order."""
        try:
            return sorted(n for n in os.listdir(self.items_dir) if ITEM_RE.match(n))
        except FileNotFoundError:
            return []

    def count(self) -> int:
        """How many items are stored."""
        return len(self._names())

    def last_seq(self) -> int:
        """The last sequence number handed out: the seq file or the newest item, if larger."""
        seq = 0
        with contextlib.suppress(FileNotFoundError, ValueError):
            seq = int(self.seq_file.read_text().strip() or 0)
        names = self._names()
        if names:
            seq = max(seq, int(names[-1][:10]))
        return seq

    def put(self, body: bytes, content_type: str) -> dict[str, Any]:
        """Store one item durably and return its id, seq, sha256 and stored_at."""
        with self.lock:
            self.items_dir.mkdir(parents=True, exist_ok=True)
            seq = self.last_seq() + 1
            # The counter is durable before the item: a crash leaves a gap, never a reused seq.
            write_atomic(self.seq_file, f"{seq}\n".encode())
            meta: dict[str, Any] = {
                "id": uuid.uuid4().hex,
                "seq": seq,
                "sha256": hashlib.sha256(body).hexdigest(),
                "size": len(body),
                "stored_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "content_type": content_type,
                "kind": self.kind,
                "host": self.host,
                "site": self.site,
            }
            header = json.dumps(meta, separators=(",", ":")).encode() + b"\n"
            write_atomic(self.items_dir / f"{seq:010d}-{meta['id']}.item", header + body)
        return {k: meta[k] for k in ("id", "seq", "sha256", "stored_at")}

    def _read(self, name: str, with_body: bool) -> tuple[dict[str, Any], bytes]:
        with open(self.items_dir / name, "rb") as f:
            meta: dict[str, Any] = json.loads(f.readline())
            return meta, (f.read() if with_body else b"")

    def list(self) -> list[dict[str, Any]]:
        """Summaries of every item, in sequence order."""
        out = []
        for name in self._names():
            with contextlib.suppress(FileNotFoundError):
                meta, _ = self._read(name, with_body=False)
                out.append({k: meta[k] for k in ("id", "seq", "sha256", "size", "stored_at")})
        return out

    def get(self, item_id: str) -> tuple[dict[str, Any], bytes] | None:
        """One item's header and body, or None."""
        if not ID_RE.match(item_id):
            return None
        for name in self._names():
            if name.endswith(f"-{item_id}.item"):
                return self._read(name, with_body=True)
        return None

    def flush(self) -> dict[str, Any]:
        """fsync every file and directory of the store (while no write is in flight)."""
        with self.lock:
            names = self._names()
            paths = [self.items_dir / n for n in names]
            if self.seq_file.exists():
                paths.append(self.seq_file)
            for path in paths:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for d in (self.items_dir, self.data_dir):
                if d.is_dir():
                    fsync_dir(d)
            if self.data_dir.is_dir():
                syncfs(self.data_dir)
            return {"status": "ok", "items": len(names), "seq": self.last_seq()}


class Denied(Exception):
    """A request refused by the login check: HTTP status and a message without secrets."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` header, or None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Auth:
    """Logins checked by an LDAP bind against the site's directory; groups decide the rest."""

    def __init__(self, url: str, base: str, read_groups: str, write_groups: str) -> None:
        import ldap3  # only apps with a directory need it

        self.ldap3 = ldap3
        self.url = url
        self.base = base
        self.write = {g for g in write_groups.split(",") if g}
        self.read = {g for g in read_groups.split(",") if g} | self.write

    def check(self, header: str | None, write: bool) -> str:
        """The user allowed to do a read (or ``write``); Denied(401|403|503) otherwise."""
        creds = basic_credentials(header)
        if creds is None:
            raise Denied(HTTPStatus.UNAUTHORIZED, "login required")
        user, password = creds
        # An empty password would be an anonymous bind, which succeeds: never a login.
        if not USER_RE.match(user) or not password:
            raise Denied(HTTPStatus.UNAUTHORIZED, "wrong user name or password")
        groups = self._groups(user, password)
        if DISABLED_GROUP in groups:
            raise Denied(HTTPStatus.FORBIDDEN, f"user {user} is disabled")
        needed = self.write if write else self.read
        if not groups & needed:
            what = "write" if write else "read"
            raise Denied(HTTPStatus.FORBIDDEN, f"user {user} may not {what} here")
        return user

    def _groups(self, user: str, password: str) -> set[str]:
        ldap3 = self.ldap3
        # get_info=NONE: no schema read after each bind (it costs more than the bind).
        server = ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=LDAP_TIMEOUT_S)
        conn = ldap3.Connection(
            server,
            user=f"uid={user},ou=people,{self.base}",
            password=password,
            receive_timeout=LDAP_TIMEOUT_S,
        )
        try:
            if not conn.bind():
                if conn.result.get("result") == 49:  # invalidCredentials: bad password or user
                    raise Denied(HTTPStatus.UNAUTHORIZED, "wrong user name or password")
                raise Denied(HTTPStatus.SERVICE_UNAVAILABLE, "directory refused the bind")
            conn.search(
                f"ou=groups,{self.base}",
                f"(&(objectClass=posixGroup)(memberUid={user}))",
                attributes=["cn"],
            )
            groups: set[str] = set()
            for entry in conn.response or []:
                cn = (entry.get("attributes") or {}).get("cn") or []
                groups.update([cn] if isinstance(cn, str) else cn)
            return groups
        except Denied:
            raise
        except Exception as e:  # any client failure is "directory unavailable", never a crash
            # Only the exception's type is reported: no message can carry the password.
            raise Denied(HTTPStatus.SERVICE_UNAVAILABLE, f"directory: {type(e).__name__}") from e
        finally:
            with contextlib.suppress(Exception):
                conn.unbind()


class Handler(BaseHTTPRequestHandler):
    """HTTP front of one Store."""

    protocol_version = "HTTP/1.1"
    server_version = "drill-app/1"
    store: Store  # set on the subclass made by serve()
    auth: Auth | None = None  # set when LDAP_URL is
    user: str | None = None

    def _send(
        self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        self._send(status, json.dumps(doc).encode() + b"\n", "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"status": "error", "error": message})

    def _parts(self) -> list[str]:
        return [p for p in self.path.split("?", 1)[0].split("/") if p]

    def _allowed(self, write: bool) -> bool:
        """True if no login is needed or the login passes; else the refusal has been sent."""
        self.user = None
        if self.auth is None:
            return True
        try:
            self.user = self.auth.check(self.headers.get("Authorization"), write)
            return True
        except Denied as d:
            # The request body (if any) is left unread: close the connection after answering.
            self.close_connection = True
            headers = {"Connection": "close"}
            if d.status == HTTPStatus.UNAUTHORIZED:
                headers["WWW-Authenticate"] = 'Basic realm="drill", charset="UTF-8"'
            body = json.dumps({"status": "error", "error": str(d)}).encode() + b"\n"
            self._send(d.status, body, "application/json", headers)
            return False

    def do_GET(self) -> None:
        """GET /health, /<kind>, /<kind>/<id>."""
        self.user = None
        s = self.store
        parts = self._parts()
        if parts == ["health"]:
            problem = s.writable()
            doc: dict[str, Any] = {
                "status": "ok" if problem is None else "unavailable",
                "host": s.host,
                "site": s.site,
                "kind": s.kind,
                "data_dir": str(s.data_dir),
                "items": s.count(),
                "seq": s.last_seq(),
            }
            if problem is not None:
                doc["error"] = problem
            self._json(HTTPStatus.OK if problem is None else HTTPStatus.SERVICE_UNAVAILABLE, doc)
        elif not self._allowed(write=False):
            return
        elif parts == [s.kind]:
            items = s.list()
            self._json(HTTPStatus.OK, {"kind": s.kind, "count": len(items), "items": items})
        elif len(parts) == 2 and parts[0] == s.kind:
            found = s.get(parts[1])
            if found is None:
                self._error(HTTPStatus.NOT_FOUND, f"no {s.kind} item {parts[1]}")
                return
            meta, body = found
            extra = {
                "X-Item-Id": meta["id"],
                "X-Item-Seq": str(meta["seq"]),
                "X-Item-Sha256": meta["sha256"],
            }
            self._send(HTTPStatus.OK, body, meta["content_type"], extra)
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no route GET {self.path}")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        """POST /<kind> (store an item), /admin/flush."""
        self.user = None
        s = self.store
        parts = self._parts()
        if parts != ["admin", "flush"] and not self._allowed(write=True):
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return
        if int(length) > MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
            return
        body = self.rfile.read(int(length))
        try:
            if parts == [s.kind]:
                ctype = self.headers.get("Content-Type") or "application/octet-stream"
                self._json(HTTPStatus.CREATED, s.put(body, ctype))
            elif parts == ["admin", "flush"]:
                self._json(HTTPStatus.OK, s.flush())
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route POST {self.path}")
        except OSError as e:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"{type(e).__name__}: {e}")

    def log_message(self, format: str, *args: Any) -> None:
        """Access log to stderr, one line per request: never headers, so never a password."""
        who = f" user={self.user}" if self.user else ""
        sys.stderr.write(f"{self.address_string()}{who} {format % args}\n")


def serve() -> None:
    """Read the environment and serve until killed."""
    kind = os.environ.get("APP_KIND", "documents")
    if kind not in KINDS:
        sys.exit(f"APP_KIND must be one of {', '.join(KINDS)}, not {kind!r}")
    store = Store(
        data_dir=Path(os.environ.get("DATA_DIR", "/data")),
        kind=kind,
        host=os.environ.get("DRILL_HOST") or socket.gethostname(),
        site=os.environ.get("DRILL_SITE", ""),
    )
    problem = store.writable()
    if problem is not None:
        print(f"warning: {store.data_dir} is not writable: {problem}", file=sys.stderr)
    auth = None
    if os.environ.get("LDAP_URL"):
        auth = Auth(
            os.environ["LDAP_URL"],
            os.environ.get("LDAP_BASE", ""),
            os.environ.get("LDAP_READ_GROUPS", "readers,editors"),
            os.environ.get("LDAP_WRITE_GROUPS", "editors"),
        )
        print(f"logins checked against {auth.url} ({auth.base})", file=sys.stderr)
    handler = type("StoreHandler", (Handler,), {"store": store, "auth": auth})
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("APP_PORT", "80"))), handler)
    server.daemon_threads = True
    print(f"drill app ({kind}) serving {store.data_dir} on :{server.server_port}", file=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    serve()
