"""Images straight from a registry: the OCI distribution API, standard library only.

``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` (skopeo's syntax). The main process fetches the
small JSON documents (manifest or index by tag, platform manifests and configs by digest,
each verified against its digest) and yields ``Image`` values whose layers carry a
``RegistryBlob``: a picklable description of one blob (endpoint, repository, digest, size,
auth material, TLS and retry settings) that a worker process opens as an HTTP stream itself.
Layer bytes are never fetched here; ingest reads only layers the cache does not hold.

Protocol (distribution spec): ``GET /v2/`` tells the auth scheme; ``GET
/v2/<name>/manifests/<ref>`` with every manifest type in ``Accept`` (schema 1 refused);
``GET /v2/<name>/blobs/<digest>`` may redirect to storage (``Authorization`` is dropped on
another host); ``/v2/<name>/tags/list`` and ``/v2/_catalog`` paginate with ``Link``. Bearer
tokens come from the ``WWW-Authenticate`` realm (anonymous, with the credentials as basic
auth, or for an identity token by the OAuth2 ``refresh_token`` POST); basic auth is sent when
the registry asks for it. Credentials: ``credentials()`` (``--creds``, auth files, and the
docker credential helpers they name, run by ``credhelpers``). Connection errors, 5xx and 429 are
retried with exponential backoff (``Retry-After`` honoured); a blob cut mid-transfer resumes
with ``Range``. Every request loop is bounded.

Why no HTTP library: ``http.client`` streams, keeps connections alive, and does TLS; the
features a library would add (redirect and retry policies) need registry-specific rules
(drop Authorization across hosts, resume by ``Range``, verify digests) anyway.
"""
from __future__ import annotations

import base64
import email.utils
import http.client
import io
import json
import os
import platform as _platform
import re
import socket
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..digest import Digest
from ..errors import (
    BlobNotFound,
    DigestMismatch,
    LayerdbError,
    RegistryError,
    SourceError,
    UnsupportedMediaType,
)
from ..model import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    LayerRef,
    Platform,
)
from . import SourceOptions
from ._images import Descriptor, check_layer_type, layer_where, parse_json
from ._oci import Walker
from .credhelpers import TOKEN_USERNAME, check_name, server_url

ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
           "application/vnd.docker.distribution.manifest.v1+prettyjws")
#: Manifests, indexes and configs larger than this are refused (the distribution spec lets
#: registries refuse manifests over 4 MiB), in bytes.
MAX_DOCUMENT = 4 << 20
MAX_REDIRECTS = 5
MAX_PAGES = 10_000
MAX_ERROR_BODY = 8 << 10
#: ``Retry-After`` longer than this many seconds is not waited for: the request fails.
MAX_RETRY_AFTER = 120.0
_RETRYABLE = frozenset({429, 500, 502, 503, 504})
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)  # socket errors, timeouts, TLS, cut-offs

_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


# References -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """A parsed ``docker://`` reference. ``host``: as the user wrote it (``host[:port]``),
    ``repo``: the repository path ("" for a whole registry), ``tag`` and ``digest`` (either,
    both, or neither)."""

    host: str
    repo: str = ""
    tag: str = ""
    digest: Digest | None = None

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repo}" if self.repo else self.host

    @property
    def netloc(self) -> str:
        """The host to connect to (Docker Hub's API lives on another name)."""
        return "registry-1.docker.io" if self.host == "docker.io" else self.host

    def __str__(self) -> str:
        s = "docker://" + self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + str(self.digest)
        return s


def parse_reference(text: str) -> Reference:
    """``docker://HOST[:PORT][/REPO[:TAG][@DIGEST]]`` -> ``Reference``. A first component
    without a dot or port (and not ``localhost``) means Docker Hub, as docker reads it.
    Raises ``SourceError`` naming ``text`` when malformed."""
    rest = text[len("docker://"):] if text.startswith("docker://") else text
    bad = SourceError(f"{text}: not a registry reference (docker://HOST[:PORT]/REPO[:TAG|@DIGEST])")
    if not rest or any(c.isspace() or ord(c) < 32 for c in rest):
        raise bad
    first, _, path = rest.partition("/")
    if not ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        first, path = "docker.io", rest
    if not _HOST.match(first):
        raise bad
    digest = None
    if "@" in path:
        path, _, d = path.partition("@")
        try:
            digest = Digest.parse(d)
        except SourceError as e:
            raise SourceError(f"{text}: {e}") from None
    tag = ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not _TAG.match(tag):
            raise SourceError(f"{text}: invalid tag {tag!r}")
    if first == "docker.io" and path and "/" not in path:
        path = "library/" + path
    if path and not _REPO.match(path):
        raise SourceError(f"{text}: invalid repository name {path!r}")
    return Reference(first, path, tag, digest)


# Settings that cross to worker processes --------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """Where a registry answers: ``scheme`` https or http, ``netloc`` host[:port]."""

    scheme: str
    netloc: str
    tls_verify: bool = True

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.netloc}"


@dataclass(frozen=True)
class Auth:
    """Credentials and the bearer token the main process got (a worker asks for a new one
    when it has expired). ``identity_token``: an OAuth2 refresh token (a credential helper's
    ``<token>`` answer) traded for bearer tokens at the realm, in place of username and
    password. Every field is left out of ``repr``: nothing prints a secret."""

    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    @property
    def given(self) -> bool:
        """Any credentials at all (else anonymous)."""
        return bool(self.username or self.identity_token)


@dataclass(frozen=True)
class Retry:
    """``attempts`` per request (and per blob for resumes), ``backoff`` seconds doubling up to
    ``cap``, ``timeout`` seconds per socket operation."""

    attempts: int = 5
    backoff: float = 0.5
    cap: float = 30.0
    timeout: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        base = min(self.cap, self.backoff * (2 ** attempt))
        return max(base, retry_after) if retry_after is not None else base


@dataclass(frozen=True)
class RegistryBlob:
    """A blob in a registry: a ``Blob`` (see ``layerdb.model``) read as an HTTP stream.

    ``open()`` connects (in the calling process), authenticates as needed, follows redirects
    and returns a stream of exactly ``length`` bytes, resuming with ``Range`` when the
    connection drops (at most ``retry.attempts`` times). It does not verify the digest:
    the reader hashes what it reads, as for every blob."""

    endpoint: Endpoint
    repo: str
    digest: Digest
    length: int
    auth: Auth = field(default_factory=Auth)
    retry: Retry = field(default_factory=Retry)

    def open(self) -> io.BufferedReader:
        return io.BufferedReader(_BlobStream(self), 1 << 20)

    def size(self) -> int:
        return self.length

    @property
    def where(self) -> str:
        return f"{self.endpoint.netloc}/{self.repo}@{self.digest}"


# HTTP -------------------------------------------------------------------------------------------

def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in re.finditer(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))', rest):
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return scheme.lower(), params


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Client:
    """One process's connection to one registry: keeps connections alive, holds bearer
    tokens per scope, retries and authenticates. ``requests`` counts HTTP requests sent."""

    def __init__(self, endpoint: Endpoint, auth: Auth, retry: Retry, what: str) -> None:
        self.endpoint = endpoint
        self.auth = auth
        self.retry = retry
        self.what = what  # first in every error message
        self.requests = 0
        self._tokens: dict[str, str] = {}
        self._basic = False  # the registry asked for basic auth
        self._seed_token = auth.token
        self._conns: dict[tuple[str, str], http.client.HTTPConnection] = {}

    # connections
    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https":
            ctx = ssl.create_default_context()
            if not self.endpoint.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(netloc, timeout=self.retry.timeout, context=ctx)
        return http.client.HTTPConnection(netloc, timeout=self.retry.timeout)

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()

    def _send(self, method: str, url: str, headers: dict[str, str], pooled: bool,
              body: bytes | None = None
              ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise RegistryError(f"{self.what}: refusing to follow {url!r}")
        key = (u.scheme, u.netloc)
        path = u.path + ("?" + u.query if u.query else "")
        for fresh in (False, True):
            conn = self._conns.pop(key, None) if pooled and not fresh else None
            reused = conn is not None
            conn = conn or self._connect(u.scheme, u.netloc)
            self.requests += 1
            try:
                conn.request(method, path or "/", body=body,
                             headers={"User-Agent": "layerdb", **headers})
                resp = conn.getresponse()
            except _TRANSPORT_ERRORS:
                conn.close()
                if reused:  # a kept-alive connection the server closed: try a new one at once
                    continue
                raise
            return resp, conn
        raise AssertionError("unreachable")  # pragma: no cover

    def _release(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection,
                 url: str) -> None:
        """Keep ``conn`` for the next request once ``resp`` is fully read."""
        u = urllib.parse.urlsplit(url)
        if resp.isclosed() and not resp.will_close:
            old = self._conns.pop((u.scheme, u.netloc), None)
            if old is not None and old is not conn:
                old.close()
            self._conns[(u.scheme, u.netloc)] = conn
        else:
            conn.close()

    # auth
    def _auth_header(self, scope: str) -> dict[str, str]:
        token = self._tokens.get(scope) or self._seed_token
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.auth.username:
            return {"Authorization": "Basic " + _b64(f"{self.auth.username}:{self.auth.password}")}
        return {}

    def _answer_challenge(self, header: str | None, scope: str) -> None:
        scheme, params = _parse_challenge(header or "")
        self._seed_token = ""
        if scheme == "basic":
            if self.auth.identity_token:
                raise RegistryError(f"{self.what}: the registry asks for basic auth, which an "
                                    "identity token (a credential helper's <token>) cannot answer")
            if not self.auth.username:
                raise RegistryError(f"{self.what}: authentication required "
                                    "(give --creds USER:PASS or log in: auth.json)")
            self._basic = True
            return
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryError(f"{self.what}: unsupported authentication challenge "
                                f"{(header or '').split(' ')[0]!r}")
        query = {"service": params.get("service", "")}
        query["scope"] = params.get("scope") or scope
        query = {k: v for k, v in query.items() if v}
        realm = params["realm"]
        if (self.auth.given and self.endpoint.scheme == "https"
                and urllib.parse.urlsplit(realm).scheme != "https"):
            raise RegistryError(f"{self.what}: refusing to send credentials to a token service "
                                f"over plain HTTP ({_printable(realm)[:100]})")
        if self.auth.identity_token:  # OAuth2: the refresh token POSTed as a form (docker's way)
            form = {**query, "client_id": "layerdb", "grant_type": "refresh_token",
                    "refresh_token": self.auth.identity_token}
            status, body, _ = self._simple(
                "POST", realm, {"Content-Type": "application/x-www-form-urlencoded"}, what="token",
                send=urllib.parse.urlencode(form).encode())
        else:
            url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
            headers = {}
            if self.auth.username:
                headers["Authorization"] = "Basic " + _b64(f"{self.auth.username}:{self.auth.password}")
            status, body, _ = self._simple("GET", url, headers, what="token")
        if status in (401, 403):
            raise RegistryError(f"{self.what}: authentication failed: the token service "
                                f"answered {status}" + ("" if self.auth.given else
                                                        " (give --creds USER:PASS)"))
        if status != 200:
            raise RegistryError(f"{self.what}: the token service answered {status}")
        doc = parse_json(body, f"{self.what}: token response")
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.what}: the token service sent no token")
        self._tokens[scope] = token

    def _simple(self, method: str, url: str, headers: dict[str, str], what: str,
                send: bytes | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
        """One request (with ``send`` as its body) with retries but no auth handling; the
        answer's body read whole (bounded)."""
        for attempt in range(self.retry.attempts):
            try:
                resp, conn = self._send(method, url, headers, pooled=True, body=send)
                body = _read_bounded(resp, MAX_DOCUMENT, f"{self.what}: {what}")
            except _TRANSPORT_ERRORS as e:
                if attempt + 1 >= self.retry.attempts or _fatal(e):
                    raise RegistryError(f"{self.what}: {what}: {_reason(e)}") from e
                time.sleep(self.retry.delay(attempt))
                continue
            self._release(resp, conn, url)
            if resp.status in _RETRYABLE and attempt + 1 < self.retry.attempts:
                self._wait(attempt, resp)
                continue
            return resp.status, body, resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, attempt: int, resp: http.client.HTTPResponse) -> None:
        after = _retry_after(resp.getheader("Retry-After"))
        if after is not None and after > MAX_RETRY_AFTER:
            raise RegistryError(f"{self.what}: the registry asks to retry after {after:.0f} s")
        time.sleep(self.retry.delay(attempt, after))

    # requests
    def request(self, path_or_url: str, scope: str, what: str, headers: dict[str, str] | None = None,
                method: str = "GET", stream: bool = False
                ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection | None, str]:
        """Send a request, authenticating, following redirects (``Authorization`` only to the
        registry's own host) and retrying connection errors, 5xx and 429. Returns (response,
        its connection, the final URL). A non-streamed response is read whole (its body then
        is ``resp.body``); a 4xx/5xx that is final raises ``RegistryError``/``BlobNotFound``."""
        url0 = path_or_url if "://" in path_or_url else self.endpoint.base + path_or_url
        extra = dict(headers or {})
        challenged = 0
        attempt = 0
        while True:
            url = url0
            resp: http.client.HTTPResponse | None = None
            err: BaseException | None = None
            for _hop in range(MAX_REDIRECTS + 1):
                same = urllib.parse.urlsplit(url).netloc == self.endpoint.netloc
                hdrs = {**extra, **(self._auth_header(scope) if same else {})}
                try:
                    got, conn = self._send(method, url, hdrs, pooled=not stream)
                except _TRANSPORT_ERRORS as e:
                    err = e
                    break
                resp = got
                if got.status in (301, 302, 303, 307, 308) and got.getheader("Location"):
                    _read_bounded(got, MAX_ERROR_BODY, "")
                    self._release(got, conn, url)
                    url = urllib.parse.urljoin(url, got.getheader("Location", ""))
                    resp = None
                    continue
                break
            else:
                raise RegistryError(f"{self.what}: {what}: more than {MAX_REDIRECTS} redirects")
            if resp is None:
                assert err is not None
                attempt += 1
                if attempt >= self.retry.attempts or _fatal(err):
                    raise RegistryError(f"{self.what}: {what}: {_reason(err)}") from err
                time.sleep(self.retry.delay(attempt - 1))
                continue
            if resp.status == 401 and same and challenged < 2:
                challenged += 1
                header = resp.getheader("WWW-Authenticate")
                _read_bounded(resp, MAX_ERROR_BODY, "")
                self._release(resp, conn, url)
                self._answer_challenge(header, scope)
                continue
            if resp.status in _RETRYABLE:
                attempt += 1
                if attempt < self.retry.attempts:
                    _read_bounded(resp, MAX_ERROR_BODY, "")
                    self._release(resp, conn, url)
                    self._wait(attempt - 1, resp)
                    continue
            if resp.status >= 300:
                body = _read_bounded(resp, MAX_ERROR_BODY, "", strict=False)
                self._release(resp, conn, url)
                raise self._status_error(resp.status, body, what)
            if not stream:
                try:
                    resp.body = _read_bounded(resp, MAX_DOCUMENT,  # type: ignore[attr-defined]
                                              f"{self.what}: {what}")
                except _TRANSPORT_ERRORS as e:  # cut mid-body: ask again
                    conn.close()
                    attempt += 1
                    if attempt >= self.retry.attempts:
                        raise RegistryError(f"{self.what}: {what}: {_reason(e)}") from e
                    time.sleep(self.retry.delay(attempt - 1))
                    continue
                self._release(resp, conn, url)
                return resp, None, url
            return resp, conn, url

    def _status_error(self, status: int, body: bytes, what: str) -> SourceError:
        detail = ""
        try:
            errs = json.loads(body).get("errors") or []
            detail = "; ".join(str(e.get("message") or e.get("code")) for e in errs[:3])
        except (ValueError, AttributeError, TypeError):
            pass
        detail = _printable(detail)[:200]
        msg = f"{self.what}: {what}: "
        if status == 401:
            return RegistryError(msg + "authentication failed" +
                                 ("" if self.auth.given else " (give --creds USER:PASS)"))
        if status == 403:
            return RegistryError(msg + "access denied" + (f" ({detail})" if detail else ""))
        if status == 404:
            return BlobNotFound(msg + "not found" + (f" ({detail})" if detail else ""))
        return RegistryError(msg + f"the registry answered {status}" +
                             (f" ({detail})" if detail else ""))

    def get_json(self, path: str, scope: str, what: str, accept: str = "application/json"
                 ) -> tuple[bytes, http.client.HTTPResponse]:
        resp, _, _ = self.request(path, scope, what, {"Accept": accept})
        return resp.body, resp  # type: ignore[attr-defined]


def _fatal(e: BaseException) -> bool:
    """A transport error that a retry cannot cure (TLS handshake or certificate problems)."""
    return isinstance(e, ssl.SSLError) and not isinstance(e, ssl.SSLEOFError | ssl.SSLZeroReturnError)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _printable(s: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in s)


def _reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):
        return f"TLS error: {e.reason or e} (for plain HTTP or a self-signed registry: --tls-verify=false)"
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, http.client.IncompleteRead):
        return "connection closed mid-transfer"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return _printable(str(e) or type(e).__name__).lower()


def _read_bounded(resp: http.client.HTTPResponse, limit: int, what: str, strict: bool = True) -> bytes:
    data = resp.read(limit + 1)
    declared = resp.getheader("Content-Length")
    if declared and declared.isdigit() and len(data) < int(declared) and len(data) <= limit:
        resp.will_close = True
        resp.close()
        raise http.client.IncompleteRead(data, int(declared) - len(data))
    if len(data) > limit:
        resp.will_close = True  # the rest is unread: the connection is not reused
        resp.close()
        if strict and what:
            raise SourceError(f"{what}: larger than {limit} bytes")
        return data[:limit]
    return data


# Blob streams ------------------------------------------------------------------------------------

class _BlobStream(io.RawIOBase):
    """The bytes of one ``RegistryBlob``, resumed with ``Range`` after a cut connection."""

    def __init__(self, blob: RegistryBlob) -> None:
        self._blob = blob
        self._client = Client(blob.endpoint, blob.auth, blob.retry, blob.where)
        self._scope = f"repository:{blob.repo}:pull"
        self._pos = 0
        self._failures = 0
        self._resp: http.client.HTTPResponse | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._start()

    def readable(self) -> bool:
        return True

    def _start(self) -> None:
        headers = {"Range": f"bytes={self._pos}-"} if self._pos else {}
        resp, conn, _ = self._client.request(f"/v2/{self._blob.repo}/blobs/{self._blob.digest}",
                                             self._scope, "blob", headers, stream=True)
        self._resp, self._conn = resp, conn
        if self._pos:
            if resp.status == 206:
                m = re.match(r"bytes (\d+)-", resp.getheader("Content-Range") or "")
                if not m or int(m.group(1)) != self._pos:
                    raise RegistryError(f"{self._blob.where}: the registry resumed at the wrong byte")
            else:  # the registry ignored Range: skip what was read already
                skip = self._pos
                while skip:
                    got = resp.read(min(skip, 1 << 20))
                    if not got:
                        raise RegistryError(f"{self._blob.where}: blob shorter on a retry")
                    skip -= len(got)

    def _resume(self, why: BaseException | str) -> None:
        self._drop()
        self._failures += 1
        if self._failures >= self._blob.retry.attempts:
            reason = why if isinstance(why, str) else _reason(why)
            raise RegistryError(f"{self._blob.where}: {reason} (after {self._failures} attempts, "
                                f"{self._pos} of {self._blob.length} bytes)")
        time.sleep(self._blob.retry.delay(self._failures - 1))
        self._start()

    def readinto(self, b: Any) -> int:
        want = len(b)
        if self._blob.length >= 0:
            want = min(want, self._blob.length - self._pos + 1)  # one more shows an overlong blob
        if want <= 0:
            return 0
        while True:
            if self._resp is None:
                self._resume("connection lost")
                continue
            try:
                n = self._resp.readinto(memoryview(b)[:want])
            except _TRANSPORT_ERRORS as e:
                self._resume(e)
                continue
            if n == 0 and 0 <= self._blob.length and self._pos < self._blob.length:
                self._resume("connection closed mid-transfer")
                continue
            self._pos += n
            if 0 <= self._blob.length < self._pos:
                raise DigestMismatch(f"{self._blob.where}: the registry sent more than the "
                                     f"{self._blob.length} bytes the manifest says")
            return n

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close()
        if self._conn is not None:
            self._conn.close()
        self._resp = self._conn = None

    def close(self) -> None:
        self._drop()
        self._client.close()
        super().close()


# Credentials ------------------------------------------------------------------------------------

def auth_files(options: SourceOptions) -> list[str]:
    """Where credentials are looked for, first hit wins: ``--authfile``,
    ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
    ``~/.config/containers/auth.json``, ``$DOCKER_CONFIG/config.json`` or
    ``~/.docker/config.json``."""
    if options.auth_file:
        return [options.auth_file]
    env = os.environ
    out = []
    if env.get("REGISTRY_AUTH_FILE"):
        out.append(env["REGISTRY_AUTH_FILE"])
    if env.get("XDG_RUNTIME_DIR"):
        out.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    home = os.path.expanduser("~")
    out.append(os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
                            "containers", "auth.json"))
    out.append(os.path.join(env.get("DOCKER_CONFIG") or os.path.join(home, ".docker"), "config.json"))
    return out


def credentials(ref: Reference, options: SourceOptions) -> Auth:
    """The credentials for ``ref``: ``--creds`` first (no helper runs), else the first auth
    file (in ``auth_files`` order) that gives some; else none (anonymous).

    Within one file, the first of these that applies decides, as docker's config file does
    (docker/cli ``getConfiguredCredentialStore`` and ``nativeStore.Get``):

    1. a ``credHelpers`` entry for ``ref``'s registry host (keys compared as ``auths`` keys
       are: scheme, trailing ``/``, ``/v1``/``/v2`` dropped, Docker Hub's names are
       ``docker.io``; the host only, a repository path never matches): the helper's answer.
       An entry naming no helper ("") means this file's ``auths``, as in docker.
    2. ``credsStore``: the store's answer, for any host.
    3. the most specific ``auths`` entry (``host/repo`` before ``host``).

    With a helper (1 or 2), the file's ``auths`` entry for the host is not read, even when
    the helper has nothing: docker CLI's native store overwrites the username and password it
    read from ``auths`` with the helper's answer, empty when the store holds nothing, so docker
    pulls anonymously there; an inline ``auth`` beside a ``credsStore`` is a leftover ``docker
    login`` no longer uses (it writes ``{}``), and layerdb logs in exactly where docker would.
    A helper that has nothing (``credentials not found``) makes its file give nothing and the
    walk goes on to the next file, as containers/image does for ``credHelpers``; docker reads
    one file, where that means anonymous, and so it does here once the files run out.

    A helper gets ``server_url(ref.host)`` on stdin (``host[:port]``; Docker Hub's
    ``https://index.docker.io/v1/``) and runs once per registry within ``options`` (an
    ingest; see ``credhelpers.HelperCache``), only when a reference to that registry is
    opened. Its ``<token>`` answer is an identity token (see ``Auth``). A missing, failing,
    slow or garbled helper raises ``RegistryError`` naming the helper, the host and the file
    (see ``layerdb.sources.credhelpers``); no error carries a secret."""
    if options.creds is not None:
        user, sep, password = options.creds.partition(":")
        if not sep or not user:
            raise RegistryError("--creds: expected USER:PASS")
        return Auth(user, password)
    for path in auth_files(options):
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_DOCUMENT + 1)
        except OSError:
            continue
        if len(raw) > MAX_DOCUMENT:
            raise RegistryError(f"{path}: too large for an auth file")
        doc = parse_json(raw, path)
        if not isinstance(doc, dict):
            continue
        helped, found = _from_helpers(doc, ref, path, options)
        if not helped:
            auths = doc.get("auths")
            found = _match_auth(auths, ref, path) if isinstance(auths, dict) else None
        if found is not None:
            return found
    return Auth()


def _from_helpers(doc: dict[str, Any], ref: Reference, path: str, options: SourceOptions
                  ) -> tuple[bool, Auth | None]:
    """(whether ``doc``, an auth file, names a helper for ``ref``'s host, what it answers:
    None when it has nothing)."""
    helpers = doc.get("credHelpers")
    entries = {_auth_key(k): v for k, v in helpers.items()} if isinstance(helpers, dict) else {}
    shown = _printable(ref.host)
    if ref.host in entries:
        where = f"credHelpers entry for {shown} in {path}"
        name = entries[ref.host]
        if name == "":
            return False, None
    else:
        name = doc.get("credsStore")
        if name is None or name == "":
            return False, None
        where = f"credsStore for {shown} in {path}"
    name = check_name(name, f"{path}: {where.partition(' in ')[0]}")
    got = options.helpers.get(name, server_url(ref.host), where)
    if got is None:
        return True, None
    user, secret = got
    return True, Auth(identity_token=secret) if user == TOKEN_USERNAME else Auth(user, secret)


def _auth_key(k: str) -> str:
    """An ``auths`` or ``credHelpers`` key as a registry host (``host/repo`` kept whole)."""
    k = re.sub(r"^https?://", "", k).rstrip("/")
    k = re.sub(r"/v[12]$", "", k)
    return "docker.io" if k in ("index.docker.io", "registry-1.docker.io") else k


def _match_auth(auths: dict[str, Any], ref: Reference, path: str) -> Auth | None:
    entries = {_auth_key(k): v for k, v in auths.items()}
    parts = ref.repo.split("/") if ref.repo else []
    for n in range(len(parts), -1, -1):
        entry = entries.get("/".join([ref.host, *parts[:n]]))
        if not isinstance(entry, dict):
            continue
        blob = entry.get("auth")
        if isinstance(blob, str) and blob:
            try:
                user, sep, password = base64.b64decode(blob, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"{path}: entry for {ref.host}: malformed auth") from None
            if sep:
                return Auth(user, password)
        if isinstance(entry.get("username"), str):
            return Auth(entry["username"], str(entry.get("password") or ""))
    return None


# The source ---------------------------------------------------------------------------------------

def host_platform() -> Platform:
    """This machine's platform in OCI words (``linux/amd64``, ``linux/arm64``, ``linux/arm/v7``)."""
    machine = _platform.machine().lower()
    arch, variant = {"x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""),
                     "arm64": ("arm64", ""), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
                     "i686": ("386", ""), "i386": ("386", ""), "ppc64le": ("ppc64le", ""),
                     "s390x": ("s390x", ""), "riscv64": ("riscv64", "")}.get(machine, (machine, ""))
    return Platform("linux", arch, variant)


_CLIENTS: dict[tuple[str, Auth, bool, float, int], Client] = {}


def connect(ref: Reference, options: SourceOptions) -> Client:
    """A client for ``ref``'s registry after ``GET /v2/``: HTTPS, or (``tls_verify`` False)
    HTTPS without verification falling back to plain HTTP, as skopeo does. One client per
    registry and credentials in a process: a scan of many tags pings once, keeps its
    connection alive and reuses its tokens."""
    auth = credentials(ref, options)
    key = (ref.netloc, auth, options.tls_verify, options.timeout, options.retries)
    if key in _CLIENTS:
        return _CLIENTS[key]
    client = _connect(ref, options, auth)
    _CLIENTS[key] = client
    return client


def _connect(ref: Reference, options: SourceOptions, auth: Auth) -> Client:
    retry = Retry(max(1, options.retries), options.backoff, timeout=options.timeout)
    schemes = ["https"] if options.tls_verify else ["https", "http"]
    last: BaseException | None = None
    for scheme in schemes:
        client = Client(Endpoint(scheme, ref.netloc, options.tls_verify), auth,
                        retry if scheme == schemes[-1] else Retry(1, 0, timeout=options.timeout),
                        f"docker://{ref.host}")
        try:
            status, _, resp = client._simple("GET", client.endpoint.base + "/v2/", {}, "ping")
        except RegistryError as e:
            if isinstance(e.__cause__, _TRANSPORT_ERRORS) and scheme != schemes[-1]:
                last = e
                client.close()
                continue
            raise
        if status == 401:  # answered on the first real request, with its scope
            challenge, _ = _parse_challenge(resp.getheader("WWW-Authenticate") or "")
            client._basic = challenge == "basic" and bool(auth.username)
        elif status != 200:
            raise RegistryError(f"{ref}: not a registry (GET /v2/ answered {status})")
        client.retry = retry
        return client
    raise last or RegistryError(f"{ref}: cannot connect")  # pragma: no cover


class JsonCache:
    """Verified manifests and configs by digest (``<dir>/sha256/<hex>``): content-addressed,
    re-verified on every read, written atomically. ``dir`` None: no cache."""

    def __init__(self, root: str | None) -> None:
        self.root = os.path.join(root, "sha256") if root else None

    def get(self, digest: Digest) -> bytes | None:
        if self.root is None:
            return None
        try:
            with open(os.path.join(self.root, digest.hex), "rb") as f:
                raw = f.read(MAX_DOCUMENT + 1)
        except OSError:
            return None
        return raw if Digest.of_bytes(raw) == digest else None

    def put(self, digest: Digest, raw: bytes) -> None:
        if self.root is None:
            return
        try:
            os.makedirs(self.root, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.replace(tmp, os.path.join(self.root, digest.hex))
        except OSError:
            pass  # a cache that cannot be written is no cache, not an error


class RegistrySource:
    """One ``docker://`` reference (see the module doc). ``path``: the reference as given."""

    def __init__(self, path: str, options: SourceOptions) -> None:
        self.path = path
        self.ref = parse_reference(path)
        if not self.ref.repo:
            raise SourceError(f"{path}: no repository named (use --all-repositories for a "
                              "whole registry)")
        self.options = options
        self.cache = JsonCache(options.cache_dir)
        self.client = connect(self.ref, options)
        self.scope = f"repository:{self.ref.repo}:pull"

    def close(self) -> None:
        """Nothing to delete; the registry's client stays for the next reference."""

    def images(self) -> Iterator[Image]:
        """See ``_images``; errors name this reference, not only its registry."""
        try:
            yield from self._images()
        except LayerdbError as e:
            msg, head = str(e), self.client.what
            if msg.startswith(head + ":") and not msg.startswith(self.path):
                raise type(e)(self.path + msg[len(head):]) from e
            raise

    def _images(self) -> Iterator[Image]:
        """Every image the reference names: one manifest, or the wanted platforms of an index
        (``--platform``, default the host's; ``--all-platforms``). ``Image.source`` is the
        pinned ``docker://HOST/REPO@DIGEST`` of the manifest or index the reference named; its
        only ref is the one asked for, ``HOST/REPO:TAG`` (every platform of an index alike; none
        for a reference by digest alone, which ``--image HOST/REPO@DIGEST`` names)."""
        ref = self.ref
        raw, media_type = self.manifest(str(ref.digest) if ref.digest else (ref.tag or "latest"),
                                        ref.digest)
        digest = Digest.of_bytes(raw)
        refs = [f"{ref.name}:{ref.tag or 'latest'}"] if ref.tag or not ref.digest else []
        walker = _RegistryWalker(self, f"docker://{ref.name}@{digest}", {digest: raw})
        walker.visit(Descriptor(media_type, digest, len(raw), {}), refs, None, 0, top=True)
        if not len(walker.found):
            if walker.unwanted:
                raise SourceError(f"{self.path}: no image for platform {walker.want}; the index "
                                  f"has {', '.join(sorted(set(walker.unwanted)))} "
                                  "(--platform OS/ARCH or --all-platforms)")
            raise UnsupportedMediaType(f"{self.path}: no image manifests; skipped "
                                       + ", ".join(walker.skipped))
        yield from walker.found

    def manifest(self, reference: str, digest: Digest | None) -> tuple[bytes, str]:
        """A manifest or index by tag or digest: (exact bytes, media type). Verified against
        ``digest`` and against the registry's ``Docker-Content-Digest``."""
        if digest is not None:
            cached = self.cache.get(digest)
            if cached is not None:
                return cached, _media_type(cached, "")
        what = f"manifest {reference}"
        raw, resp = self.client.get_json(f"/v2/{self.ref.repo}/manifests/{reference}", self.scope,
                                         what, ACCEPT)
        got = Digest.of_bytes(raw)
        header = resp.getheader("Docker-Content-Digest")
        for want in (digest, header):
            if want and str(want) != str(got):
                raise DigestMismatch(f"{self.path}: {what}: digest mismatch: expected {want}, got {got}")
        ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        media_type = _media_type(raw, ctype)
        if media_type in SCHEMA1:
            raise UnsupportedMediaType(f"{self.path}: {what}: a schema 1 manifest ({media_type}) "
                                       "is not supported; push the image again with a current client")
        if media_type not in INDEX_TYPES and media_type not in MANIFEST_TYPES:
            raise UnsupportedMediaType(f"{self.path}: {what}: not an image manifest "
                                       f"({_printable(media_type)[:100]!r})")
        self.cache.put(got, raw)
        return raw, media_type

    def blob_json(self, digest: Digest, what: str) -> bytes:
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        raw, _ = self.client.get_json(f"/v2/{self.ref.repo}/blobs/{digest}", self.scope,
                                      f"{what} {digest}")
        got = Digest.of_bytes(raw)
        if got != digest:
            raise DigestMismatch(f"{self.path}: {what} {digest}: digest mismatch: got {got}")
        self.cache.put(digest, raw)
        return raw

    def blob(self, digest: Digest, size: int) -> RegistryBlob:
        token = self.client._tokens.get(self.scope, "")
        return RegistryBlob(self.client.endpoint, self.ref.repo, digest, size,
                            replace(self.client.auth, token=token), self.client.retry)


def _media_type(raw: bytes, ctype: str) -> str:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict):
        if doc.get("schemaVersion") == 1:
            return SCHEMA1[0]
        mt = doc.get("mediaType")
        if isinstance(mt, str) and mt:
            return mt
        if ctype in INDEX_TYPES or ctype in MANIFEST_TYPES or ctype in SCHEMA1:
            return ctype
        return OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    return ctype or "unknown"


class _RegistryWalker(Walker):
    def __init__(self, src: RegistrySource, source: str, bodies: dict[Digest, bytes]) -> None:
        super().__init__(None, source, display=src.path)
        self.src = src
        self.bodies = bodies
        opts = src.options
        self.want = None if opts.all_platforms else (opts.platform or host_platform())
        self.unwanted: list[str] = []

    def present(self, desc: Descriptor) -> bool:
        return True

    def wanted(self, desc: Descriptor) -> bool:
        if self.want is None or desc.platform is None or desc.platform.matches(self.want):
            return True
        self.unwanted.append(str(desc.platform))
        return False

    def fetch(self, desc: Descriptor, what: str) -> bytes:
        if desc.digest in self.bodies:
            return self.bodies[desc.digest]
        if what == "config":
            return self.src.blob_json(desc.digest, what)
        raw, _ = self.src.manifest(str(desc.digest), desc.digest)
        return raw

    def layer(self, ld: Descriptor, i: int, n: int, diff_id: Digest, where: str) -> LayerRef:
        check_layer_type(ld.media_type, f"{where}: layer {i + 1} of {n}")
        if ld.digest is None:  # pragma: no cover - parse_descriptor requires one
            raise SourceError(f"{layer_where(self.display, ld.digest, i, n)}: no digest")
        return LayerRef(diff_id=diff_id, digest=ld.digest, media_type=ld.media_type, size=ld.size,
                        blob=self.src.blob(ld.digest, ld.size),
                        annotations=tuple(sorted(ld.annotations.items())))


# Expansion: --all-tags, --all-repositories ------------------------------------------------------------

def expand_reference(text: str, options: SourceOptions) -> list[str]:
    """``docker://HOST/REPO`` with ``all_tags``: one reference per tag (tags list API);
    ``docker://HOST`` with ``all_repositories``: one per tag of every repository (catalog
    API). Pages follow ``Link`` headers, at most ``MAX_PAGES``."""
    ref = parse_reference(text)
    if ref.tag or ref.digest:
        raise SourceError(f"{text}: --all-tags and --all-repositories take a reference "
                          "without a tag or digest")
    if options.all_repositories and ref.repo:
        raise SourceError(f"{text}: --all-repositories takes a registry (docker://HOST[:PORT]), "
                          "not a repository")
    if not ref.repo and not options.all_repositories:
        raise SourceError(f"{text}: no repository named (use --all-repositories for a whole registry)")
    client = connect(ref, options)
    if ref.repo:
        repos = [ref.repo]
    else:
        repos = _pages(client, "/v2/_catalog", "registry:catalog:*", "repositories",
                       options.page_size, "catalog")
    out = []
    for repo in repos:
        if not isinstance(repo, str) or not _REPO.match(repo):
            raise RegistryError(f"{text}: catalog lists an invalid repository name "
                                f"{_printable(str(repo))[:100]!r}")
        tags = _pages(client, f"/v2/{repo}/tags/list", f"repository:{repo}:pull", "tags",
                      options.page_size, f"tags of {repo}")
        for tag in tags:
            if not isinstance(tag, str) or not _TAG.match(tag):
                raise RegistryError(f"{text}: {repo} lists an invalid tag "
                                    f"{_printable(str(tag))[:100]!r}")
            out.append(f"docker://{ref.host}/{repo}:{tag}")
    return out


def _pages(client: Client, path: str, scope: str, key: str, page: int, what: str) -> list[Any]:
    out: list[Any] = []
    url = f"{path}?n={page}"
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        seen.add(url)
        raw, resp = client.get_json(url, scope, what)
        doc = parse_json(raw, f"{client.what}: {what}")
        items = doc.get(key) if isinstance(doc, dict) else None
        if items is None:
            items = []
        if not isinstance(items, list):
            raise RegistryError(f"{client.what}: {what}: {key} is not a list")
        out.extend(items)
        nxt = _next_link(resp.getheader("Link"))
        if not nxt:
            return list(dict.fromkeys(out))
        if urllib.parse.urlsplit(nxt).netloc not in ("", client.endpoint.netloc):
            raise RegistryError(f"{client.what}: {what}: pagination leads to another host")
        url = urllib.parse.urljoin(client.endpoint.base + path, nxt)
        url = urllib.parse.urlunsplit(("", "", *urllib.parse.urlsplit(url)[2:]))
        if url in seen:
            raise RegistryError(f"{client.what}: {what}: pagination loops")
    raise RegistryError(f"{client.what}: {what}: more than {MAX_PAGES} pages")


def _next_link(header: str | None) -> str | None:
    for part in (header or "").split(","):
        m = re.match(r'\s*<([^>]*)>\s*;(.*)', part)
        if m and re.search(r'rel\s*=\s*"?next"?', m.group(2)):
            return m.group(1)
    return None

