"""RPM: the SQLite database (``/var/lib/rpm/rpmdb.sqlite``, ``/usr/lib/sysimage/rpm/
rpmdb.sqlite``; rpm >= 4.16, Fedora 33+, RHEL 9, openSUSE since 2021): each row of its
``Packages`` table is one package's header blob, read here for name, epoch, version, release,
arch and source rpm.

The older Berkeley DB (``/var/lib/rpm/Packages``: RHEL/CentOS <= 8, Amazon Linux 2) and NDB
(``Packages.db``: SUSE) formats are not parsed: their images get no rpm rows (find them with
``select image, path from fs where path in ('/var/lib/rpm/Packages',
'/var/lib/rpm/Packages.db')``).

The database is copied (streamed, at most ``LIMIT`` bytes) to a private temporary file and
opened read-only and immutable; a file SQLite cannot read gives no rows.
"""
from __future__ import annotations

import os
import sqlite3
import struct
import tempfile

from .purl import purl
from .records import Blob, Package

LIMIT = 1 << 30
TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_ARCH, TAG_SOURCERPM = 1000, 1001, 1002, 1003, 1022, 1044
_STRING, _INT32, _I18N = 6, 4, 9
_WANT = {TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH, TAG_ARCH, TAG_SOURCERPM}


def header_fields(blob: bytes) -> dict[int, str | int]:
    """The tags this module needs from one rpm header blob (big-endian index, then data)."""
    if len(blob) < 8:
        return {}
    il, dl = struct.unpack_from(">II", blob, 0)
    data_start = 8 + 16 * il
    if il > 0x10000 or data_start + dl > len(blob):
        return {}
    out: dict[int, str | int] = {}
    for i in range(il):
        tag, typ, off, count = struct.unpack_from(">IIII", blob, 8 + 16 * i)
        if tag not in _WANT or off >= dl:
            continue
        at = data_start + off
        if typ in (_STRING, _I18N):
            end = blob.find(b"\x00", at, data_start + dl)
            if end >= 0:
                out[tag] = blob[at:end].decode("utf-8", "replace")
        elif typ == _INT32 and count >= 1 and at + 4 <= data_start + dl:
            out[tag] = struct.unpack_from(">I", blob, at)[0]
    return out


def _evr(f: dict[int, str | int]) -> str:
    v = f"{f.get(TAG_VERSION, '')}"
    if f.get(TAG_RELEASE):
        v += f"-{f[TAG_RELEASE]}"
    if TAG_EPOCH in f:
        v = f"{f[TAG_EPOCH]}:{v}"
    return v


def parse(blob: Blob, tmpdir: str | None = None) -> list[Package]:
    if blob.size > LIMIT:
        return []
    fd, tmp = tempfile.mkstemp(dir=tmpdir, suffix=".rpmdb.sqlite")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in blob.chunks():
                f.write(chunk)
        return _read(tmp, blob.path)
    finally:
        os.unlink(tmp)


def _read(db: str, path: str) -> list[Package]:
    out: list[Package] = []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error:
        return []
    try:
        for (hdr,) in con.execute("select blob from Packages order by hnum"):
            if not isinstance(hdr, (bytes, bytearray)):
                continue
            f = header_fields(bytes(hdr))
            name = f.get(TAG_NAME)
            if not isinstance(name, str) or not name or not f.get(TAG_VERSION):
                continue
            arch = f.get(TAG_ARCH)
            arch = arch if isinstance(arch, str) and arch else None
            src = f.get(TAG_SOURCERPM)
            ver = f"{f[TAG_VERSION]}" + (f"-{f[TAG_RELEASE]}" if f.get(TAG_RELEASE) else "")
            epoch = f.get(TAG_EPOCH)
            out.append(Package(
                "rpm", name, _evr(f), path, src if isinstance(src, str) and src else None, arch,
                purl("rpm", "redhat", name, ver,
                     {"arch": arch, "epoch": str(epoch) if epoch is not None else None})))
    except sqlite3.Error:
        return out
    finally:
        con.close()
    return out
