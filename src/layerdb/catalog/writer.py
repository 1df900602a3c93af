"""The one writer of a catalog: the lock, the placement of staged files, one commit per
archive, and the lookup index after it.

    with Writer.open(root) as w:
        known = w.known(images)
        w.place_layer(staged_layer)        # verified files into place, still invisible
        w.record(staged_archive)           # one transaction makes an archive's images visible

An exclusive ``flock`` on ``catalog.lock`` keeps a second writer out for the whole run (it
waits, saying so, up to ``wait`` seconds). DuckDB's own file is opened only for the short
moments of a lookup or a commit, so readers (``sql``, reports, extract) work meanwhile.
Files are placed before the transaction that names them; an interrupted run leaves at most
unnamed files, which the next run's ``gc`` (or the same run's clean-up) removes.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import duckdb

from ..digest import Digest
from ..errors import CatalogError
from ..model import Image, familiar_ref
from ..selection import ImageRow, new_refs
from ..store import BlobStore
from . import lookupindex
from .db import TABLES, VIEWS, BlobRecord, check_format, connect, image_rows
from .layout import FORMAT_VERSION, Layout


@dataclass(frozen=True)
class StagedLayer:
    """A verified layer read this run: its cache file, member Parquet and index, in tmp/."""

    diff_id: Digest
    size: int
    compressed_size: int
    stored_size: int
    member_count: int
    file_bytes: int
    store_tmp: str
    files_tmp: str
    index_tmp: str
    packages_tmp: str | None = None  # the layer's package records, when it has any


@dataclass(frozen=True)
class StagedImage:
    """An image to record; ``members_tmp``/``fate_tmp`` are None when it is known already."""

    image: Image
    members_tmp: str | None = None
    fate_tmp: str | None = None
    member_count: int = 0
    visible_count: int = 0


@dataclass
class StagedArchive:
    source: str
    images: list[StagedImage]
    blobs: list[BlobRecord] = field(default_factory=list)
    # diff_id -> (compressed size, size) of layers read this run
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class RefMove:
    """A ref that named ``old_id`` and names ``new_id`` since this commit (a retag); or, with
    ``renamed_to``, a bare tag of an older catalog that image ``new_id`` (= ``old_id``) now
    holds written in full (``v1`` -> ``alpha:v1``, see ``selection.spelled_out``)."""

    ref: str
    old_id: str
    new_id: str
    renamed_to: str = ""


@dataclass
class Known:
    """What the catalog holds already, for the images of a run: the one "already known"
    predicate ingest uses."""

    images: set[str]
    layers: set[str]  # recorded and present in the cache
    blobs: set[str]
    refs: dict[str, set[str]]

    def nothing_new(self, images: Sequence[Image]) -> bool:
        for img in images:
            if str(img.id) not in self.images:
                return False
            if any(l.digest is not None and str(l.digest) not in self.blobs for l in img.layers):
                return False
            if new_refs(img.refs, self.refs.get(str(img.id), set())) != ([], []):
                return False
        return True


class Writer:
    def __init__(self, layout: Layout, lock_fd: int) -> None:
        self.layout = layout
        self._lock_fd = lock_fd
        self.store = BlobStore(layout.blobs_dir)
        self.placed: set[str] = set()  # layers placed this run (for clean-up on failure)
        self.recorded: set[str] = set()

    @classmethod
    @contextlib.contextmanager
    def open(cls, root: str | None = None, wait: float = 600.0,
             on_wait: Callable[[str], None] | None = None) -> Iterator[Writer]:
        layout = Layout.at(root)
        for d in layout.dirs():
            os.makedirs(d, exist_ok=True)
        fd = _lock(layout, wait, on_wait)
        try:
            w = cls(layout, fd)
            with w.db() as con:
                try:
                    con.execute("begin transaction;" + TABLES)
                    if not con.execute("select 1 from image_meta limit 1").fetchall() and \
                            not con.execute("select 1 from catalog_format").fetchall():
                        con.execute("insert into catalog_format values (?)", [FORMAT_VERSION])
                    con.execute("commit")
                except duckdb.Error as e:
                    raise CatalogError(f"cannot write catalog {layout.root}: {e}") from e
                check_format(con, layout.root)
            try:
                yield w
            finally:
                w._forget_unrecorded()
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def db(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The catalog database, open read-write for the length of the block."""
        con = _connect_retry(self.layout.db)
        try:
            yield con
        finally:
            con.close()

    # what is known -----------------------------------------------------------------
    def known(self, images: Sequence[Image]) -> Known:
        ids = [str(i.id) for i in images]
        diff_ids = sorted({str(l.diff_id) for i in images for l in i.layers})
        digests = sorted({str(l.digest) for i in images for l in i.layers if l.digest})
        with self.db() as con:
            imgs = {r[0] for r in con.execute(
                "select id from image_meta where list_contains(?, id)", [ids]).fetchall()}
            layers = {r[0] for r in con.execute(
                "select diff_id from layer_meta where list_contains(?, diff_id)", [diff_ids]).fetchall()}
            blobs = {r[0] for r in con.execute(
                "select digest from layer_blobs where list_contains(?, digest)", [digests]).fetchall()}
            refs: dict[str, set[str]] = {i: set() for i in ids}
            for image_id, ref in con.execute(
                    "select image_id, ref from image_refs where list_contains(?, image_id)",
                    [ids]).fetchall():
                refs[image_id].add(ref)
        layers = {d for d in layers if os.path.exists(self.layout.layer_index(d))
                  and self.store.has(Digest(d))}
        return Known(imgs, layers, blobs, refs)

    def sizes(self) -> dict[str, tuple[int, int]]:
        with self.db() as con:
            return {d: (int(s), int(u)) for d, s, u in con.execute(
                "select diff_id, coalesce(compressed_size, 0), size from layer_meta").fetchall()}

    # placing and recording ---------------------------------------------------------------
    def place_layer(self, s: StagedLayer) -> None:
        """Move a verified layer's files into place. Invisible until an image names it."""
        d = str(s.diff_id)
        self.store.adopt(s.store_tmp, s.diff_id)
        os.replace(s.files_tmp, self.layout.files(d))
        os.replace(s.index_tmp, self.layout.layer_index(d))
        if s.packages_tmp:
            os.makedirs(os.path.dirname(self.layout.packages(d)), exist_ok=True)
            os.replace(s.packages_tmp, self.layout.packages(d))
        self.placed.add(d)

    def record(self, archive: StagedArchive, layers: Sequence[StagedLayer]) -> list[RefMove]:
        """Make an archive's images visible, in one transaction. Every file the rows name
        (its layers, placed with ``place_layer`` or known; its images' members) is in place
        first. Returns the refs this took from other images (see ``_insert_image``)."""
        moves: list[RefMove] = []
        for si in archive.images:
            if si.members_tmp:
                os.replace(si.members_tmp, self.layout.members(si.image.id))
            if si.fate_tmp:
                os.replace(si.fate_tmp, self.layout.fate(si.image.id))
        with self.db() as con:
            try:
                con.execute("begin transaction")
                sizes = {d: (int(s), int(u)) for d, s, u in con.execute(
                    "select diff_id, coalesce(compressed_size, 0), size from layer_meta").fetchall()}
                sizes.update(archive.sizes)
                for l in layers:
                    con.execute(
                        "insert or ignore into layer_meta values (?, ?, ?, ?, ?, ?, now())",
                        [str(l.diff_id), l.size, l.compressed_size, l.stored_size,
                         l.member_count, l.file_bytes])
                for b in archive.blobs:
                    con.execute("insert or ignore into layer_blobs values (?, ?, ?, ?)",
                                [str(b.digest), str(b.diff_id), b.media_type, b.size])
                    con.execute(
                        "update layer_meta set compressed_size = least(coalesce(compressed_size, ?), ?) "
                        "where diff_id = ?", [b.size, b.size, str(b.diff_id)])
                siblings = {str(si.image.id) for si in archive.images}
                for si in archive.images:
                    moves += _insert_image(con, si, sizes, archive.source, siblings)
                con.execute("commit")
            except duckdb.Error as e:
                with contextlib.suppress(duckdb.Error):
                    con.execute("rollback")
                raise CatalogError(f"recording {archive.source}: {_one_line(e)}") from e
            self.recorded.update(str(l.diff_id) for si in archive.images for l in si.image.layers)
            self._refresh_lookup(con)
        return moves

    def remove_images(self, image_ids: Sequence[str]) -> None:
        """Forget these images (their rows; files stay until ``gc``)."""
        with self.db() as con:
            try:
                con.execute("begin transaction")
                for t, col in (("image_refs", "image_id"), ("image_layer_rows", "image_id"),
                               ("image_meta", "id")):
                    con.execute(f"delete from {t} where list_contains(?, {col})", [list(image_ids)])
                con.execute("commit")
            except duckdb.Error as e:
                with contextlib.suppress(duckdb.Error):
                    con.execute("rollback")
                raise CatalogError(f"removing images: {_one_line(e)}") from e
            self._refresh_lookup(con)

    def untag(self, refs: Sequence[str]) -> None:
        with self.db() as con:
            con.execute("delete from image_refs where list_contains(?, ref)", [list(refs)])
            self._refresh_lookup(con)

    def refresh_lookup(self) -> None:
        with self.db() as con:
            self._refresh_lookup(con)

    def _refresh_lookup(self, con: duckdb.DuckDBPyConnection) -> None:
        """Rewrite lookup.sqlite from the database (which it closes: the index is stamped
        with the file as committed)."""
        refresh_lookup(self.layout, con)

    def _forget_unrecorded(self) -> None:
        """Layers placed this run that no recorded image names (their archive failed):
        remove them, unless the catalog knows them from before."""
        stray = self.placed - self.recorded
        if not stray:
            return
        with self.db() as con:
            known = {r[0] for r in con.execute(
                "select diff_id from layer_meta where list_contains(?, diff_id)",
                [sorted(stray)]).fetchall()}
        for d in stray - known:
            for p in (self.layout.files(d), self.layout.layer_index(d),
                      self.layout.packages(d), self.store.path(Digest(d))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)


def refresh_lookup(layout: Layout, con: duckdb.DuckDBPyConnection) -> None:
    with contextlib.suppress(duckdb.Error):  # a read-only connection cannot, and need not
        con.execute("checkpoint")
    con.execute(VIEWS)
    rows: list[tuple[ImageRow, list[str]]] = []
    layers: dict[str, list[str]] = {}
    for image_id, diff_id in con.execute(
            "select image_id, diff_id from image_layer_rows order by image_id, position").fetchall():
        layers.setdefault(image_id, []).append(diff_id)
    for r in image_rows(con):
        rows.append((r, layers.get(r.id, [])))
    blobs = [r[0] for r in con.execute("select digest from layer_blobs").fetchall()]
    con.close()  # the stamp is of the file as it is once closed
    lookupindex.write(layout, rows, blobs)


def _one_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _connect_retry(path: str, timeout: float = 60.0) -> duckdb.DuckDBPyConnection:
    """A read-write connection; a reader holding the file briefly is waited for."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            return connect(path, read_only=False)
        except CatalogError:
            if time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _lock(layout: Layout, wait: float, on_wait: Callable[[str], None] | None) -> int:
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise CatalogError(
                    f"catalog {layout.root} is being written by another layerdb; gave up after "
                    f"{wait:g}s (--wait SECONDS to wait longer)") from None
            if not said and on_wait is not None:
                on_wait(f"waiting for another ingest to finish writing {layout.root}...")
                said = True
            time.sleep(0.1)


def _insert_image(con: duckdb.DuckDBPyConnection, si: StagedImage,
                  sizes: dict[str, tuple[int, int]], source: str,
                  siblings: set[str]) -> list[RefMove]:
    img = si.image
    cfg = img.config
    seq = con.execute("select nextval('ingest_seq')").fetchone()[0]  # type: ignore[index]
    known = con.execute("select 1 from image_meta where id = ?", [str(img.id)]).fetchone()
    if not known:
        lsizes = [sizes.get(str(l.diff_id), (l.size, 0)) for l in img.layers]
        con.execute(
            "insert into image_meta values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "map(?::varchar[], ?::varchar[]), ?, ?, ?, ?, now(), ?, ?, ?, ?, ?)",
            [str(img.id), str(img.config_digest),
             str(img.index_digest) if img.index_digest else None,
             img.manifest_media_type, img.platform.os or cfg.os,
             img.platform.architecture or cfg.architecture,
             img.platform.variant or cfg.variant, cfg.created, cfg.author,
             list(cfg.entrypoint), list(cfg.cmd), cfg.working_dir, list(cfg.env), cfg.user,
             [k for k, _ in cfg.labels], [v for _, v in cfg.labels],
             len(img.layers), sum(s for _, s in lsizes),
             sum(max(l.size, 0) for l in img.layers), source,
             cfg.raw.decode("utf-8", "replace"), img.manifest.decode("utf-8", "replace"), seq,
             si.member_count, si.visible_count])
        hist = cfg.layer_history()
        for pos, l in enumerate(img.layers):
            h = hist[pos] if pos < len(hist) else None
            con.execute(
                "insert into image_layer_rows values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [str(img.id), pos, str(l.diff_id), str(l.digest) if l.digest else None,
                 l.media_type, l.size if l.size >= 0 else None,
                 sizes.get(str(l.diff_id), (0, 0))[1],
                 h.created_by if h else None, h.created if h else None,
                 h.comment if h else None])
    # a ref names one image per platform: the newest ingest takes it (a retag, returned as
    # a move); twins (the same config digest: the same image in another form) share it, and
    # so do the images of one archive (an index's children of one platform, e.g. windows
    # images of two OS versions: told apart by id, never one losing the ref to the other)
    p = img.platform
    moves: list[RefMove] = []
    held = {r[0] for r in con.execute("select ref from image_refs where image_id = ?",
                                      [str(img.id)]).fetchall()}
    refs, replaced = new_refs(img.refs, held)
    for bare, full in replaced:  # an older catalog's bare tag (or stdin's), now in full
        con.execute("delete from image_refs where ref = ? and image_id = ?", [bare, str(img.id)])
        moves.append(RefMove(bare, str(img.id), str(img.id), renamed_to=full))
    gone = {bare for bare, _ in replaced}
    refs += [r for r in dict.fromkeys(familiar_ref(r) for r in img.refs) if r in held - gone]
    for ref in refs:
        taken = [r[0] for r in con.execute(
            "select distinct image_id from image_refs where ref = ? and image_id in (select id "
            "from image_meta where os = ? and architecture = ? and variant = ? and id <> ? "
            "and config_digest is distinct from ? and not list_contains(?, id)) "
            "order by image_id",
            [ref, p.os or cfg.os, p.architecture or cfg.architecture, p.variant or cfg.variant,
             str(img.id), str(img.config_digest), sorted(siblings)]).fetchall()]
        if taken:
            con.execute("delete from image_refs where ref = ? and list_contains(?, image_id)",
                        [ref, taken])
            moves += [RefMove(ref, old, str(img.id)) for old in taken]
        if not con.execute("select 1 from image_refs where ref = ? and image_id = ?",
                           [ref, str(img.id)]).fetchone():
            con.execute("insert into image_refs values (?, ?, nextval('ingest_seq'))",
                        [ref, str(img.id)])
    return moves
