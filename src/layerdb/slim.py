"""Slim: the paths an image really needs, repacked from the cache into a new one-layer image.

What is kept, and why (each kept path carries its reason):

- the entrypoint, resolved as ``extract --entrypoint`` resolves it (Entrypoint/Cmd, WorkingDir,
  the image's PATH), every symlink on the way kept as a symlink;
- for an ELF file: its program interpreter (``PT_INTERP``) and every ``DT_NEEDED`` library,
  transitively, found the way the image's own loader would find it: ``DT_RPATH`` (of the object
  and the objects that loaded it, when it has no ``DT_RUNPATH``), the image's
  ``LD_LIBRARY_PATH``, ``DT_RUNPATH`` (``$ORIGIN``, ``$LIB``, ``$PLATFORM`` expanded), the
  image's ``/etc/ld.so.cache`` (or, without one, the directories of ``/etc/ld.so.conf`` and its
  includes), then the default directories for the ELF class and machine; musl's
  ``/etc/ld-musl-ARCH.path`` for a musl interpreter. A candidate of another ELF class or machine
  is skipped, as the loader skips it;
- for a script: its ``#!`` interpreter, and for ``/usr/bin/env NAME`` the NAME found through
  the image's PATH;
- what runs at start without any header naming it (only with the entrypoint, not with
  ``--no-entrypoint``), when the image has it:
  ``/etc/passwd`` and ``/etc/group`` (the runtime resolves ``User`` in them, and libc's
  ``getpwuid`` reads them: whole files, so their bytes stay the image's),
  ``/etc/ld.so.cache`` and ``/etc/nsswitch.conf`` with the NSS modules it names for
  passwd, group and hosts (glibc ``dlopen``s ``libnss_NAME.so.2`` at run time; a module or its
  needs missing is a warning, as glibc skips a module it cannot load), for a glibc program;
  the CA bundle (``/etc/ssl/certs/ca-certificates.crt``, ``/etc/pki/tls/certs/ca-bundle.crt``,
  ``/etc/ssl/cert.pem``): TLS clients read it and no header says so.
  Not kept: ``/etc/shadow`` (secrets), locales, gconv modules, time zones, Python or other
  language libraries: name them with ``--keep``.
- ``--keep PATH`` (a file or a directory with all below it) and ``--keep-sql QUERY`` (its first
  column: paths) with their own needs when they are executables or shared objects.

Every parent directory the image has an entry for is kept with its mode and owner; hardlinks
stay hardlinks (their target is kept too); extended attributes (``security.capability``) are
carried. Bytes are read from the cache and checked against the catalog's sha256.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .digest import Digest
from .elf import ElfError, ElfInfo, expand_origin, is_elf, read_elf
from .errors import DigestMismatch, LayerdbError, PathNotFound, UsageError
from .extract import DEFAULT_PATH, MAX_LINKS, PathResolver, entrypoint_path
from .image_writer import (
    COMPRESSIONS,
    FORMATS,
    LayerBlob,
    WrittenImage,
    canonical_json,
    check_output,
    write_image,
    write_layer,
)
from .ldcache import CacheEntry, LdCacheError, parse_ld_cache, parse_ld_conf
from .merged import FsEntry, MergedView, open_view
from .selection import ImageRow
from .store import BlobStore, StoredLayer

MAX_SMALL = 1 << 20  # config files read whole (ld.so.cache, nsswitch.conf, ld.so.conf)
MAX_ANALYSES = 100_000
SHEBANG_MAX = 256  # what Linux reads of a #! line (BINPRM_BUF_SIZE)
NSS_DATABASES = ("passwd", "group", "hosts")
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
              "/etc/ssl/cert.pem")
#: Debian/Ubuntu multiarch directory names per (ELF class, machine, little endian)
TRIPLETS = {
    (64, "EM_X86_64", True): "x86_64-linux-gnu", (64, "EM_AARCH64", True): "aarch64-linux-gnu",
    (32, "EM_386", True): "i386-linux-gnu", (32, "EM_ARM", True): "arm-linux-gnueabihf",
    (64, "EM_PPC64", True): "powerpc64le-linux-gnu", (64, "EM_S390", False): "s390x-linux-gnu",
    (64, "EM_RISCV", True): "riscv64-linux-gnu", (32, "EM_X86_64", True): "x86_64-linux-gnux32",
    (64, "EM_MIPS", True): "mips64el-linux-gnuabi64", (64, "EM_LOONGARCH", True): "loongarch64-linux-gnu",
}
MUSL_ARCH = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64", "EM_386": "i386", "EM_ARM": "armhf",
             "EM_PPC64": "ppc64le", "EM_S390": "s390x", "EM_RISCV": "riscv64"}


# a reference as docker names images: [host[:port]/]path[:tag] (distribution's grammar, simplified)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = re.compile(rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
                  r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")


class SlimError(LayerdbError):
    """The image lacks something the kept paths need, or the request cannot be met."""


# Reading file bytes from the cache --------------------------------------------------------

class _EntryStream(io.RawIOBase):
    """A seekable read-only view of one entry's bytes in a cached layer (what pyelftools needs),
    read in blocks with a small LRU: reading headers costs a few blocks, not the file."""

    BLOCK = 1 << 18
    KEEP = 16  # blocks held: at most 4 MiB

    def __init__(self, layer: StoredLayer, offset: int, size: int) -> None:
        self._layer, self._offset, self._size = layer, offset, size
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def _block(self, i: int) -> bytes:
        b = self._blocks.get(i)
        if b is None:
            start = i * self.BLOCK
            b = self._layer.read_at(self._offset + start, min(self.BLOCK, self._size - start))
            self._blocks[i] = b
            if len(self._blocks) > self.KEEP:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(i)
        return b

    def read(self, n: int | None = -1) -> bytes:
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        out = []
        while self._pos < end:
            i = self._pos // self.BLOCK
            blk = self._block(i)
            lo = self._pos - i * self.BLOCK
            piece = blk[lo: lo + end - self._pos]
            if not piece:
                break
            out.append(piece)
            self._pos += len(piece)
        return b"".join(out)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class ContentReader:
    """Reads entries' bytes from the cache: ``iter_content`` (verified against sha256),
    ``head`` (the first bytes, for magic numbers), ``stream`` (seekable, for ELF headers)."""

    def __init__(self, root: str) -> None:
        self.store = BlobStore(os.path.join(root, "blobs"))
        self._layers: dict[str, StoredLayer] = {}

    def _layer(self, diff_id: str) -> StoredLayer:
        layer = self._layers.get(diff_id)
        if layer is None:
            layer = self._layers[diff_id] = self.store.open(Digest(diff_id))
        return layer

    def close(self) -> None:
        for layer in self._layers.values():
            layer.close()
        self._layers.clear()

    def _stored_size(self, e: FsEntry) -> int:
        return sum(n for _, n in e.sparse) if e.sparse else e.size

    def iter_content(self, e: FsEntry) -> Iterator[bytes]:
        """The bytes of a regular file (or of a hardlink's target), sparse holes filled,
        checked against the catalog's sha256 (``DigestMismatch`` after the last chunk)."""
        h = hashlib.sha256()
        if e.size:
            if e.content_layer is None or e.content_offset is None:
                raise LayerdbError(f"{e.path}: the catalog has no content for it")
            stored = self._layer(e.content_layer).iter_range(e.content_offset, self._stored_size(e))
            for chunk in (_unsparse(stored, e.sparse, e.size) if e.sparse else stored):
                h.update(chunk)
                yield chunk
        if e.sha256 is None:
            raise LayerdbError(f"{e.path}: hardlink to {e.linkname}, which has no content")
        if h.hexdigest() != e.sha256:
            raise DigestMismatch(f"{e.path}: cached bytes hash to {h.hexdigest()}, "
                                 f"catalog says {e.sha256}")

    def read_small(self, e: FsEntry, limit: int = MAX_SMALL) -> bytes:
        if e.size > limit:
            raise SlimError(f"{e.path}: {e.size} bytes is more than the {limit} read for it")
        return b"".join(self.iter_content(e))

    def head(self, e: FsEntry, n: int) -> bytes:
        if not e.size or e.content_layer is None or e.content_offset is None or e.sparse:
            return b""
        return self._layer(e.content_layer).read_at(e.content_offset, min(n, e.size))

    def stream(self, e: FsEntry) -> _EntryStream:
        assert e.content_layer is not None and e.content_offset is not None
        return _EntryStream(self._layer(e.content_layer), e.content_offset, e.size)


def _unsparse(stored: Iterator[bytes], regions: Sequence[tuple[int, int]], size: int) -> Iterator[bytes]:
    """A sparse file's stored regions laid out at their offsets, zeros between, ``size`` long."""
    buf = b""
    pos = 0
    for off, length in regions:
        if off > pos:
            yield from _zeros(off - pos)
            pos = off
        need = length
        while need:
            if not buf:
                buf = next(stored, b"")
                if not buf:
                    raise LayerdbError("sparse file shorter than its map")
            take, buf = buf[:need], buf[need:]
            need -= len(take)
            pos += len(take)
            yield take
    if size > pos:
        yield from _zeros(size - pos)


def _zeros(n: int) -> Iterator[bytes]:
    while n > 0:
        k = min(n, 1 << 20)
        yield bytes(k)
        n -= k


# The plan: what is kept, and why ----------------------------------------------------------

@dataclass
class Kept:
    entry: FsEntry
    reason: str


@dataclass
class SlimPlan:
    image: ImageRow
    config: dict[str, Any]
    kept: dict[str, Kept] = field(default_factory=dict)  # display path -> what and why
    warnings: list[str] = field(default_factory=list)
    image_size: int = 0  # the source image's layers, uncompressed
    image_compressed: int = 0  # and as stored in its archive
    xattrs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # kept path -> its xattrs

    @property
    def kept_bytes(self) -> int:
        """Bytes of the kept files (a hardlink's bytes counted once)."""
        seen: set[str] = set()
        total = 0
        for k in self.kept.values():
            e = k.entry
            if e.type == "hardlink" and e.linkname in self.kept:
                continue
            if e.type in ("file", "hardlink") and e.path not in seen:
                seen.add(e.path)
                total += e.size
        return total

    def rows(self) -> list[tuple[str, str, int, str]]:
        """(path, type, size, reason) per kept path, sorted by path bytes."""
        return [(k.entry.path, k.entry.type, k.entry.size if k.entry.type in ("file", "hardlink") else 0,
                 k.reason) for k in sorted(self.kept.values(), key=lambda k: k.entry.raw)]


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


class _Planner:
    def __init__(self, view: MergedView, img: ImageRow, config: dict[str, Any],
                 reader: ContentReader, allow_missing: bool) -> None:
        self.view, self.img, self.reader = view, img, reader
        self.allow_missing = allow_missing
        cfg = config.get("config") or {}
        self.env = {e.split("=", 1)[0]: e.split("=", 1)[1] for e in (cfg.get("Env") or [])
                    if isinstance(e, str) and "=" in e}
        self.workdir = cfg.get("WorkingDir") or img.working_dir or "/"
        self.path_dirs = [d for d in self.env.get("PATH", DEFAULT_PATH).split(":") if d]
        self.kept: dict[str, Kept] = {}
        self.warnings: list[str] = []
        self._rows: dict[str, FsEntry | None] = {}
        self._implied: set[str] = set()  # directories no layer has an entry for
        self._elf: dict[tuple[str | None, int | None], ElfInfo | None] = {}
        self._done: set[tuple[str, tuple]] = set()
        self._cache: list[CacheEntry] | None = None
        self._conf_dirs: list[str] | None = None
        self.main_elf: ElfInfo | None = None
        self.glibc = False
        self.musl = False

    # the image's filesystem -------------------------------------------------------------
    def get(self, path: str) -> FsEntry | None:
        if path not in self._rows:
            self._prefetch(path)
        return self._rows[path]

    def _prefetch(self, path: str) -> None:
        parts = _split(path)
        want = [p for p in ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
                if p not in self._rows]
        if want:
            got = self.view.lookup(self.img.id, want)
            for p in want:
                self._rows[p] = got.get(p)

    def _implied_dir(self, path: str) -> FsEntry:
        self._implied.add(path)
        return FsEntry.implied_dir(path)

    def resolve(self, path: str, follow_last: bool = True) -> tuple[FsEntry, list[FsEntry]]:
        """The entry ``path`` names, and every symlink followed on the way (in order). The
        walk is ``extract.PathResolver.resolve``'s (same link limit, implied directories, ``..``),
        which does not report the links it follows. Raises ``PathNotFound``."""
        self._prefetch(path)
        queue = _split(path)
        cur = "/"
        links: list[FsEntry] = []
        row: FsEntry = self.get("/") or self._implied_dir("/")
        while queue:
            comp = queue.pop(0)
            if comp == "..":
                cur = posixpath.dirname(cur) if cur != "/" else "/"
                row = self.get(cur) or self._implied_dir(cur)
                continue
            if row.type != "dir":
                raise PathNotFound(f"{path}: {cur} is not a directory in the image")
            nxt = posixpath.join(cur, comp)
            found = self.get(nxt)
            if found is None and queue:
                found = self._implied_dir(nxt)
            if found is None:
                raise PathNotFound(f"{path}: no such file or directory in the image")
            row = found
            if row.type == "symlink" and (queue or follow_last):
                links.append(row)
                if len(links) > MAX_LINKS:
                    raise PathNotFound(f"{path}: too many levels of symbolic links")
                target = row.linkname or ""
                if target.startswith("/"):
                    cur = "/"
                row = self.get(cur) or self._implied_dir(cur)
                queue = _split(target) + queue
                self._prefetch(posixpath.join(cur, *_split(target)) if _split(target) else cur)
                continue
            cur = nxt
        return row, links

    def exists(self, path: str) -> FsEntry | None:
        try:
            return self.resolve(path)[0]
        except PathNotFound:
            return None

    # keeping ----------------------------------------------------------------------------
    def _add(self, e: FsEntry, reason: str) -> bool:
        if e.path in self.kept or e.path in self._implied:  # implied directories: not entries
            return False
        self.kept[e.path] = Kept(e, reason)
        if e.type == "hardlink" and e.linkname:
            target = self.get(e.linkname)
            if target is not None and target.type in ("file", "hardlink") and target.sha256 == e.sha256:
                self._add(target, f"hardlink target of {e.path}")
        return True

    def keep(self, path: str, reason: str, analyze: bool | None = True, soft: bool = False) -> FsEntry:
        """Keep what ``path`` names (with the symlinks on the way) and, when ``analyze``, what
        it needs (``None``: only for what looks executable: an x bit, or a ``.so`` name). A
        directory is kept with everything below it, its executables analysed."""
        entry, links = self.resolve(path)
        for link in links:
            self._add(link, f"symlink to {entry.path}")
        self._add(entry, reason)
        if entry.type == "dir":
            for e in self.view.subtree(self.img.id, entry.path):
                if e.path == entry.path:
                    continue
                self._add(e, reason)
                if analyze is not False and e.type in ("file", "hardlink") and _looks_executable(e):
                    self.analyze(e, e.path, soft=soft)
        elif entry.type in ("file", "hardlink") and (analyze or (analyze is None and _looks_executable(entry))):
            self.analyze(entry, entry.path, soft=soft)
        return entry

    def keep_file(self, path: str, reason: str, soft: bool = False) -> FsEntry:
        """``keep`` for what must be a file (an interpreter): anything else is ``PathNotFound``."""
        entry, _ = self.resolve(path)
        if entry.type not in ("file", "hardlink"):
            raise PathNotFound(f"{path}: is a {entry.type}, not a file")
        return self.keep(path, reason, soft=soft)

    def _missing(self, msg: str, soft: bool) -> None:
        if soft or self.allow_missing:
            self.warnings.append(msg)
        else:
            raise SlimError(msg + " (--allow-missing to go on without it)")

    # what a file needs --------------------------------------------------------------------
    def elf_info(self, e: FsEntry) -> ElfInfo | None:
        key = (e.content_layer, e.content_offset)
        if key not in self._elf:
            info = None
            if e.type in ("file", "hardlink") and is_elf(self.reader.head(e, 4)):
                info = read_elf(self.reader.stream(e), e.path)
            self._elf[key] = info
        return self._elf[key]

    def analyze(self, e: FsEntry, origin_path: str, chain: tuple[tuple[str, tuple[str, ...]], ...] = (),
                soft: bool = False) -> None:
        """Keep what ``e`` needs to run (loaded as ``origin_path``; ``chain``: the origin and
        DT_RPATH of each object that loaded it, nearest first)."""
        key = (e.path, chain)
        if key in self._done:
            return
        if len(self._done) >= MAX_ANALYSES:
            raise SlimError(f"more than {MAX_ANALYSES} objects to analyse: not a real image")
        self._done.add(key)
        head = self.reader.head(e, SHEBANG_MAX)
        if head.startswith(b"#!"):
            self._script(e, head)
            return
        if not is_elf(head):
            return
        try:
            info = self.elf_info(e)
        except ElfError as err:
            self._missing(str(err), soft)
            return
        if info is None:
            return
        if info.interp:
            if self.main_elf is None:
                self.main_elf = info
            if "ld-musl" in info.interp:
                self.musl = True
            else:
                self.glibc = True
            try:
                self.keep_file(info.interp, f"interpreter of {e.path}", soft=soft)
            except PathNotFound:
                self._missing(f"{e.path}: its interpreter {info.interp} is not in the image", soft)
        origin = posixpath.dirname(origin_path) or "/"
        # only objects with a DT_RPATH matter to their libraries' search (and keeping the
        # chain short keeps each library analysed once)
        nxt = chain if info.runpath or not info.rpath else ((origin, info.rpath),) + chain
        libs = []
        for soname in info.needed:  # breadth first, as the loader loads them
            found = self.find_library(soname, info, origin, chain)
            if found is None:
                self._missing(f"{e.path} needs {soname}, which the image does not have", soft)
                continue
            libs.append((self.keep(found, f"needed by {e.path}", analyze=False), found))
        for lib, found in libs:
            self.analyze(lib, found, nxt, soft=soft)

    def _script(self, e: FsEntry, head: bytes) -> None:
        line = head[2:].split(b"\n", 1)[0].strip(b" \t\r")
        if not line:
            return
        interp, _, arg = line.replace(b"\t", b" ").partition(b" ")
        ipath = interp.decode("utf-8", "surrogateescape")
        if not ipath.startswith("/"):
            ipath = posixpath.join(self.workdir, ipath)
        try:
            self.keep_file(ipath, f"interpreter of {e.path}")
        except PathNotFound:
            self._missing(f"{e.path}: its interpreter {ipath} is not in the image", False)
            return
        if posixpath.basename(ipath) != "env":
            return
        words = arg.decode("utf-8", "surrogateescape").split()
        if words and words[0].startswith("-S"):
            words = ([words[0][2:]] if words[0] != "-S" else []) + words[1:]
        prog = next((w for w in words if not w.startswith("-") and "=" not in w), None)
        if prog is None:
            return
        found = self.which(prog)
        if found is None:
            self._missing(f"{e.path}: {prog} (run by {ipath}) is not in the image's PATH "
                          f"({':'.join(self.path_dirs)})", False)
            return
        self.keep_file(found, f"interpreter of {e.path} (via {ipath})")

    def which(self, prog: str) -> str | None:
        if "/" in prog:
            p = prog if prog.startswith("/") else posixpath.join(self.workdir, prog)
            return p if self.exists(p) is not None else None
        for d in self.path_dirs:
            cand = posixpath.join(d if d.startswith("/") else posixpath.join(self.workdir, d), prog)
            e = self.exists(cand)
            if e is not None and e.type in ("file", "hardlink"):
                return cand
        return None

    # the loader's search ------------------------------------------------------------------
    def find_library(self, soname: str, info: ElfInfo, origin: str,
                     chain: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> str | None:
        """The path the image's loader would open for ``soname`` needed by an object like
        ``info`` loaded from directory ``origin``; None when there is none."""
        if "/" in soname:
            p = soname if soname.startswith("/") else posixpath.join(self.workdir, soname)
            return p if self._usable(p, info) else None
        for d in self._search_dirs(info, origin, chain):
            cand = posixpath.join(d, soname)
            if self._usable(cand, info):
                return cand
        if not self.musl:
            cache = self._ld_cache()
            if cache:
                for entry in sorted((c for c in cache if c.soname == soname), key=lambda c: c.hwcap != 0):
                    if self._usable(entry.path, info):
                        return entry.path
            else:
                for d in self._ld_conf_dirs():
                    if self._usable(posixpath.join(d, soname), info):
                        return posixpath.join(d, soname)
        for d in self._default_dirs(info):
            cand = posixpath.join(d, soname)
            if self._usable(cand, info):
                return cand
        return None

    def _search_dirs(self, info: ElfInfo, origin: str,
                     chain: tuple[tuple[str, tuple[str, ...]], ...]) -> list[str]:
        def expand(entries: Sequence[str], org: str) -> list[str]:
            out = []
            for x in entries:
                d = expand_origin(x, org, info.elfclass)
                out.append(d if d.startswith("/") else posixpath.join(self.workdir, d))
            return out

        dirs: list[str] = []
        if not info.runpath:
            dirs += expand(info.rpath, origin)
            for org, rpath in chain:
                dirs += expand(rpath, org)
        lib_path = self.env.get("LD_LIBRARY_PATH", "")
        dirs += [d if d.startswith("/") else posixpath.join(self.workdir, d)
                 for d in lib_path.replace(";", ":").split(":") if d]
        dirs += expand(info.runpath, origin)
        return dirs

    def _usable(self, path: str, want: ElfInfo) -> bool:
        e = self.exists(path)
        if e is None or e.type not in ("file", "hardlink"):
            return False
        try:
            info = self.elf_info(e)
        except ElfError:
            return False
        return info is not None and info.compatible(want)

    def _ld_cache(self) -> list[CacheEntry]:
        if self._cache is None:
            self._cache = []
            e = self.exists("/etc/ld.so.cache")
            if e is not None and e.type in ("file", "hardlink"):
                try:
                    self._cache = parse_ld_cache(self.reader.read_small(e, 64 << 20))
                except (LdCacheError, SlimError) as err:
                    self.warnings.append(f"/etc/ld.so.cache ignored: {err}")
        return self._cache

    def _ld_conf_dirs(self) -> list[str]:
        if self._conf_dirs is None:
            self._conf_dirs = []
            seen: set[str] = set()
            todo = ["/etc/ld.so.conf"]
            while todo and len(seen) < 256:
                path = todo.pop(0)
                if path in seen:
                    continue
                seen.add(path)
                e = self.exists(path)
                if e is None or e.type not in ("file", "hardlink"):
                    continue
                try:
                    text = self.reader.read_small(e).decode("utf-8", "replace")
                except SlimError:
                    continue
                dirs, includes = parse_ld_conf(text)
                self._conf_dirs += dirs
                for pattern in includes:
                    todo += self._glob(pattern)
        return self._conf_dirs

    def _glob(self, pattern: str) -> list[str]:
        """``include /etc/ld.so.conf.d/*.conf``: the files of the directory that match, sorted."""
        import fnmatch

        d, pat = posixpath.split(pattern)
        ent = self.exists(d)
        if ent is None or ent.type != "dir":
            return []
        names = sorted(e.path for e in self.view.subtree(self.img.id, ent.path)
                       if posixpath.dirname(e.path) == ent.path and fnmatch.fnmatch(posixpath.basename(e.path), pat))
        return names

    def _default_dirs(self, info: ElfInfo) -> list[str]:
        if self.musl:
            arch = MUSL_ARCH.get(info.machine, "")
            e = self.exists(f"/etc/ld-musl-{arch}.path")
            if e is not None and e.type in ("file", "hardlink"):
                try:
                    text = self.reader.read_small(e).decode("utf-8", "replace")
                    return [d for d in text.replace(":", "\n").split() if d.startswith("/")]
                except SlimError:
                    pass
            return ["/lib", "/usr/local/lib", "/usr/lib"]
        triplet = TRIPLETS.get((info.elfclass, info.machine, info.little_endian))
        dirs = [f"/lib/{triplet}", f"/usr/lib/{triplet}"] if triplet else []
        if info.elfclass == 64:
            dirs += ["/lib64", "/usr/lib64"]
        return dirs + ["/lib", "/usr/lib"]

    # what no header names -------------------------------------------------------------------
    def runtime_extras(self) -> None:
        for path, why in (("/etc/passwd", "run-time: users for User and getpwuid"),
                          ("/etc/group", "run-time: groups for User and getgrgid")):
            self._keep_if_there(path, why)
        if self.glibc:
            self._keep_if_there("/etc/ld.so.cache", "run-time: read by the dynamic loader")
            self._nss()
        if self.musl and self.main_elf is not None:
            arch = MUSL_ARCH.get(self.main_elf.machine, "")
            self._keep_if_there(f"/etc/ld-musl-{arch}.path", "run-time: read by the musl loader")
        for path in CA_BUNDLES:
            self._keep_if_there(path, "run-time: CA certificates for TLS")

    def _keep_if_there(self, path: str, why: str) -> FsEntry | None:
        if self.exists(path) is None:
            return None
        return self.keep(path, why, analyze=False)

    def _nss(self) -> None:
        conf = self._keep_if_there("/etc/nsswitch.conf", "run-time: read by libc's NSS")
        if conf is None or conf.type not in ("file", "hardlink") or self.main_elf is None:
            return
        try:
            text = self.reader.read_small(conf).decode("utf-8", "replace")
        except SlimError as err:
            self.warnings.append(str(err))
            return
        services: list[tuple[str, str]] = []
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            db, sep, rest = line.partition(":")
            if not sep or db.strip() not in NSS_DATABASES:
                continue
            for word in rest.split():
                if word.startswith("[") or word.endswith("]") or "=" in word:
                    continue
                if (word, db.strip()) not in services:
                    services.append((word, db.strip()))
        for svc, db in services:
            soname = f"libnss_{svc}.so.2"
            found = self.find_library(soname, self.main_elf, "/")
            if found is None:
                continue  # built into libc (files, dns since glibc 2.34) or absent: glibc goes on
            lib = self.keep(found, f"run-time: NSS module for {db} (/etc/nsswitch.conf)", analyze=False)
            self.analyze(lib, found, soft=True)


def _looks_executable(e: FsEntry) -> bool:
    name = e.name
    return bool(e.mode & 0o111) or name.endswith(b".so") or b".so." in name


# Building the plan and the image ----------------------------------------------------------

def _image_meta(cat: Any, img: ImageRow) -> tuple[dict[str, Any], int, int]:
    """The image's config (parsed) and its layers' sizes, from the catalog."""
    rows = cat.query("select config, size, compressed_size from image_meta where id = $id",
                     {"id": img.id})[1]
    if not rows or not rows[0][0]:
        raise SlimError(f"image {img.name}: the catalog has no config for it")
    try:
        config = json.loads(rows[0][0])
    except ValueError as e:
        raise SlimError(f"image {img.name}: its config is not JSON: {e}") from e
    if not isinstance(config, dict):
        raise SlimError(f"image {img.name}: its config is not a JSON object")
    return config, int(rows[0][1] or 0), int(rows[0][2] or 0)


def _xattrs(cat: Any, img: ImageRow, kept: dict[str, Kept]) -> dict[str, dict[str, bytes]]:
    """The extended attributes (``security.capability``...) of the kept paths that have any:
    the merged view behind ``MergedView`` does not carry them, the catalog's ``fs`` does."""
    rows = cat.query("select path, xattrs from fs where image_id = $id and cardinality(xattrs) > 0",
                     {"id": img.id})[1]
    out: dict[str, dict[str, bytes]] = {}
    for path, xs in rows:
        if path in kept and xs:
            items = xs.items() if isinstance(xs, dict) else zip(xs["key"], xs["value"])
            out[path] = {str(k): bytes(v) for k, v in items}
    return out


def _sql_paths(cat: Any, img: ImageRow, query: str) -> list[str]:
    """The first column of ``query`` (``:image`` bound to the image's id), on the catalog's
    read-only connection (DuckDB refuses any write to the catalog on it)."""
    from .reports import to_duckdb

    text = to_duckdb(query)
    params = {"image": img.id} if "$image" in text else {}
    cols, rows = cat.query(text, params)
    if not cols:
        raise UsageError("--keep-sql: the query returns no columns")
    return [r[0] for r in rows if isinstance(r[0], str)]


def plan(image: str | None, catalog_root: str | None = None, platform: str | None = None,
         keep: Sequence[str] = (), keep_sql: str | None = None, entrypoint: bool = True,
         allow_missing: bool = False) -> tuple[SlimPlan, str, ContentReader]:
    """What slimming ``image`` keeps. Returns the plan, the catalog root and an open reader
    (the caller closes it)."""
    from .catalog import Catalog
    from .catalog.layout import Layout

    root = Layout.at(catalog_root).root
    view = open_view(root, image)
    reader = ContentReader(root)
    cat = None
    try:
        img = view.resolve_image(image, platform)
        cat = Catalog(root, sandbox=True)  # reads only: the config, the sizes, --keep-sql
        config, size, compressed = _image_meta(cat, img)
        p = _Planner(view, img, config, reader, allow_missing)
        if not entrypoint and not keep and not keep_sql:
            raise UsageError("--no-entrypoint keeps only what --keep or --keep-sql name: give one")
        if entrypoint:
            argv = (img.entrypoint or []) + (img.cmd or [])
            if not argv and not keep and not keep_sql:
                raise SlimError(f"image {img.name} has no Entrypoint or Cmd: name what to keep "
                                "with --keep (and --no-entrypoint)")
            if argv:
                exe = entrypoint_path(PathResolver(view, img.id), img)
                entry, _ = p.resolve(exe)
                if entry.type not in ("file", "hardlink"):
                    raise SlimError(f"image {img.name}: its entrypoint {exe} is a {entry.type}")
                p.keep(exe, "entrypoint")
        for path in keep:
            full = path if path.startswith("/") else posixpath.join(p.workdir, path)
            try:
                p.keep(posixpath.normpath(full), "--keep", analyze=None)
            except PathNotFound as e:
                raise PathNotFound(f"--keep {path}: not in image {img.name} ({e})") from e
        if keep_sql:
            for path in _sql_paths(cat, img, keep_sql):
                try:
                    p.keep(path, "--keep-sql", analyze=None)
                except PathNotFound as e:
                    raise PathNotFound(f"--keep-sql: {path} is not in image {img.name} "
                                       "(filter with image_id = :image)") from e
        if entrypoint:
            p.runtime_extras()
        _ancestors(p.kept, view, img.id)
        result = SlimPlan(img, config, p.kept, p.warnings, size, compressed,
                          _xattrs(cat, img, p.kept))
    except BaseException:
        reader.close()
        raise
    finally:
        view.close()
        if cat is not None:
            cat.close()
    return result, root, reader


def _tar_name(raw: bytes) -> str:
    rel = raw.lstrip(b"/")
    return os.fsdecode(rel) if rel else "."


def write_layer_tar(out: BinaryIO, kept: dict[str, Kept], reader: ContentReader,
                    xattrs: dict[str, dict[str, bytes]] | None = None) -> None:
    """The kept entries as one tar: sorted by path bytes, hardlinks after everything else
    (their targets come first), times, modes, owners and xattrs (``SCHILY.xattr.*``) as in
    the image."""
    entries = sorted((k.entry for k in kept.values()), key=lambda e: e.raw)
    links = [e for e in entries if e.type == "hardlink" and e.linkname in kept
             and kept[e.linkname].entry.type == "file"]
    link_set = {e.path for e in links}
    # mode "w", not "w|": ``out`` is not seekable but counts (tell), and "w|" re-buffers every byte
    with tarfile.open(  # type: ignore[call-overload]  # copybufsize: a TarFile argument since 3.8
            fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
            errors="surrogateescape", copybufsize=1 << 20) as tf:
        for e in [x for x in entries if x.path not in link_set] + links:
            ti = tarfile.TarInfo(_tar_name(e.raw))
            ti.mode = e.mode & 0o7777
            ti.mtime = e.mtime
            ti.uid, ti.gid = e.uid, e.gid
            ti.uname, ti.gname = e.uname, e.gname
            if xattrs and e.path in xattrs:
                ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                  for k, v in sorted(xattrs[e.path].items())}
            data = None
            if e.type == "dir":
                ti.type = tarfile.DIRTYPE
            elif e.path in link_set:
                ti.type = tarfile.LNKTYPE
                ti.linkname = _tar_name(kept[e.linkname or ""].entry.raw)
            elif e.type in ("file", "hardlink"):
                ti.size = e.size
                data = _Chunks(reader.iter_content(e))
            elif e.type == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e.linkname or ""
            elif e.type == "fifo":
                ti.type = tarfile.FIFOTYPE
            elif e.type in ("char", "block"):
                ti.type = tarfile.CHRTYPE if e.type == "char" else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = e.devmajor or 0, e.devminor or 0
            else:
                continue
            tf.addfile(ti, data)  # type: ignore[arg-type]
            if data is not None:
                data.finish()


class _Chunks:
    """A file object over a chunk iterator (what ``tarfile.addfile`` reads from); a chunk is
    sliced where it lies, never copied into a growing buffer."""

    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self._cur = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        want = n
        while want != 0:
            if not self._cur:
                nxt = next(self._it, None)
                if nxt is None:
                    break
                self._cur = memoryview(nxt)
            take = len(self._cur) if want < 0 else min(want, len(self._cur))
            parts.append(bytes(self._cur[:take]))
            self._cur = self._cur[take:]
            if want > 0:
                want -= take
        return b"".join(parts)

    def finish(self) -> None:
        """Run the iterator to its end: that is where the sha256 is checked."""
        for _ in self._it:
            raise LayerdbError("file longer than the catalog says")


def _ancestors(kept: dict[str, Kept], view: MergedView, image_id: str) -> None:
    """Add every parent directory the image has an entry for (reason ``parent directory``)."""
    want: set[str] = set()
    for path in kept:
        d = posixpath.dirname(path)
        while True:
            want.add(d)
            if d == "/":
                break
            d = posixpath.dirname(d)
    want -= set(kept)
    found = view.lookup(image_id, sorted(want))
    for path in sorted(found):
        e = found[path]
        if e.type == "dir":
            kept[path] = Kept(e, "parent directory")


def new_config(plan_: SlimPlan, layer: LayerBlob, summary: str) -> tuple[bytes, dict[str, str]]:
    """The slim image's config: platform, the run settings copied, one layer, one history
    entry. Timestamps are the source's (no time of day of the slim run goes in)."""
    src = plan_.config
    cfg = src.get("config") or {}
    keep_keys = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User", "ExposedPorts", "Labels",
                 "StopSignal", "Volumes", "Healthcheck", "Shell", "ArgsEscaped", "OnBuild")
    doc: dict[str, Any] = {k: src[k] for k in ("architecture", "os", "variant", "os.version",
                                               "os.features", "author", "created") if k in src}
    doc["config"] = {k: cfg[k] for k in keep_keys if k in cfg}
    doc["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id]}
    hist: dict[str, Any] = {"created_by": summary, "comment": "layerdb slim"}
    if "created" in src:
        hist["created"] = src["created"]
    doc["history"] = [hist]
    platform = {k: str(src[k]) for k in ("architecture", "os", "variant") if src.get(k)}
    return canonical_json(doc), platform


@dataclass
class SlimResult:
    plan: SlimPlan
    written: WrittenImage | None = None


def slim(image: str | None, output: str | None, catalog_root: str | None = None,
         platform: str | None = None, keep: Sequence[str] = (), keep_sql: str | None = None,
         entrypoint: bool = True, allow_missing: bool = False, fmt: str = "oci-archive",
         tag: str | None = None, compression: str | None = None, dry_run: bool = False,
         force: bool = False) -> SlimResult:
    """Plan, and unless ``dry_run`` write, the slim image of ``image`` to ``output``."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
    if compression is None:
        compression = "none" if fmt == "docker-archive" else "gzip"
    if compression not in COMPRESSIONS:
        raise UsageError(f"unknown compression {compression!r} (use {', '.join(COMPRESSIONS)})")
    if tag is not None and not _TAG.match(tag):
        raise UsageError(f"--tag {tag!r}: not an image name (NAME[:TAG], NAME lowercase: "
                         "registry/path/name, TAG letters, digits, '_', '.', '-')")
    if not dry_run:
        if not output:
            raise UsageError("give -o OUT (or --dry-run)")
        check_output(output, force)
    p, root, reader = plan(image, catalog_root, platform, keep, keep_sql, entrypoint, allow_missing)
    try:
        result = SlimResult(p)
        if dry_run:
            return result
        assert output is not None
        name = tag or _default_tag(p.image)
        opts = [f"--keep {k}" for k in keep] + (["--keep-sql"] if keep_sql else []) + \
            ([] if entrypoint else ["--no-entrypoint"])
        summary = (f"layerdb slim {p.image.id}{' ' + ' '.join(opts) if opts else ''}: "
                   f"{len(p.kept)} paths, {p.kept_bytes} bytes of files")
        parent = os.path.dirname(os.path.abspath(output))
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(output.rstrip('/'))}.",
                                   suffix=".layer.layerdb-tmp", dir=parent)
        os.close(fd)
        try:
            layer = write_layer(tmp, compression, lambda out: write_layer_tar(out, p.kept, reader, p.xattrs))
            config, plat = new_config(p, layer, summary)
            result.written = write_image(output, fmt, config, layer, name, plat, force)
        finally:
            os.unlink(tmp)
        return result
    finally:
        reader.close()


def _default_tag(img: ImageRow) -> str:
    """``REPO:TAG-slim`` of the image's first ref (``slim:latest`` when it has none)."""
    for ref in img.refs:
        name, sep, t = ref.rpartition(":")
        if sep and "/" not in t:
            return f"{name}:{t}-slim"
        if ref and "@" not in ref:
            return f"{ref}:latest-slim"
    return "slim:latest"
