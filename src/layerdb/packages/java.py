"""Java: the Maven artifacts in Java archives (``*.jar``, ``*.war``, ``*.ear``, Jenkins'
``*.jpi``/``*.hpi``), as syft's java cataloger finds them.

A jar is read from its end: the zip's central directory is walked in ``CHUNK`` reads (never held
whole), and only the entries that matter are read and inflated:

- every ``META-INF/maven/<group>/<artifact>/pom.properties``: one package each (``groupId``,
  ``artifactId``, ``version``; the entry's path gives a missing group or artifact);
- ``META-INF/MANIFEST.MF``, when no ``pom.properties`` is the jar's own (its ``artifactId`` is
  the file name, or the name before ``-<version>``; the others are shaded in): one package, named
  as syft names it: the file name without its version (when it starts with a letter), else
  ``Bundle-SymbolicName`` (the part after the last dot when ``Created-By`` is the Apache Maven
  Bundle Plugin; syft tries that one before the file name, which names log4j-core "core"),
  ``Implementation-Title``, ``Specification-Title``, ``Bundle-Name``; versioned by the file
  name (``name-1.2.3.jar``), else ``Implementation-Version``, ``Specification-Version``,
  ``Plugin-Version``, ``Bundle-Version``; its group is ``Implementation-Vendor-Id`` when set.
  A jar with neither a name nor a version gives no row;
- nested archives (``BOOT-INF/lib/*.jar``, ``WEB-INF/lib/*.jar``, the modules of an ear: any
  entry with an archive suffix), down to ``MAX_DEPTH`` levels: a STORED one is read in place,
  a DEFLATED one inflated into memory when the directory says it is at most ``NESTED_LIMIT``
  bytes, else skipped (an entry is never inflated past the size the directory gives it).
  Its rows' ``record_path`` is ``/outer.jar!/BOOT-INF/lib/inner.jar`` (the JDK's and Spring
  Boot's ``jar:`` URL form).

Rows: ecosystem ``maven`` (the purl type; OSV's and Grype's ecosystem), name the artifactId,
``source`` the groupId (the project that publishes the artifact, as a source package groups
binary ones), purl ``pkg:maven/<group>/<artifact>@<version>``.

Hostile input is bounded, never an exception: at most ``MAX_ENTRIES`` central-directory
entries are looked at per jar (all levels together), a ``pom.properties`` or manifest is
inflated up to ``TEXT_LIMIT`` bytes (the rest is ignored), at most ``MAX_NESTED`` nested
archives per jar and ``INFLATE_BUDGET`` inflated bytes per top-level jar; an entry that is
encrypted, of another method, or not where its header says gives nothing.
"""
from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from .purl import purl
from .records import Blob, Package

SUFFIXES = (b".jar", b".war", b".ear", b".jpi", b".hpi")
CHUNK = 256 << 10
MAX_ENTRIES = 500_000
TEXT_LIMIT = 1 << 20
NESTED_LIMIT = 32 << 20
INFLATE_BUDGET = 256 << 20
MAX_NESTED = 10_000
MAX_DEPTH = 2  # nested archives inside a top-level one: an ear's war's jars
MAX_FIELD = 512  # a longer group, artifact or version is not one
MAX_LINE = 8192  # a longer pom.properties line is skipped

_EOCD = b"PK\x05\x06"
_EOCD64_LOC = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CDH = b"PK\x01\x02"
_LFH = b"PK\x03\x04"
_POM = re.compile(rb"^META-INF/maven/([^/]+)/([^/]+)/pom\.properties$")
_MANIFEST = b"META-INF/MANIFEST.MF"
_FILE_VERSION = re.compile(r"^(.+?)-(\d[^/]*)$")
_BAD = re.compile(r"[\x00-\x20\x7f]")


class _Budget:
    def __init__(self) -> None:
        self.entries = MAX_ENTRIES
        self.inflate = INFLATE_BUDGET
        self.nested = MAX_NESTED


class _Bytes:
    """``Blob``-like reads over bytes in memory (an inflated nested archive)."""

    def __init__(self, data: bytes | bytearray) -> None:
        self.data, self.size = data, len(data)

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n <= 0:
            return b""
        return bytes(self.data[offset:offset + n])


class _Slice:
    """Reads of ``size`` bytes at ``base`` of another reader (a STORED nested archive)."""

    def __init__(self, inner: _Bytes | _Slice | Blob, base: int, size: int) -> None:
        self.inner, self.base, self.size = inner, base, size

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset >= self.size or n <= 0:
            return b""
        return self.inner.read(self.base + offset, min(n, self.size - offset))


_Reader = _Bytes | _Slice | Blob


@dataclass
class _Entry:
    name: bytes
    flags: int
    method: int
    csize: int
    usize: int
    header: int  # offset of the local header


def _exact(r: _Reader, offset: int, n: int) -> bytes:
    b = r.read(offset, n)
    if len(b) != n:
        raise ValueError("short read")
    return b


def _directory(r: _Reader) -> tuple[int, int, int, int]:
    """(entries, directory offset, directory size, prefix length) from the end records; the
    prefix is what precedes the zip (a launch script before a Spring Boot jar)."""
    size = r.size
    if size < 22:
        raise ValueError("too small")
    for tail_len in (min(size, 1024), min(size, 22 + 0xFFFF)):  # most zips have no comment
        tail = _exact(r, size - tail_len, tail_len)
        at = tail.rfind(_EOCD, 0, len(tail) - 18)  # a whole 22-byte record
        if at >= 0:
            break
    if at < 0:
        raise ValueError("no end of central directory")
    eocd = size - tail_len + at
    _, _, _, _, count, cd_size, cd_off, _ = struct.unpack_from("<4sHHHHIIH", tail, at)
    loc = r.read(eocd - 20, 20) if eocd >= 20 else b""
    if loc[:4] == _EOCD64_LOC:  # zip64 (the classic record may hold real values all the same)
        start = eocd - 20 - 56  # where the record is unless it has extensible data
        rec = r.read(start, 56) if start >= 0 else b""
        if rec[:4] != _EOCD64:  # then where the locator says (which ignores a prefix)
            start, = struct.unpack_from("<Q", loc, 8)
            rec = r.read(start, 56)
            if len(rec) != 56 or rec[:4] != _EOCD64:
                raise ValueError("no zip64 end record")
        count, cd_size, cd_off = struct.unpack_from("<QQQ", rec, 32)
        end = start
    elif count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_off == 0xFFFFFFFF:
        raise ValueError("no zip64 locator")
    else:
        end = eocd
    prefix = end - cd_size - cd_off
    if prefix < 0 or cd_size > end:
        raise ValueError("central directory out of range")
    return count, cd_off + prefix, cd_size, prefix


def _entries(r: _Reader, budget: _Budget) -> Iterator[_Entry]:
    """The central directory's entries, read ``CHUNK`` bytes at a time."""
    count, off, cd_size, prefix = _directory(r)
    end = off + cd_size
    buf, i, pos = b"", 0, off  # buf[i:] holds the directory's bytes at pos
    for _ in range(count):
        if budget.entries <= 0 or pos >= end:
            return
        budget.entries -= 1
        if len(buf) - i < 46:
            buf, i = buf[i:] + r.read(pos + len(buf) - i, CHUNK), 0
            if len(buf) < 46:
                return
        if buf[i:i + 4] != _CDH:
            return
        (_, _, _, flags, method, _, _, _, csize, usize, nlen, xlen, clen, _, _, _,
         header) = struct.unpack_from("<4sHHHHHHIIIHHHHHII", buf, i)
        need = 46 + nlen + xlen + clen
        if len(buf) - i < need:
            buf, i = buf[i:] + r.read(pos + len(buf) - i, max(CHUNK, need)), 0
            if len(buf) < need:
                return
        name = buf[i + 46:i + 46 + nlen]
        if 0xFFFFFFFF in (csize, usize, header):  # zip64 sizes/offset in the extra field
            extra = buf[i + 46 + nlen:i + 46 + nlen + xlen]
            j = 0
            while j + 4 <= len(extra):
                tag, ln = struct.unpack_from("<HH", extra, j)
                if tag == 1:
                    vals = list(struct.unpack_from(f"<{min(ln, 24, len(extra) - j - 4) // 8}Q", extra, j + 4))
                    if usize == 0xFFFFFFFF and vals:
                        usize = vals.pop(0)
                    if csize == 0xFFFFFFFF and vals:
                        csize = vals.pop(0)
                    if header == 0xFFFFFFFF and vals:
                        header = vals.pop(0)
                    break
                j += 4 + ln
        yield _Entry(name, flags, method, csize, usize, header + prefix)
        i, pos = i + need, pos + need


def _data_offset(r: _Reader, e: _Entry) -> int:
    head = _exact(r, e.header, 30)
    if head[:4] != _LFH:
        raise ValueError("no local header")
    nlen, xlen = struct.unpack_from("<HH", head, 26)
    start = e.header + 30 + nlen + xlen
    if start + e.csize > r.size:
        raise ValueError("entry past the end")
    return start


def _inflate(r: _Reader, e: _Entry, limit: int, budget: _Budget) -> bytes | bytearray | None:
    """The first ``limit`` bytes of an entry at most, and never more than the directory says
    it holds (a longer stream is cut there); None when it cannot be read."""
    if e.flags & 1 or e.method not in (0, 8):
        return None
    start = _data_offset(r, e)
    cap = min(limit, e.usize)
    if e.method == 0:
        return r.read(start, min(e.csize, cap))
    if cap > budget.inflate:
        return None
    d = zlib.decompressobj(-15)
    out = bytearray(cap)  # filled in place: growing it (or joining pieces) would hold it twice
    got, pos, end = 0, start, start + e.csize
    while pos < end and got < cap and not d.eof:
        chunk = r.read(pos, min(CHUNK, end - pos))
        if not chunk:
            break
        pos += len(chunk)
        while chunk and got < cap:  # cap - got > 0: a max_length of 0 would mean no limit
            piece = d.decompress(chunk, cap - got)
            out[got:got + len(piece)] = piece
            got += len(piece)
            if d.eof or (not piece and d.unconsumed_tail == chunk):
                break
            chunk = d.unconsumed_tail
    budget.inflate -= got
    del out[got:]
    return out


# pom.properties and MANIFEST.MF -----------------------------------------------------------------

def _decode(b: bytes | bytearray) -> str:
    if b.startswith((b"\xff\xfe", b"\xfe\xff")):
        return b.decode("utf-16", "replace")
    if b.startswith(b"\xef\xbb\xbf"):
        b = b[3:]
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")  # java.util.Properties' own encoding


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", s[i + 2:i + 6]):
                out.append(chr(int(s[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _key_value(line: str) -> tuple[str, str]:
    i, n = 0, len(line)
    while i < n and line[i] not in "=: \t\f":
        i += 2 if line[i] == "\\" else 1
    rest = line[i:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:]
    return _unescape(line[:i]), _unescape(rest.lstrip(" \t\f")).strip()


def properties(data: bytes | bytearray) -> dict[str, str]:
    """A ``java.util.Properties`` file: ``key=value``, ``key: value`` or ``key value``,
    ``#``/``!`` comments, ``\\`` continuations and escapes; the first value of a key wins. A
    line longer than ``MAX_LINE`` characters is skipped (no field worth reading is that long)."""
    out: dict[str, str] = {}
    logical = ""
    for raw in re.split(r"\r\n|\r|\n", _decode(data)):
        line = raw.lstrip(" \t\f")
        if not logical and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        logical += line[:-1] if trailing % 2 == 1 else line
        if len(logical) > MAX_LINE:
            logical = "\x00"  # dropped, with its continuation lines
        if trailing % 2 == 1:
            continue
        if logical != "\x00":
            key, value = _key_value(logical)
            out.setdefault(key, value)
        logical = ""
    return out


def manifest(data: bytes | bytearray) -> dict[str, str]:
    """The main section of a ``MANIFEST.MF`` (keys lower-cased; a line that starts with a
    space continues the one before)."""
    out: dict[str, str] = {}
    key = None
    for line in re.split(r"\r\n|\r|\n", data.decode("utf-8", "replace")):
        if not line:
            break  # the end of the main section
        if line[0] == " " and key is not None:
            out[key] += line[1:]
            continue
        k, sep, v = line.partition(":")
        if not sep:
            key = None
            continue
        key = k.strip().lower()
        if key in out:
            key = None  # the first value wins; its continuation lines are not this one's
            continue
        out[key] = v.strip()
    return out


def _field(v: str | None) -> str | None:
    """A usable group, artifact or version: no spaces or controls, not too long, UTF-8."""
    if not v or len(v) > MAX_FIELD or _BAD.search(v):
        return None
    try:
        v.encode("utf-8")  # a lone surrogate (from a \\ud800 escape) cannot be stored
    except UnicodeEncodeError:
        return None
    return v


def _stem(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def _file_name_version(path: str) -> tuple[str, str | None]:
    stem = _stem(path)
    m = _FILE_VERSION.match(stem)
    return (m.group(1), m.group(2)) if m else (stem, None)


def _package(group: str | None, artifact: str, version: str, record: str) -> Package:
    return Package("maven", artifact, version, record, group, None,
                   purl("maven", group, artifact, version))


def _from_manifest(mf: dict[str, str], path: str) -> Package | None:
    fname, fversion = _file_name_version(path)
    name: str | None = _field(fname) if fname[:1].isalpha() else None
    if name is None:
        sym = mf.get("bundle-symbolicname", "").split(";")[0].strip()
        if sym and "apache maven bundle plugin" in mf.get("created-by", "").lower():
            sym = sym.rsplit(".", 1)[-1]
        for cand in (sym, mf.get("implementation-title"), mf.get("specification-title"),
                     mf.get("bundle-name")):
            name = _field((cand or "").strip().replace(" ", "-"))
            if name:
                break
    version = _field(fversion)
    if version is None:
        for k in ("implementation-version", "specification-version", "plugin-version", "bundle-version"):
            v = mf.get(k, "").strip()
            version = _field(v.split()[0] if v else None)  # "1.3 2244 October 5 2008" -> 1.3
            if version:
                break
    if not name or not version:
        return None
    return _package(_field(mf.get("implementation-vendor-id")), name, version, path)


# an archive -----------------------------------------------------------------------------------

def _archive(r: _Reader, path: str, depth: int, budget: _Budget, out: list[Package]) -> None:
    poms: list[tuple[str | None, str, str]] = []
    mf_entry: _Entry | None = None
    nested: list[_Entry] = []
    try:
        for e in _entries(r, budget):
            if e.name[:9].upper() == b"META-INF/":
                m = _POM.match(e.name)
                if m:
                    props = properties(_inflate(r, e, TEXT_LIMIT, budget) or b"")
                    group = _field(props.get("groupId") or m.group(1).decode("utf-8", "replace"))
                    art = _field(props.get("artifactId") or m.group(2).decode("utf-8", "replace"))
                    ver = _field(props.get("version"))
                    if art and ver:
                        poms.append((group, art, ver))
                    continue
                if e.name.upper() == _MANIFEST and mf_entry is None:
                    mf_entry = e
                    continue
            if depth < MAX_DEPTH and e.name.lower().endswith(SUFFIXES) and not e.name.endswith(b"/"):
                nested.append(e)
    except (ValueError, struct.error, zlib.error):
        pass  # what was read so far still counts
    fname, _ = _file_name_version(path)
    stem = _stem(path)
    own = any(a in (stem, fname) for _, a, _ in poms)
    seen = set()
    for g, a, v in poms:
        if (g, a, v) not in seen:
            seen.add((g, a, v))
            out.append(_package(g, a, v, path))
    if not own and mf_entry is not None:
        try:
            pkg = _from_manifest(manifest(_inflate(r, mf_entry, TEXT_LIMIT, budget) or b""), path)
        except (ValueError, struct.error, zlib.error):
            pkg = None
        if pkg is not None and (pkg.source, pkg.name, pkg.version) not in seen:
            out.append(pkg)
    for e in nested:
        if budget.nested <= 0:
            break
        budget.nested -= 1
        inner_path = path + "!/" + e.name.decode("utf-8", "replace")
        try:
            if e.flags & 1:
                continue
            if e.method == 0:
                start = _data_offset(r, e)
                inner: _Reader = _Slice(r, start, e.csize)
            elif e.method == 8 and e.usize <= NESTED_LIMIT:
                data = _inflate(r, e, NESTED_LIMIT, budget)
                if data is None:
                    continue
                inner = _Bytes(data)
            else:
                continue
        except (ValueError, struct.error, zlib.error):
            continue
        _archive(inner, inner_path, depth + 1, budget, out)


def parse(blob: Blob) -> list[Package]:
    out: list[Package] = []
    try:
        _archive(blob, blob.path, 0, _Budget(), out)
    except (ValueError, struct.error, zlib.error, MemoryError, RecursionError):
        pass
    return out
