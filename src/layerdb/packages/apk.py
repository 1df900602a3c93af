"""Alpine: ``/lib/apk/db/installed`` (``/usr/lib/apk/db/installed`` in apk-tools 3).

Every stanza of the file is an installed package: ``P:`` name, ``V:`` version, ``A:`` arch,
``o:`` origin (the source package)."""
from __future__ import annotations

from .purl import purl
from .records import Blob, Package, lines, text


def parse(blob: Blob) -> list[Package]:
    out: list[Package] = []
    cur: dict[bytes, str] = {}

    def flush() -> None:
        name, version = cur.get(b"P"), cur.get(b"V")
        if name and version:
            arch = cur.get(b"A") or None
            out.append(Package("apk", name, version, blob.path, cur.get(b"o") or None, arch,
                               purl("apk", "alpine", name, version, {"arch": arch})))
        cur.clear()

    for line in lines(blob.chunks()):
        if not line.strip():
            flush()
        elif len(line) >= 2 and line[1:2] == b":" and line[:1] in (b"P", b"V", b"A", b"o"):
            cur[line[:1]] = text(line[2:])
    flush()
    return out
