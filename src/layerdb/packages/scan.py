"""One layer's packages, found at ingest: ``scan_layer`` runs in the worker that read the
layer, once its members' Parquet and its staged cache file are complete.

Candidates are chosen from the members' Parquet by path (``PATTERNS``) and, for Go, by being a
large executable; their bytes are read from the staged cache file (a seek and the decoding of
the few 1 MiB frames that hold them; frames are kept in a small cache, candidates are read in
offset order). A hard link is read through its target when the target is an earlier member of
the same layer. A record a parser cannot make sense of gives no rows; it never fails the
ingest. Within a layer the last member at a path wins, as in the merged view. A Java archive
is read through ``_Member.read`` from its end (``java``): its central directory and the few
entries needed, never the whole file.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..digest import Digest
from ..errors import StoreError
from ..store import StoredLayer
from . import apk, dpkg, gobuildinfo, java, npm, osrelease, python, rpm
from .records import Package

# path pattern -> parser, tried in order (RE2 syntax for pyarrow, Python's for the dispatch)
PATTERNS: tuple[tuple[str, str], ...] = (
    ("dpkg", r"^/var/lib/dpkg/status$"),
    ("dpkg.d", r"^/var/lib/dpkg/status\.d/[^/]+$"),
    ("apk", r"^(/usr)?/lib/apk/db/installed$"),
    ("rpm", r"^(/var/lib/rpm|/usr/lib/sysimage/rpm)/rpmdb\.sqlite$"),
    ("python", r"/(site|dist)-packages/[^/]+\.(dist-info/METADATA|egg-info/PKG-INFO|egg-info)$"),
    ("npm", r"/node_modules/(@[^/]+/)?[^/@.][^/]*/package\.json$"),
    ("java", r"[^/][.]([jJ][aA][rR]|[wW][aA][rR]|[eE][aA][rR]|[jJ][pP][iI]|[hH][pP][iI])$"),
    ("os", r"^(/etc|/usr/lib)/os-release$"),
)
_ANY = "|".join(f"({p})" for _, p in PATTERNS)
_DISPATCH = [(k, re.compile(p)) for k, p in PATTERNS]
_COLUMNS = ["idx", "path", "type", "size", "mode", "offset_data", "linkname"]
FRAME_CACHE = 8  # decoded 1 MiB frames kept while a layer's candidates are read


@dataclass
class _Cand:
    idx: int
    path: str
    kind: str  # a PATTERNS key, or "go"
    type: str
    size: int
    offset: int
    linkname: str | None


class _CachedLayer(StoredLayer):
    """A staged layer whose decoded frames are kept in a small LRU cache: neighbouring small
    files share frames, so each frame is decoded about once."""

    def __init__(self, path: str, diff_id: Digest) -> None:
        super().__init__(path, diff_id)
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def _frame(self, i: int) -> bytes:
        got = self._cache.get(i)
        if got is None:
            got = super()._frame(i)
            self._cache[i] = got
            if len(self._cache) > FRAME_CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(i)
        return got


class _Member:
    """``records.Blob`` over one member's bytes in a cached layer."""

    def __init__(self, layer: StoredLayer, path: str, offset: int, size: int) -> None:
        self.layer, self.path, self.offset, self.size = layer, path, offset, size

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset >= self.size or n <= 0:
            return b""
        n = min(n, self.size - offset)
        return self.layer.read_at(self.offset + offset, n)

    def chunks(self, limit: int = -1) -> Iterator[bytes]:
        n = self.size if limit < 0 else min(limit, self.size)
        return self.layer.iter_range(self.offset, n)


class Candidates:
    """The members worth reading, gathered from a layer's member batches as they come
    (``add``; at ingest on the thread that writes them, so the Parquet is not read again),
    then resolved (``result``)."""

    def __init__(self) -> None:
        self._found: dict[str, _Cand] = {}

    def add(self, batch: Any) -> None:
        import pyarrow.compute as pc

        typ = batch.column("type")
        regular = pc.equal(typ, "file")
        link = pc.equal(typ, "hardlink")
        execs = pc.not_equal(pc.bit_wise_and(batch.column("mode"), 0o111), 0)
        big = pc.greater_equal(batch.column("size"), gobuildinfo.MIN_SIZE)
        named = pc.match_substring_regex(batch.column("path"), _ANY)
        mask = pc.or_(pc.and_(pc.or_(regular, link), named),
                      pc.and_(execs, pc.or_(pc.and_(regular, big), link)))
        mask = pc.fill_null(mask, False)
        if not pc.any(mask).as_py():
            return
        found = self._found
        for r in batch.select(list(_COLUMNS)).filter(mask).to_pylist():
            kind = next((k for k, rx in _DISPATCH if rx.search(r["path"])), "go")
            if kind == "go" and not (r["mode"] & 0o111):
                continue
            found.pop(r["path"], None)  # the later member wins (and keeps member order)
            found[r["path"]] = _Cand(r["idx"], r["path"], kind, r["type"], r["size"] or 0,
                                     r["offset_data"] or 0, r["linkname"])

    def result(self) -> list[_Cand]:
        # a hard link reads its target's bytes when the target is an earlier member here
        found = self._found
        out = []
        for c in found.values():
            if c.type == "hardlink":
                t = found.get(c.linkname or "")
                if t is None or t.type != "file" or t.idx > c.idx:
                    continue
                c.size, c.offset = t.size, t.offset
                if c.kind == "go" and c.size < gobuildinfo.MIN_SIZE:
                    continue
            out.append(c)
        return out


def candidates(parquet_path: str) -> list[_Cand]:
    """The members worth reading, from the layer's member Parquet (streamed by row group)."""
    import pyarrow.parquet as pq

    cands = Candidates()
    for batch in pq.ParquetFile(parquet_path).iter_batches(columns=_COLUMNS, batch_size=65536):
        cands.add(batch)
    return cands.result()


def _parsers(tmpdir: str) -> dict[str, Callable[[_Member], list[Package]]]:
    return {
        "dpkg": dpkg.parse,
        "dpkg.d": lambda b: dpkg.parse(b, status_d=True) if not b.path.endswith(".md5sums") else [],
        "apk": apk.parse,
        "rpm": lambda b: rpm.parse(b, tmpdir),
        "python": python.parse,
        "npm": npm.parse,
        "java": java.parse,
        "os": osrelease.parse,
        "go": gobuildinfo.parse,
    }


def read_packages(parquet_path: str, store_path: str, diff_id: Digest,
                  tmpdir: str | None = None, cands: list[_Cand] | None = None) -> list[Package]:
    """Every package record of one layer (its member Parquet and its cache file; ``cands``:
    its candidates when already found)."""
    if cands is None:
        cands = candidates(parquet_path)
    if not cands:
        return []
    parsers = _parsers(tmpdir or tempfile.gettempdir())
    out: list[Package] = []
    with _CachedLayer(store_path, diff_id) as layer:
        for c in sorted(cands, key=lambda c: c.offset):
            if c.offset < 0 or c.offset + c.size > layer.size:
                continue  # not contiguous bytes of the tar (a sparse member): not a record
            try:
                out.extend(parsers[c.kind](_Member(layer, c.path, c.offset, c.size)))
            except StoreError:  # the bytes are not what the member says: no rows from it
                continue
    return out


def scan_layer(parquet_path: str, store_path: str, diff_id: Digest, staging: str,
               cands: Candidates | None = None) -> str | None:
    """Find one layer's packages and write them, staged, to a Parquet file in ``staging``
    (schema ``catalog_sql.SCHEMA``); return its path, or None when the layer has none (or
    capture is off: ``LAYERDB_PACKAGES=0``). Runs in the ingest worker."""
    from ..settings import settings

    if not settings().packages:
        return None
    pkgs = read_packages(parquet_path, store_path, diff_id, staging,
                         None if cands is None else cands.result())
    if not pkgs:
        return None
    from .table import write_parquet

    fd, out = tempfile.mkstemp(dir=staging, suffix=".packages.parquet.tmp")
    os.close(fd)
    try:
        write_parquet(out, str(diff_id), pkgs)
    except BaseException:
        os.unlink(out)
        raise
    return out
