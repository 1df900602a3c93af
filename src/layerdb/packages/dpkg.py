"""dpkg: ``/var/lib/dpkg/status`` and distroless' ``/var/lib/dpkg/status.d/*``.

A stanza is a package only when it has ``Package`` and ``Version`` and its ``Status`` says
installed (``<want> ok installed``: ``install ok installed``, ``hold ok installed``); a stanza
such as ``deinstall ok config-files`` (removed, configuration kept) is not. A ``status.d``
stanza without a ``Status`` field (distroless writes none) counts as installed.
"""
from __future__ import annotations

from collections.abc import Iterator

from .purl import purl
from .records import Blob, Package, lines, text

_FIELDS = {b"package", b"version", b"architecture", b"source", b"status"}


def stanzas(chunks: Iterator[bytes]) -> Iterator[dict[str, str]]:
    """The fields dpkg tools need of each stanza (lower-case names; continuation lines,
    which only long fields such as Description have, are skipped)."""
    cur: dict[str, str] = {}
    for line in lines(chunks):
        if not line.strip():
            if cur:
                yield cur
                cur = {}
            continue
        if line[:1] in (b" ", b"\t"):
            continue
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in _FIELDS:
            cur[name.strip().lower().decode("ascii", "replace")] = text(value)
    if cur:
        yield cur


def installed(st: dict[str, str], status_required: bool) -> bool:
    status = st.get("status")
    if status is None:
        return not status_required
    words = status.split()
    return len(words) == 3 and words[1] == "ok" and words[2] == "installed"


def parse(blob: Blob, status_d: bool = False) -> list[Package]:
    out = []
    for st in stanzas(blob.chunks()):
        name, version = st.get("package"), st.get("version")
        if not name or not version or not installed(st, not status_d):
            continue
        source = st.get("source")
        if source:
            source = source.split(" ", 1)[0]  # "openssl (3.0.11-1)": the name only
        arch = st.get("architecture") or None
        out.append(Package("deb", name, version, blob.path, source, arch,
                           purl("deb", "debian", name, version, {"arch": arch})))
    return out
