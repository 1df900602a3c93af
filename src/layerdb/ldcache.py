"""glibc's ``/etc/ld.so.cache`` (both formats) and ``/etc/ld.so.conf`` (with ``include``).

The cache maps a soname to the path ``ldconfig`` found for it. Two layouts exist:

- old (libc5 era, still written by glibc < 2.32 in front of the new one): ``"ld.so-1.7.0"``,
  ``uint32 nlibs``, then ``nlibs`` entries ``{int32 flags; uint32 key, value}``; string offsets
  count from the end of the entries. A new-format cache may follow, aligned to 8 bytes.
- new: ``"glibc-ld.so.cache1.1"``, ``uint32 nlibs, len_strings``, ``uint8 flags`` (byte order:
  2 little, 3 big, 0 unknown), padding, ``uint32 extension_offset``, 3 unused ``uint32``, then
  entries ``{int32 flags; uint32 key, value, osversion; uint64 hwcap}``; string offsets count
  from the start of the new header.

The loader takes the first entry, in file order, whose flags suit it; callers filter by
checking the named file's ELF class and machine. Pure functions over bytes: no I/O here.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import LayerdbError

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
MAX_CACHE = 64 << 20  # a real cache is tens of KiB; a larger one is refused


class LdCacheError(LayerdbError):
    """An ``/etc/ld.so.cache`` that is neither format, or whose offsets point outside it."""


@dataclass(frozen=True)
class CacheEntry:
    soname: str
    path: str
    flags: int
    hwcap: int = 0  # non-zero: a glibc-hwcaps or legacy hwcap subdirectory entry


def _cstr(data: bytes, off: int, what: str) -> str:
    if not 0 <= off < len(data):
        raise LdCacheError(f"ld.so.cache: {what} offset {off} is outside the file")
    end = data.find(b"\0", off)
    if end < 0:
        raise LdCacheError(f"ld.so.cache: {what} at {off} is not terminated")
    return data[off:end].decode("utf-8", "surrogateescape")


def _parse_new(data: bytes, base: int) -> list[CacheEntry]:
    if len(data) < base + 48:
        raise LdCacheError("ld.so.cache: truncated header")
    flags = data[base + 28]
    order = ">" if flags == 3 else "<"
    nlibs, _len_strings = struct.unpack_from(order + "II", data, base + 20)
    if flags == 0 and nlibs * 24 > len(data):  # glibc < 2.33 writes no byte-order flag
        order = ">"
        nlibs, _len_strings = struct.unpack_from(order + "II", data, base + 20)
    if base + 48 + nlibs * 24 > len(data):
        raise LdCacheError(f"ld.so.cache: {nlibs} entries do not fit in {len(data)} bytes")
    out = []
    for i in range(nlibs):
        fl, key, value, _osv, hwcap = struct.unpack_from(order + "iIIIQ", data, base + 48 + 24 * i)
        out.append(CacheEntry(_cstr(data, base + key, "key"), _cstr(data, base + value, "value"),
                              fl, hwcap))
    return out


def parse_ld_cache(data: bytes) -> list[CacheEntry]:
    """The entries of an ``ld.so.cache``, in file order (the new format when both are there).
    Raises ``LdCacheError``."""
    if len(data) > MAX_CACHE:
        raise LdCacheError(f"ld.so.cache: {len(data)} bytes is more than {MAX_CACHE}")
    if data.startswith(NEW_MAGIC):
        return _parse_new(data, 0)
    if not data.startswith(OLD_MAGIC):
        raise LdCacheError("ld.so.cache: unknown format (neither ld.so-1.7.0 nor glibc-ld.so.cache1.1)")
    if len(data) < 16:
        raise LdCacheError("ld.so.cache: truncated header")
    (nlibs,) = struct.unpack_from("<I", data, 12)
    order = "<"
    if 16 + nlibs * 12 > len(data):
        (nlibs,) = struct.unpack_from(">I", data, 12)
        order = ">"
    end = 16 + nlibs * 12
    if end > len(data):
        raise LdCacheError(f"ld.so.cache: {nlibs} entries do not fit in {len(data)} bytes")
    new = (end + 7) & ~7
    if data[new:new + len(NEW_MAGIC)] == NEW_MAGIC:  # the combined layout: the loader reads this
        return _parse_new(data, new)
    out = []
    for i in range(nlibs):
        fl, key, value = struct.unpack_from(order + "iII", data, 16 + 12 * i)
        out.append(CacheEntry(_cstr(data, end + key, "key"), _cstr(data, end + value, "value"), fl))
    return out


def parse_ld_conf(text: str) -> tuple[list[str], list[str]]:
    """The directories and the ``include`` patterns of one ``ld.so.conf`` file, in order
    (comments and ``hwcap`` lines dropped). Patterns are relative to ``/etc`` when not absolute."""
    dirs: list[str] = []
    includes: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include":
            includes += [w if w.startswith("/") else "/etc/" + w for w in words[1:]]
        elif words[0] == "hwcap":
            continue
        else:
            for d in line.replace(",", " ").replace(":", " ").split():
                if d.startswith("/"):
                    dirs.append(d.split("=", 1)[0].rstrip("/") or "/")
    return dirs, includes
