"""A real registry for tests and benchmarks: Debian's ``docker-registry`` (distribution 2.8) on
127.0.0.1 with a random port, a config written here and storage in a temporary directory;
images pushed with ``skopeo copy``. And ``Proxy``, a small HTTP server in front of it (also on
127.0.0.1) that can demand a bearer token (with its own token endpoint, which also takes
OAuth2 refresh tokens by POST), cut a blob
mid-transfer, serve wrong bytes, answer 429 first, redirect blobs to another host name, play
dead, and logs every request. Only loopback addresses; every wait is bounded.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def have_registry() -> bool:
    return bool(shutil.which("docker-registry") and shutil.which("skopeo"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """``docker-registry serve`` on 127.0.0.1:<random port>; ``htpasswd``: (user, password)
    turns on basic auth (bcrypt line made by ``htpasswd -B``)."""

    def __init__(self, workdir: Path, htpasswd: tuple[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.creds = htpasswd
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        auth = ""
        if htpasswd:
            line = subprocess.run(["htpasswd", "-Bbn", *htpasswd], check=True, capture_output=True,
                                  text=True).stdout.strip()
            (self.workdir / "htpasswd").write_text(line + "\n")
            auth = (f"auth:\n  htpasswd:\n    realm: test\n"
                    f"    path: {self.workdir / 'htpasswd'}\n")
        (self.workdir / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.workdir / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n" + auth)
        self.log = open(self.workdir / "registry.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.workdir / "config.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("docker-registry did not start: " +
                                       (self.workdir / "registry.log").read_text()[-2000:]) from None
                time.sleep(0.05)

    def push(self, src: str, dest: str, *flags: str) -> None:
        """``skopeo copy SRC docker://HOST/DEST`` (plain HTTP)."""
        cmd = ["skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false", *flags]
        if self.creds:
            cmd += ["--dest-creds", ":".join(self.creds)]
        env = {**os.environ, "TMPDIR": str(self.workdir)}
        out = subprocess.run([*cmd, src, f"docker://{self.host}/{dest}"], capture_output=True,
                             env=env)
        if out.returncode:
            raise RuntimeError(f"skopeo copy {src} {dest}: {out.stderr.decode()[-2000:]}")

    def pull(self, src: str, dest: str, *flags: str) -> None:
        """``skopeo copy docker://HOST/SRC DEST`` (plain HTTP)."""
        cmd = ["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false", *flags]
        if self.creds:
            cmd += ["--src-creds", ":".join(self.creds)]
        env = {**os.environ, "TMPDIR": str(self.workdir)}
        out = subprocess.run([*cmd, f"docker://{self.host}/{src}", dest], capture_output=True,
                             env=env)
        if out.returncode:
            raise RuntimeError(f"skopeo copy {src} {dest}: {out.stderr.decode()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@dataclass
class Faults:
    """What the proxy does wrong. Counters count down; ``None`` means off."""

    bearer: bool = False  # demand a bearer token from our /token endpoint
    token_users: dict[str, str] | None = None  # basic creds the token endpoint wants (None: anyone)
    refresh_tokens: set[str] = field(default_factory=set)  # accepted by POST /token (OAuth2 form)
    cut_blobs: int = 0  # this many blob responses (of cut_min bytes or more) stop half-way
    cut_min: int = 4096
    corrupt_blobs: bool = False  # flip a byte in every blob response
    throttle: int = 0  # this many requests answered 429 (Retry-After: retry_after)
    retry_after: str = "1"
    redirect_blobs: bool = False  # blob GETs redirect to http://localhost:<port>/direct/...
    dead_after_blobs: int | None = None  # after this many blob GETs, drop every connection
    schema1: bool = False  # manifests by tag answer a schema 1 manifest


@dataclass
class Proxy:
    """An HTTP front for ``upstream`` (host:port) on 127.0.0.1:<random port>."""

    upstream: str
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str, int, dict[str, str]]] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    token_forms: list[dict[str, str]] = field(default_factory=list)  # every POST /token's form

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.blob_gets = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_HEAD(self) -> None:
                proxy._handle(self, "HEAD")

            def do_GET(self) -> None:
                proxy._handle(self, "GET")

            def do_POST(self) -> None:
                proxy._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, pred: Callable[[str, str], bool]) -> int:
        return sum(1 for m, p, _, _ in self.requests if pred(m, p))

    # request handling
    def _log(self, h: BaseHTTPRequestHandler, method: str, status: int) -> None:
        with self.lock:
            self.requests.append((method, h.path, status, {k.lower(): v for k, v in h.headers.items()}))

    def _reply(self, h: BaseHTTPRequestHandler, method: str, status: int, body: bytes = b"",
               headers: dict[str, str] | None = None) -> None:
        self._log(h, method, status)
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(body)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        f = self.faults
        path = h.path
        is_blob = "/blobs/sha256:" in path
        if f.dead_after_blobs is not None and self.blob_gets >= f.dead_after_blobs:
            self._log(h, method, 0)
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if path.startswith("/token"):
            return self._token(h, method)
        direct = path.startswith("/direct/")
        if direct:
            path = path[len("/direct"):]
        if f.throttle > 0:
            with self.lock:
                f.throttle -= 1
            return self._reply(h, method, 429, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}',
                               {"Retry-After": f.retry_after})
        if f.bearer and not direct:
            got = h.headers.get("Authorization", "")
            if not (got.startswith("Bearer ") and got[7:] in self.tokens):
                repo = path.split("/")[2] if path.count("/") > 3 else ""
                scope = f',scope="repository:{"/".join(path.split("/")[2:-2])}:pull"' if repo else ""
                return self._reply(h, method, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
                    "WWW-Authenticate": f'Bearer realm="http://{self.host}/token",service="test"{scope}',
                    "Docker-Distribution-API-Version": "registry/2.0"})
        if is_blob and f.redirect_blobs and not direct:
            return self._reply(h, method, 307, b"",
                               {"Location": f"http://localhost:{self.port}/direct{path}"})
        if f.schema1 and "/manifests/" in path and "sha256:" not in path:
            body = json.dumps({"schemaVersion": 1, "name": "x", "tag": "v1", "fsLayers": []}).encode()
            return self._reply(h, method, 200, body, {
                "Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"})
        if is_blob and method == "GET":
            with self.lock:
                self.blob_gets += 1
        self._forward(h, method, path, is_blob)

    def _token(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if method == "POST":  # OAuth2: a refresh token traded for an access token
            n = int(h.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(h.rfile.read(min(n, 1 << 16)).decode()))
            with self.lock:
                self.token_forms.append(form)
            if (form.get("grant_type") != "refresh_token"
                    or form.get("refresh_token") not in self.faults.refresh_tokens):
                return self._reply(h, method, 401, b'{"details":"bad refresh token"}')
            token = f"tok-{len(self.tokens)}-{time.monotonic_ns()}"
            self.tokens.add(token)
            return self._reply(h, method, 200, json.dumps(
                {"access_token": token, "expires_in": 300}).encode(), {"Content-Type": "application/json"})
        users = self.faults.token_users
        if users is not None:
            got = h.headers.get("Authorization", "")
            try:
                user, _, pw = base64.b64decode(got[6:]).decode().partition(":")
            except ValueError:
                user, pw = "", ""
            if not got.startswith("Basic ") or users.get(user) != pw:
                return self._reply(h, method, 401, b'{"details":"bad credentials"}')
        token = f"tok-{len(self.tokens)}-{time.monotonic_ns()}"
        self.tokens.add(token)
        self._reply(h, method, 200, json.dumps({"token": token, "expires_in": 300}).encode(),
                    {"Content-Type": "application/json"})

    def _forward(self, h: BaseHTTPRequestHandler, method: str, path: str, is_blob: bool) -> None:
        f = self.faults
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() in ("accept", "range") or (k.lower() == "authorization" and not f.bearer)}
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        if resp.status in (301, 302, 307) and is_blob:  # storage redirects: follow for the client
            conn.close()
            return self._reply(h, method, 502, b"unexpected redirect upstream")
        body_len = int(resp.getheader("Content-Length") or 0)
        self._log(h, method, resp.status)
        h.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "date", "server"):
                h.send_header(k, v)
        h.end_headers()
        if method == "HEAD":
            conn.close()
            return
        cut = None
        if is_blob and resp.status in (200, 206) and f.cut_blobs > 0 and body_len >= f.cut_min:
            with self.lock:
                f.cut_blobs -= 1
            cut = body_len // 2
        sent = 0
        flipped = False
        try:
            while True:
                chunk = resp.read(64 << 10)
                if not chunk:
                    break
                if is_blob and f.corrupt_blobs and not flipped and resp.status in (200, 206):
                    mid = len(chunk) // 2
                    chunk = chunk[:mid] + bytes([chunk[mid] ^ 0xFF]) + chunk[mid + 1:]
                    flipped = True
                if cut is not None and sent + len(chunk) >= cut:
                    h.wfile.write(chunk[: cut - sent])
                    h.wfile.flush()
                    h.close_connection = True
                    h.connection.shutdown(socket.SHUT_RDWR)
                    return
                h.wfile.write(chunk)
                sent += len(chunk)
        finally:
            conn.close()


def wait_http(url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
