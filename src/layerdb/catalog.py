"""The catalog: member rows in Parquet, metadata in DuckDB, and the views over both.

This is the only module that imports duckdb and the only one that writes the catalog. Writes
happen inside one transaction per archive, after every file they refer to is in place, so an
interrupted ingest (even ``kill -9``) never leaves part of an image visible. See
``docs/catalog.md`` for every table, view and column.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from .digest import Digest
from .errors import CatalogError
from .lookup import FORMAT_VERSION, ImageRow, choose_image, default_root, write_index
from .lookup import FS_COLUMNS as LOOKUP_COLUMNS
from .model import Image, familiar_ref

DB_NAME = "catalog.duckdb"
LOOKUP_NAME = "lookup.sqlite"
MATERIALIZE_MEMORY = os.environ.get("LAYERDB_MEMORY", "160MB")
# a memory limit for queries and reports, e.g. "1GB" (default: DuckDB's, 80% of RAM)
QUERY_MEMORY = os.environ.get("LAYERDB_QUERY_MEMORY", "")
FS_ROW_GROUP = 16384  # rows per row group of an image's merged view: what a lookup reads

# DuckDB types of the `files` columns; tests check this against tarindex.SCHEMA.
FILE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("layer", "VARCHAR"), ("idx", "INTEGER"), ("path", "VARCHAR"), ("parent", "VARCHAR"),
    ("name", "VARCHAR"), ("raw_path", "BLOB"), ("type", "VARCHAR"), ("size", "BIGINT"),
    ("mode", "INTEGER"), ("uid", "INTEGER"), ("gid", "INTEGER"), ("uname", "VARCHAR"),
    ("gname", "VARCHAR"), ("mtime", "BIGINT"), ("linkname", "VARCHAR"), ("offset_data", "BIGINT"),
    ("sha256", "VARCHAR"), ("whiteout", "VARCHAR"), ("hides", "VARCHAR"),
    ("xattrs", "MAP(VARCHAR, BLOB)"), ("devmajor", "INTEGER"), ("devminor", "INTEGER"),
)
FS_EXTRA: tuple[tuple[str, str], ...] = (
    ("image_id", "VARCHAR"), ("position", "INTEGER"),
    ("content_layer", "VARCHAR"), ("content_offset", "BIGINT"),
)

_TABLES = """
create table if not exists image_meta (
  id varchar primary key, config_digest varchar, index_digest varchar,
  manifest_media_type varchar, os varchar, architecture varchar, variant varchar,
  created varchar, author varchar, entrypoint varchar[], cmd varchar[], working_dir varchar,
  env varchar[], "user" varchar, labels map(varchar, varchar), layer_count integer,
  size bigint, compressed_size bigint, source varchar, ingested_at timestamp,
  config varchar, manifest varchar, seq bigint
);
create table if not exists image_refs (ref varchar, image_id varchar, seq bigint);
create table if not exists image_layer_rows (
  image_id varchar, position integer, diff_id varchar, digest varchar, media_type varchar,
  compressed_size bigint, size bigint, created_by varchar, created varchar, comment varchar,
  primary key (image_id, position)
);
create table if not exists layer_meta (
  diff_id varchar primary key, size bigint, compressed_size bigint, stored_size bigint,
  member_count bigint, file_bytes bigint, ingested_at timestamp
);
create table if not exists layer_blobs (
  digest varchar primary key, diff_id varchar, media_type varchar, size bigint
);
create sequence if not exists ingest_seq;
create table if not exists catalog_format (version integer);
insert into catalog_format select 1 where not exists (select 1 from catalog_format);
"""


_VIEWS = """
create or replace temp view images as
select m.id,
       coalesce(r.refs[1], substr(m.id, 8, 12)) as name,
       coalesce(r.refs, []::varchar[]) as refs,
       m.config_digest, m.index_digest, m.manifest_media_type,
       m.os, m.architecture, m.variant,
       m.os || '/' || m.architecture || case when m.variant <> '' then '/' || m.variant else '' end
         as platform,
       m.created, m.author, m.entrypoint, m.cmd, m.env, m.working_dir, m."user", m.labels,
       m.layer_count, m.size, m.compressed_size, m.source, m.ingested_at
from image_meta m
left join (select image_id, list(ref order by seq, ref) as refs from image_refs group by image_id) r
  on r.image_id = m.id;

create or replace temp view image_layers as
select l.image_id, i.name as image, l.position, l.diff_id, l.digest, l.media_type,
       l.compressed_size, l.size, l.created_by, l.created, l.comment
from image_layer_rows l join images i on i.id = l.image_id;

create or replace temp view layers as
select m.diff_id,
       coalesce((select list(b.digest order by b.digest) from layer_blobs b
                 where b.diff_id = m.diff_id), []::varchar[]) as digests,
       m.size, m.compressed_size, m.stored_size, m.member_count,
       (select count(distinct image_id) from image_layer_rows r where r.diff_id = m.diff_id)
         as image_count
from layer_meta m;
"""


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sql_list(paths: Sequence[str]) -> str:
    return "[" + ", ".join(_sql_str(p) for p in paths) + "]"


def _empty_select(columns: Iterable[tuple[str, str]]) -> str:
    return "select " + ", ".join(f"cast(null as {t}) as \"{n}\"" for n, t in columns) + " where false"


@dataclass(frozen=True)
class LayerRecord:
    """What ingest learnt about one layer, for the catalog."""

    diff_id: Digest
    size: int
    stored_size: int
    member_count: int
    file_bytes: int


@dataclass(frozen=True)
class BlobRecord:
    digest: Digest
    diff_id: Digest
    media_type: str
    size: int


class Catalog:
    """A context manager over the catalog directory. Read-only by default; ``writable=True``
    creates it if needed. Each connection defines the views of docs/catalog.md."""

    def __init__(self, root: str | None = None, writable: bool = False,
                 lock_timeout: float = 30.0, views: bool = True) -> None:
        self.views = views  # define the query views (ingest's writes need none)
        self.root = os.path.abspath(root or default_root())
        self.writable = writable
        self.files_dir = os.path.join(self.root, "files")
        self.fs_dir = os.path.join(self.root, "fs")
        self.blobs_dir = os.path.join(self.root, "blobs")
        self.tmp_dir = os.path.join(self.root, "tmp")
        db = os.path.join(self.root, DB_NAME)
        if not writable and not os.path.exists(db):
            self.con = duckdb.connect(":memory:")
            self.con.execute(_TABLES)
        else:
            if writable:
                for d in (self.root, self.files_dir, self.fs_dir, self.blobs_dir, self.tmp_dir):
                    os.makedirs(d, exist_ok=True)
            self.con = self._connect(db, writable, lock_timeout)
            if writable:
                if self._has_table("image_meta") and not self._has_table("catalog_format"):
                    self._check_format(db)  # an older layerdb's catalog: refuse, do not mix
                self.con.execute("begin transaction;" + _TABLES + "commit;")
            elif self._has_table("image_meta") and not self._has_table("catalog_format"):
                self._check_format(db)  # an older layerdb's catalog
            elif not self._has_table("catalog_format"):
                # a first ingest was killed before its schema committed: an empty catalog
                self.con.close()
                self.con = duckdb.connect(":memory:")
                self.con.execute(_TABLES)
        try:
            self._check_format(db)
            if views:
                self._define_views()
        except duckdb.Error as e:
            self.con.close()
            raise CatalogError(f"cannot read catalog {self.root}: {str(e).splitlines()[0]}") from e

    def _has_table(self, name: str) -> bool:
        return bool(self.con.execute(
            "select 1 from information_schema.tables where table_name = ?", [name]).fetchall())

    def _check_format(self, db: str) -> None:
        version = self.con.execute("select max(version) from catalog_format").fetchall()[0][0] \
            if self._has_table("catalog_format") else 0
        if version != FORMAT_VERSION:
            self.con.close()
            raise CatalogError(
                f"catalog {self.root} has format {version or 'unknown'}, this layerdb reads "
                f"format {FORMAT_VERSION}: ingest into a new --catalog directory")

    @staticmethod
    def _connect(db: str, writable: bool, lock_timeout: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + lock_timeout
        delay = 0.05
        while True:
            try:
                return duckdb.connect(db, read_only=not writable)
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() or time.monotonic() > deadline:
                    raise CatalogError(f"cannot open catalog {db}: {e}") from e
            except duckdb.Error as e:
                raise CatalogError(f"cannot open catalog {db}: {e}") from e
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # paths -------------------------------------------------------------------------
    def files_path(self, diff_id: Digest | str) -> str:
        return os.path.join(self.files_dir, str(diff_id)[7:] + ".parquet")

    def fs_path(self, image_id: Digest | str) -> str:
        return os.path.join(self.fs_dir, str(image_id)[7:] + ".parquet")

    # views -------------------------------------------------------------------------
    def _define_views(self) -> None:
        con = self.con
        con.execute("set enable_progress_bar = false")  # it would print into our output
        if QUERY_MEMORY:  # DuckDB spills to disk past it (slower: reports over 10M rows 2-3x)
            con.execute(f"set memory_limit = '{QUERY_MEMORY}'")
            spill = os.path.join(tempfile.gettempdir(), f"layerdb-{os.getuid()}-spill")
            con.execute(f"set temp_directory = {_sql_str(spill)}")
        con.execute(_VIEWS)
        layer_ids = [r[0] for r in con.execute("select diff_id from layer_meta order by diff_id").fetchall()]
        image_ids = [r[0] for r in con.execute("select id from image_meta order by id").fetchall()]
        cols = ", ".join(f'"{n}"' for n, _ in FILE_COLUMNS)
        if layer_ids:
            src = f"select {cols} from read_parquet({_sql_list([self.files_path(d) for d in layer_ids])})"
        else:
            src = _empty_select(FILE_COLUMNS)
        con.execute(f"create or replace temp view files as {src}")
        fs_cols = FS_EXTRA + FILE_COLUMNS
        if image_ids:
            src = ("select * from read_parquet("
                   f"{_sql_list([self.fs_path(i) for i in image_ids])})")
        else:
            src = _empty_select(fs_cols)
        con.execute(
            "create or replace temp view fs as select i.name as image, f.* "
            f"from ({src}) f join images i on i.id = f.image_id")
        # packages (src/layerdb/packages): the package_records and packages views, version_lt() ...
        from .packages import catalog_sql, committed_files

        catalog_sql.define(con, committed_files(self.root, layer_ids))

    # queries -------------------------------------------------------------------------
    def query(self, sql: str, params: dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run SQL; return (column names, rows). Errors become ``CatalogError``."""
        try:
            cur = self.con.execute(sql, params or None)
            if cur.description is None:
                return [], []
            names = [d[0] for d in cur.description]
            return names, cur.fetchall()
        except duckdb.Error as e:
            raise CatalogError(f"query failed: {str(e).splitlines()[0]}") from e

    def copy_to_parquet(self, sql: str, params: dict[str, Any] | None, out: str) -> None:
        try:
            rel = self.con.sql(sql, params=params or None)
            rel.write_parquet(out)
        except duckdb.Error as e:
            raise CatalogError(f"query failed: {str(e).splitlines()[0]}") from e

    def known_images(self, ids: Iterable[Digest]) -> set[str]:
        want = [str(i) for i in ids]
        if not want:
            return set()
        rows = self.con.execute("select id from image_meta where list_contains(?, id)", [want]).fetchall()
        return {r[0] for r in rows}

    def known_layers(self, diff_ids: Iterable[Digest]) -> set[str]:
        ids = [str(i) for i in diff_ids]
        if not ids:
            return set()
        rows = self.con.execute(
            "select diff_id from layer_meta where list_contains(?, diff_id)", [ids]).fetchall()
        return {r[0] for r in rows}

    def refs_of(self, ids: Iterable[Digest]) -> dict[str, set[str]]:
        """The refs each of these images holds now."""
        want = [str(i) for i in ids]
        out: dict[str, set[str]] = {i: set() for i in want}
        if want:
            for image_id, ref in self.con.execute(
                    "select image_id, ref from image_refs where list_contains(?, image_id)",
                    [want]).fetchall():
                out[image_id].add(ref)
        return out

    def known_blobs(self, digests: Iterable[Digest]) -> set[str]:
        ids = [str(i) for i in digests]
        if not ids:
            return set()
        rows = self.con.execute(
            "select digest from layer_blobs where list_contains(?, digest)", [ids]).fetchall()
        return {r[0] for r in rows}

    def resolve_image(self, ref: str | None, platform: str | None = None) -> ImageRow:
        """Find one image by ref, id or config digest (see ``lookup.choose_image``)."""
        return choose_image(self._image_rows("true", []), ref, platform)

    def _image_rows(self, where: str, params: list) -> list[ImageRow]:
        rows = self.con.execute(
            "select id, name, refs, platform, entrypoint, cmd, working_dir, env, config_digest "
            f"from images where {where} order by id", params).fetchall()
        return [ImageRow(r[0], r[1], list(r[2] or []), r[3], list(r[4] or []), list(r[5] or []),
                         r[6] or "", list(r[7] or []), r[8] or "") for r in rows]

    def lookup(self, image_id: str, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The fs rows of ``image_id`` for exactly these paths (missing paths absent)."""
        if not paths:
            return {}
        # "path in (?, ...)" (not list_contains) lets DuckDB skip row groups by their min/max
        # path statistics: the file is sorted by path, so a lookup reads one small row group
        marks = ", ".join("?" for _ in paths)
        return self._fs_rows(image_id, f"path in ({marks})", list(paths))

    def subtree(self, image_id: str, path: str) -> list[dict[str, Any]]:
        """Every fs row at or below ``path`` in ``image_id``, sorted by path."""
        if path == "/":
            rows = self._fs_rows(image_id, "true", [])
        else:
            rows = self._fs_rows(image_id, "(path = ? or starts_with(path, ?))", [path, path + "/"])
        return [rows[k] for k in sorted(rows)]

    def _fs_rows(self, image_id: str, where: str, params: list) -> dict[str, dict[str, Any]]:
        sql = (f"select * from read_parquet({_sql_str(self.fs_path(image_id))}) where {where}")
        try:
            cur = self.con.execute(sql, params)
        except duckdb.Error as e:
            raise CatalogError(f"reading the merged view of {image_id}: {e}") from e
        names = [d[0] for d in cur.description]
        return {r[names.index("path")]: dict(zip(names, r)) for r in cur.fetchall()}

    # writes ---------------------------------------------------------------------------
    def materialize_fs(self, items: Sequence[tuple[Image, str]]) -> None:
        """Compute the merged filesystem of each image from its layers' Parquet files and
        write it, sorted by path, to its output path. One private in-memory connection (no
        lock on the catalog), one query per image."""
        con = duckdb.connect(":memory:")
        try:
            con.execute("set enable_progress_bar = false")
            # bounded memory: a 1M-file image spills to disk rather than growing the process
            con.execute(f"set memory_limit = '{MATERIALIZE_MEMORY}'")
            con.execute(f"set temp_directory = {_sql_str(os.path.join(self.tmp_dir, 'duckdb'))}")
            for image, out_path in items:
                con.execute(self._fs_query(image, out_path))
        except duckdb.Error as e:
            raise CatalogError(f"computing a merged view: {e}") from e
        finally:
            con.close()

    def _fs_query(self, image: Image, out_path: str) -> str:
        """The merged view of one image (OCI image-spec layer.md), as one COPY statement:
        - ``top``: per path, the entry of the highest layer (a whiteout counts as an entry at
          the path it hides; within a layer the later member wins);
        - ``del``: what hides lower subtrees: whiteouts (the path and below), opaque markers
          (below their directory), and non-directories over a lower directory;
        - an entry is hidden when a deleter at a higher position names one of its ancestors
          (hash join on the ancestor list, never a rows x whiteouts scan);
        - a hardlink's bytes are the newest regular file at its target at or below the link
          (earlier in the same layer), as a real unpack would link it."""
        positions = ", ".join(f"({i}, {_sql_str(str(l.diff_id))})" for i, l in enumerate(image.layers))
        files = sorted({self.files_path(l.diff_id) for l in image.layers})
        cols = ", ".join(f'f."{n}"' for n, _ in FILE_COLUMNS)
        src = f"read_parquet({_sql_list(files)})" if files else f"({_empty_select(FILE_COLUMNS)})"
        pos = (f"(values {positions}) as p(position, layer)" if positions
               else "(select 0 as position, '' as layer where false) as p")
        order = ", ".join(f'"{c}"' for c, _ in FS_EXTRA + FILE_COLUMNS)
        return f"""
        copy (
          with m as materialized (
            select p.position, {cols} from {src} f join {pos} on f.layer = p.layer),
          top as (
            select * from m where whiteout <> 'opaque'
            qualify row_number() over (
              partition by coalesce(hides, path) order by position desc, idx desc) = 1),
          del as materialized (
            select position, hides as prefix from m where whiteout <> 'none'
            union all
            select a.position, a.path from m a join m b
              on a.path = b.path and b.position < a.position
            where a.whiteout = 'none' and a.type <> 'dir' and b.type = 'dir'),
          hidden as (
            select distinct t.path from (
              select path, position, unnest(list_prepend('/', list_transform(
                range(2, len(string_split(path, '/'))),
                lambda i: array_to_string(string_split(path, '/')[1:i], '/')))) as a
              from top where whiteout = 'none' and path <> '/'
                and exists (select 1 from del)) t
            join del d on d.prefix = t.a and d.position > t.position),
          visible as (
            select * from top where whiteout = 'none' and path not in (select path from hidden)),
          links as (
            select v.path, t.layer, t.offset_data, t.size, t.sha256
            from visible v join m t on t.path = v.linkname and t.type = 'file'
              and (t.position < v.position or (t.position = v.position and t.idx < v.idx))
            where v.type = 'hardlink'
            qualify row_number() over (
              partition by v.path order by t.position desc, t.idx desc) = 1)
          select {order} from (
          select {_sql_str(str(image.id))} as image_id, v.position,
                 coalesce(h.layer, v.layer) as content_layer,
                 coalesce(h.offset_data, v.offset_data) as content_offset,
                 v.* exclude (position, size, sha256),
                 case when v.type = 'hardlink' then coalesce(h.size, 0) else v.size end as size,
                 case when v.type = 'hardlink' then h.sha256 else v.sha256 end as sha256
          from visible v left join links h on h.path = v.path)
          order by path
        ) to {_sql_str(out_path)} (format parquet, compression zstd,
                                   row_group_size {FS_ROW_GROUP})"""

    def commit_archive(self, images: Sequence[Image], layers: Sequence[LayerRecord],
                       blobs: Sequence[BlobRecord], layer_sizes: dict[str, tuple[int, int]],
                       source: str) -> None:
        """Record new layers, blobs and images in one transaction. Every Parquet file they
        refer to must already be in place. ``layer_sizes`` maps diff_id -> (compressed, size)
        for every layer of these images."""
        if not self.writable:
            raise CatalogError("catalog opened read-only")
        con = self.con
        try:
            con.execute("begin transaction")
            for l in layers:
                con.execute(
                    "insert or ignore into layer_meta values (?, ?, ?, ?, ?, ?, now())",
                    [str(l.diff_id), l.size, layer_sizes.get(str(l.diff_id), (None, 0))[0],
                     l.stored_size, l.member_count, l.file_bytes])
            for b in blobs:
                con.execute("insert or ignore into layer_blobs values (?, ?, ?, ?)",
                            [str(b.digest), str(b.diff_id), b.media_type, b.size])
                con.execute(
                    "update layer_meta set compressed_size = least(coalesce(compressed_size, ?), ?) "
                    "where diff_id = ?", [b.size, b.size, str(b.diff_id)])
            for img in images:
                self._insert_image(img, layer_sizes, source)
            con.execute("commit")
        except duckdb.Error as e:
            try:
                con.execute("rollback")
            except duckdb.Error:
                pass
            raise CatalogError(f"recording {source}: {e}") from e
        self._update_lookup([str(i.id) for i in images])
        if self.views:
            self._define_views()

    def _update_lookup(self, image_ids: Sequence[str]) -> None:
        """Bring ``lookup.sqlite`` (extract's fast path) up to date with what was just
        committed: every image's refs, and the merged view of those not indexed yet. It runs
        after the commit, so the index never shows what the catalog does not hold."""
        import sqlite3

        path = os.path.join(self.root, LOOKUP_NAME)
        try:
            done: set[str] = set()
            if os.path.exists(path):
                with sqlite3.connect(path) as lc:
                    try:
                        done = {r[0] for r in lc.execute("select image from indexed")}
                    except sqlite3.Error:
                        done = set()
            todo = [i for i in dict.fromkeys(image_ids) if i not in done]
            cols = ", ".join(f'"{c}"' for c in LOOKUP_COLUMNS)

            def rows(image_id: str) -> Iterator[tuple]:
                cur = self.con.execute(
                    f"select {cols} from read_parquet({_sql_str(self.fs_path(image_id))})")
                while batch := cur.fetchmany(20000):
                    yield from batch

            self.con.execute(_VIEWS)  # ingest's connection may have no views
            blobs = [r[0] for r in self.con.execute("select digest from layer_blobs").fetchall()]
            write_index(path, self._image_rows("true", []), ((i, rows(i)) for i in todo), blobs)
        except (sqlite3.Error, duckdb.Error, OSError):
            pass  # the index is an optimisation: extract falls back to the catalog

    def _insert_image(self, img: Image, layer_sizes: dict[str, tuple[int, int]], source: str) -> None:
        con = self.con
        cfg = img.config
        seq = con.execute("select nextval('ingest_seq')").fetchone()[0]  # type: ignore[index]
        known = con.execute("select 1 from image_meta where id = ?", [str(img.id)]).fetchone()
        if not known:
            sizes = [layer_sizes.get(str(l.diff_id), (l.size, 0)) for l in img.layers]
            con.execute(
                "insert into image_meta values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "map(?::varchar[], ?::varchar[]), ?, ?, ?, ?, now(), ?, ?, ?)",
                [str(img.id), str(img.config_digest),
                 str(img.index_digest) if img.index_digest else None,
                 img.manifest_media_type, img.platform.os or cfg.os,
                 img.platform.architecture or cfg.architecture,
                 img.platform.variant or cfg.variant, cfg.created, cfg.author,
                 list(cfg.entrypoint), list(cfg.cmd), cfg.working_dir, list(cfg.env), cfg.user,
                 [k for k, _ in cfg.labels], [v for _, v in cfg.labels],
                 len(img.layers), sum(s for _, s in sizes),
                 sum(max(l.size, 0) for l in img.layers), source,
                 cfg.raw.decode("utf-8", "replace"), img.manifest.decode("utf-8", "replace"), seq])
            hist = cfg.layer_history()
            for pos, l in enumerate(img.layers):
                h = hist[pos] if pos < len(hist) else None
                con.execute(
                    "insert into image_layer_rows values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [str(img.id), pos, str(l.diff_id), str(l.digest) if l.digest else None,
                     l.media_type, l.size if l.size >= 0 else None,
                     layer_sizes.get(str(l.diff_id), (0, 0))[1],
                     h.created_by if h else None, h.created if h else None,
                     h.comment if h else None])
        # a ref names one image per platform: the newest ingest takes it
        p = img.platform
        for ref in dict.fromkeys(familiar_ref(r) for r in img.refs):
            con.execute(
                "delete from image_refs where ref = ? and image_id in (select id from image_meta "
                "where os = ? and architecture = ? and variant = ? and id <> ?)",
                [ref, p.os or cfg.os, p.architecture or cfg.architecture, p.variant or cfg.variant,
                 str(img.id)])
            if not con.execute("select 1 from image_refs where ref = ? and image_id = ?",
                               [ref, str(img.id)]).fetchone():
                con.execute("insert into image_refs values (?, ?, nextval('ingest_seq'))",
                            [ref, str(img.id)])
