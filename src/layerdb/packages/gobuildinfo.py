"""Go: the build information the Go toolchain (1.13+) embeds in an executable, as
``go version -m`` prints it: the Go version, the main module, and each dependency module with
its version (a ``=>`` replacement wins).

Cheap by design, because it runs on every large executable of every layer: only ELF files of
at least ``MIN_SIZE`` bytes (a Go binary is megabytes), and only two small reads: the ELF
header with its program headers (``HEAD`` bytes), then ``SEARCH`` bytes at the start of the
first writable, non-executable ``PT_LOAD`` segment, where Go's linker puts ``.go.buildinfo``
(``debug/buildinfo`` looks there too). Go 1.18+ writes the strings inline; older versions
write pointers, which are followed through the program headers (two more small reads)."""
from __future__ import annotations

import struct

from .purl import purl
from .records import Blob, Package

MIN_SIZE = 512 << 10
HEAD = 4096
SEARCH = 64 << 10
MAX_STRING = 4 << 20
_MAGIC = b"\xff Go buildinf:"
_PT_LOAD = 1
_PF_X, _PF_W = 1, 2


class _Elf:
    def __init__(self, blob: Blob, head: bytes) -> None:
        self.blob = blob
        cls, data = head[4], head[5]
        if cls not in (1, 2) or data not in (1, 2):
            raise ValueError("not an ELF file")
        self.wide = cls == 2
        self.e = "<" if data == 1 else ">"
        if self.wide:
            phoff, = struct.unpack_from(self.e + "Q", head, 0x20)
            phentsize, phnum = struct.unpack_from(self.e + "HH", head, 0x36)
        else:
            phoff, = struct.unpack_from(self.e + "I", head, 0x1C)
            phentsize, phnum = struct.unpack_from(self.e + "HH", head, 0x2A)
        size = phentsize * phnum
        raw = head[phoff:phoff + size] if phoff + size <= len(head) else blob.read(phoff, size)
        self.loads: list[tuple[int, int, int, int]] = []  # (vaddr, offset, filesz, flags)
        for i in range(phnum):
            at = i * phentsize
            if self.wide:
                if at + 56 > len(raw):
                    break
                typ, flags, off, vaddr, _pa, filesz = struct.unpack_from(self.e + "IIQQQQ", raw, at)
            else:
                if at + 32 > len(raw):
                    break
                typ, off, vaddr, _pa, filesz, _m, flags = struct.unpack_from(self.e + "IIIIIII", raw, at)
            if typ == _PT_LOAD:
                self.loads.append((vaddr, off, filesz, flags))

    def data_segment(self) -> tuple[int, int] | None:
        for _vaddr, off, filesz, flags in self.loads:
            if flags & (_PF_X | _PF_W) == _PF_W:
                return off, filesz
        return None

    def read_addr(self, addr: int, n: int) -> bytes:
        for vaddr, off, filesz, _f in self.loads:
            if vaddr <= addr < vaddr + filesz:
                return self.blob.read(off + addr - vaddr, min(n, vaddr + filesz - addr))
        return b""


def _uvarint(b: bytes, at: int) -> tuple[int, int]:
    x = shift = 0
    while at < len(b) and shift < 64:
        c = b[at]
        at += 1
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x, at
        shift += 7
    raise ValueError("bad varint")


def _inline(b: bytes, at: int) -> tuple[bytes, int]:
    n, at = _uvarint(b, at)
    if n > MAX_STRING or at + n > len(b):
        raise ValueError("string out of range")
    return b[at:at + n], at + n


def read(blob: Blob) -> tuple[str, str] | None:
    """(Go version, module info text) of a Go executable; None for anything else."""
    head = blob.read(0, HEAD)
    if len(head) < 64 or head[:4] != b"\x7fELF":
        return None
    elf = _Elf(blob, head)
    seg = elf.data_segment()
    if seg is None:
        return None
    data = blob.read(seg[0], min(seg[1], SEARCH))
    i = data.find(_MAGIC)
    while i >= 0 and i % 16:
        i = data.find(_MAGIC, i + 1)
    if i < 0 or len(data) - i < 32:
        return None
    data = data[i:]
    ptr_size, flags = data[14], data[15]
    if flags & 2:  # Go 1.18+: inline varint-prefixed strings
        if len(data) < 64:  # the strings may run past the first read
            data = blob.read(seg[0] + i, MAX_STRING)
        vers, at = _inline(data, 32)
        mod, _ = _inline(data, at)
    else:
        if ptr_size not in (4, 8):
            return None
        e = ">" if data[15] else elf.e
        fmt = e + ("Q" if ptr_size == 8 else "I")

        def ptr(b: bytes, at: int = 0) -> int:
            return struct.unpack_from(fmt, b, at)[0] if len(b) >= at + ptr_size else 0

        def string(addr: int) -> bytes:
            hdr = elf.read_addr(addr, 2 * ptr_size)
            p, n = ptr(hdr), ptr(hdr, ptr_size)
            if n > MAX_STRING:
                return b""
            return elf.read_addr(p, n)

        vers, mod = string(ptr(data, 16)), string(ptr(data, 16 + ptr_size))
    if not vers:
        return None
    # the module info sits between two 16-byte sentinels
    if len(mod) >= 33 and mod[-17:-16] == b"\n":
        mod = mod[16:-16]
    else:
        mod = b""
    return vers.decode("utf-8", "replace"), mod.decode("utf-8", "replace")


def _go_purl(path: str, version: str | None) -> str:
    ns, _, name = path.rpartition("/")
    v = version if version and version != "(devel)" else None
    return purl("golang", ns or None, name, v)


def parse(blob: Blob) -> list[Package]:
    if blob.size < MIN_SIZE:
        return []
    try:
        got = read(blob)
    except (ValueError, struct.error, IndexError):
        return []
    if got is None:
        return []
    go_version, modinfo = got
    main: tuple[str, str] | None = None
    deps: list[list[str]] = []
    for line in modinfo.splitlines():
        f = line.split("\t")
        if f[0] == "mod" and len(f) >= 3:
            main = (f[1], f[2])
        elif f[0] == "dep" and len(f) >= 3:
            deps.append([f[1], f[2]])
        elif f[0] == "=>" and len(f) >= 2 and deps:
            # a replacement by another module wins; by a local directory, the module keeps
            # its path and is built from source: "(devel)", as for a main module
            local = f[1].startswith((".", "/")) or len(f) < 3 or not f[2]
            deps[-1] = [deps[-1][0], "(devel)"] if local else [f[1], f[2]]
    out = [Package("go", "stdlib", go_version, blob.path, main[0] if main else None, None,
                   purl("golang", None, "stdlib", go_version))]
    if main:
        out.append(Package("go", main[0], main[1], blob.path, None, None, _go_purl(*main)))
    for path, version in deps:
        out.append(Package("go", path, version, blob.path, main[0] if main else None, None,
                           _go_purl(path, version)))
    return out
