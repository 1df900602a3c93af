"""Docker credential helpers: ``docker-credential-NAME get``, as docker and containers/image
run them (protocol: docker/docker-credential-helpers).

The program ``docker-credential-NAME`` is looked up on ``PATH`` and run with the one
argument ``get`` and the server URL on stdin; it prints ``{"ServerURL": ..., "Username": ...,
"Secret": ...}`` and exits 0, or exits non-zero printing ``credentials not found in native
keychain`` when it holds nothing for that server (no credentials: not an error), or anything
else (an error). ``Username`` ``<token>`` means ``Secret`` is an identity token (an OAuth2
refresh token for the registry's token service), not a password.

Limits: ``TIMEOUT`` seconds for the helper to answer and exit (it is killed, with anything it
started in its session, past that), ``MAX_ANSWER`` bytes of stdout and of stderr. A helper
that is missing, fails, times out or answers malformed or oversized JSON raises
``RegistryError`` with one line naming the helper and where it was configured; no message
carries the answer (the secret), only a failing helper's own first line of complaint.
"""
from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import time
from typing import Any

from ..errors import RegistryError

#: Seconds a helper may take to answer and exit.
TIMEOUT = 30.0
#: Bytes of a helper's stdout (and of its stderr) read at most.
MAX_ANSWER = 64 << 10
NOT_FOUND = "credentials not found in native keychain"
TOKEN_USERNAME = "<token>"
DOCKER_HUB = "https://index.docker.io/v1/"


def server_url(host: str) -> str:
    """What a helper gets on stdin for registry ``host`` (as in the reference, ``host[:port]``):
    the host itself, but Docker Hub's ``https://index.docker.io/v1/`` for ``docker.io``, which
    is the key ``docker login`` stores Hub's credentials under."""
    return DOCKER_HUB if host == "docker.io" else host


def check_name(name: Any, where: str) -> str:
    """``name`` of a ``credHelpers`` or ``credsStore`` value, refused unless a plain name
    (no path: ``docker-credential-NAME`` is only ever looked up on ``PATH``)."""
    if not isinstance(name, str) or "/" in name or "\\" in name or "\0" in name or \
            not name.isprintable():
        raise RegistryError(f"{where}: invalid credential helper name {_shown(str(name))!r}")
    return name


class HelperCache:
    """The answers of helpers within one ingest (one ``SourceOptions``), by (helper, server
    URL); a failure is remembered too, so a helper runs at most once per registry however many
    references name it. In memory only: a pickled copy starts empty, nothing is written."""

    def __init__(self) -> None:
        self._got: dict[tuple[str, str], tuple[str, str] | None | RegistryError] = {}

    def __reduce__(self) -> tuple[type[HelperCache], tuple[()]]:
        return (HelperCache, ())

    def __repr__(self) -> str:
        return f"HelperCache({len(self._got)} answer(s))"

    def get(self, name: str, url: str, where: str) -> tuple[str, str] | None:
        """``run(name, url, where)``, once per (name, url)."""
        key = (name, url)
        if key not in self._got:
            try:
                self._got[key] = run(name, url, where)
            except RegistryError as e:
                self._got[key] = e
        got = self._got[key]
        if isinstance(got, RegistryError):
            raise RegistryError(str(got))
        return got


def run(name: str, url: str, where: str, timeout: float | None = None) -> tuple[str, str] | None:
    """Ask helper ``docker-credential-NAME`` for ``url``'s credentials: (username, secret),
    username ``<token>`` for an identity token; None when it has none (``credentials not
    found``, or an answer with neither username nor secret). ``where`` (which entry of which
    file configured it) ends every error line."""
    prog = "docker-credential-" + name
    timeout = TIMEOUT if timeout is None else timeout
    path = shutil.which(prog)
    if path is None:
        raise RegistryError(f"{prog}: not found on PATH ({where})")
    if not os.path.isabs(path):  # as Go's exec.LookPath (docker's): not from a relative entry
        raise RegistryError(f"{prog}: found only through a relative PATH entry, not run ({where})")
    try:
        proc = subprocess.Popen([path, "get"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        raise RegistryError(f"{prog}: cannot run: {(e.strerror or str(e)).lower()} ({where})") from None
    try:
        out, err, status = _communicate(proc, url.encode(), timeout)
    except _TimedOut:
        raise RegistryError(f"{prog}: no answer within {timeout:g} s ({where})") from None
    except _TooLong:
        raise RegistryError(f"{prog}: answer larger than {MAX_ANSWER} bytes ({where})") from None
    said = [s.decode("utf-8", "replace").strip() for s in (out, err)]
    if status != 0:
        if NOT_FOUND in said:
            return None
        first = next((s.splitlines()[0] for s in said if s), "")
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        raise RegistryError(f"{prog}: failed ({how})" + (f": {_shown(first)[:200]}" if first else "")
                     + f" ({where})")
    try:
        doc = json_loads(out)
    except ValueError:
        raise RegistryError(f"{prog}: malformed answer: not JSON ({where})") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{prog}: malformed answer: not a JSON object ({where})")
    user, secret = doc.get("Username", ""), doc.get("Secret", "")
    if not isinstance(user, str) or not isinstance(secret, str):
        raise RegistryError(f"{prog}: malformed answer: Username and Secret must be strings ({where})")
    if not user and not secret:
        return None
    if not user:
        raise RegistryError(f"{prog}: malformed answer: a Secret without a Username ({where})")
    return user, secret


def json_loads(raw: bytes) -> Any:
    """JSON, or ``ValueError`` saying nothing of the content (which may hold the secret)."""
    import json

    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValueError("not JSON") from None


def _shown(s: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in s)


class _TimedOut(Exception):
    pass


class _TooLong(Exception):
    pass


def _communicate(proc: subprocess.Popen[bytes], data: bytes, timeout: float
                 ) -> tuple[bytes, bytes, int]:
    """Send ``data``, read stdout and stderr (each at most ``MAX_ANSWER`` bytes) and the exit
    status within ``timeout`` seconds; past either limit, kill the helper's session."""
    deadline = time.monotonic() + timeout
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        try:
            proc.stdin.write(data)  # a server URL: far below a pipe's buffer
            proc.stdin.close()
        except BrokenPipeError:  # the helper did not read it: its exit says why
            pass
        bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
        with selectors.DefaultSelector() as sel:
            for f in (proc.stdout, proc.stderr):
                os.set_blocking(f.fileno(), False)
                sel.register(f.fileno(), selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _TimedOut
                for key, _ in sel.select(left):
                    fd = int(key.fd)
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        sel.unregister(fd)
                        continue
                    bufs[fd] += chunk
                    if len(bufs[fd]) > MAX_ANSWER:
                        raise _TooLong
        try:
            status = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise _TimedOut from None
        return bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]), status
    except BaseException:
        _kill(proc)
        raise
    finally:
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:  # stdin's unflushed URL, when the helper never read it
                pass


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the helper and whatever it started in its session (its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    proc.wait()
