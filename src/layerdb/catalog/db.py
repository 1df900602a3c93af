"""The catalog's DuckDB side: the metadata tables, the views over them and the Parquet files,
and read connections (``Catalog``). The only module besides ``writer`` that imports duckdb.

Views (docs/catalog.md): ``images``, ``image_layers``, ``layers``, ``files`` (every tar member
of every layer), ``members`` (every member of every image's layers with its fate) and ``fs``
(the visible members: the merged filesystem). A macro ``ancestors(path)`` lists a path's
ancestor directories. No view restates whiteout rules: fates come from ``fate`` at ingest.

``Catalog(root, sandbox=True)`` is what ``layerdb sql`` opens: only statements that read
(SELECT, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE) run, and DuckDB may touch no file but the
catalog's own and those the user named (``tables``).
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from ..digest import Digest
from ..errors import CatalogError, NoCatalog
from ..selection import ImageRow, choose_image
from ..settings import settings
from .layout import FORMAT_VERSION, Layout

# DuckDB types of the `files` columns; tests check this against tarindex.SCHEMA.
FILE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("layer", "VARCHAR"), ("idx", "INTEGER"), ("path", "VARCHAR"), ("parent", "VARCHAR"),
    ("name", "VARCHAR"), ("raw_path", "BLOB"), ("type", "VARCHAR"), ("size", "BIGINT"),
    ("mode", "INTEGER"), ("uid", "INTEGER"), ("gid", "INTEGER"), ("uname", "VARCHAR"),
    ("gname", "VARCHAR"), ("mtime", "BIGINT"), ("linkname", "VARCHAR"), ("offset_data", "BIGINT"),
    ("sha256", "VARCHAR"), ("whiteout", "VARCHAR"), ("hides", "VARCHAR"),
    ("xattrs", "MAP(VARCHAR, BLOB)"), ("devmajor", "INTEGER"), ("devminor", "INTEGER"),
    ("sparse", "STRUCT(\"offset\" BIGINT, length BIGINT)[]"),
)
MEMBER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("image_id", "VARCHAR"), ("position", "INTEGER"), ("visible", "BOOLEAN"),
    ("hidden_by_position", "INTEGER"), ("hidden_by_kind", "VARCHAR"),
    ("hidden_by_path", "VARCHAR"), ("hidden_by_markers", "INTEGER[]"),
    ("deletes_from_position", "INTEGER"),
    ("content_layer", "VARCHAR"), ("content_offset", "BIGINT"), ("content_size", "BIGINT"),
    ("content_sha256", "VARCHAR"),
)

TABLES = """
create table if not exists image_meta (
  id varchar primary key, config_digest varchar, index_digest varchar,
  manifest_media_type varchar, os varchar, architecture varchar, variant varchar,
  created varchar, author varchar, entrypoint varchar[], cmd varchar[], working_dir varchar,
  env varchar[], "user" varchar, labels map(varchar, varchar), layer_count integer,
  size bigint, compressed_size bigint, source varchar, ingested_at timestamp,
  config varchar, manifest varchar, seq bigint, member_count bigint, visible_count bigint
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
"""

VIEWS = """
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

-- a path's ancestor directories, nearest last: ancestors('/a/b/c') = ['/', '/a', '/a/b']
create or replace temp macro ancestors(p) as
  case when p = '/' then []::varchar[] else list_prepend('/', list_transform(
    range(2, len(string_split(p, '/'))),
    lambda i: array_to_string(string_split(p, '/')[1:i], '/'))) end;
"""


def _parquet_ok(path: str) -> bool:
    """A cheap check that ``path`` is a whole Parquet file (magic at both ends)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(-4, os.SEEK_END)
            return head == b"PAR1" and f.read(4) == b"PAR1"
    except OSError:
        return False


def _damage_message(bad: Sequence[str]) -> str:
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return f"{bad[0]}{more} is missing or damaged; run layerdb verify"


def sql_error(e: BaseException) -> str:
    """DuckDB's message on one line: its first line and its hint ("Did you mean ...?"),
    without the echo of the query."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = [ln for ln in lines[1:] if ln.lower().startswith(("did you mean", "candidate"))]
    msg = " ".join(lines[:1] + keep)
    if "run layerdb verify" not in msg and ".parquet" in msg and "/members/" in msg or "/files/" in msg:
        msg += " (a catalog file may be damaged: run layerdb verify)"
    return msg


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sql_list(paths: Sequence[str]) -> str:
    return "[" + ", ".join(sql_str(p) for p in paths) + "]"


def _empty_select(columns: Iterable[tuple[str, str]]) -> str:
    return "select " + ", ".join(f"cast(null as {t}) as \"{n}\"" for n, t in columns) + " where false"


_READ_ONLY = {"SELECT", "EXPLAIN"}


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


def connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path, read_only=read_only)
    except duckdb.Error as e:
        msg = str(e).splitlines()[0]
        if "lock" in msg.lower():
            raise CatalogError(f"catalog {os.path.dirname(path)} is being written by another "
                               "layerdb (ingest, rm or gc); try again when it is done") from e
        raise CatalogError(f"cannot open catalog {path}: {msg}") from e


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("select 1 from information_schema.tables where table_name = ?",
                            [name]).fetchall())


def check_format(con: duckdb.DuckDBPyConnection, root: str) -> None:
    has = _has_table(con, "catalog_format")
    if not _has_table(con, "image_meta"):
        return  # a first ingest was killed before its schema committed: an empty catalog
    version = con.execute("select max(version) from catalog_format").fetchall()[0][0] if has else 0
    if version != FORMAT_VERSION:
        raise CatalogError(
            f"catalog {root} has format {version or 'unknown'}, this layerdb reads format "
            f"{FORMAT_VERSION}: ingest into a new --catalog directory (or remove {root})")


class Catalog:
    """A read connection to the catalog at ``root`` with the views of docs/catalog.md.

    ``missing_ok``: a catalog that does not exist reads as empty (else ``NoCatalog``).
    ``sandbox``: only reading statements run, and no file outside the catalog but ``tables``
    (view name -> a CSV, JSON or Parquet file the user named) can be touched."""

    def __init__(self, root: str | None = None, *, missing_ok: bool = False,
                 sandbox: bool = False, tables: dict[str, str] | None = None) -> None:
        self.layout = Layout.at(root)
        self.root = self.layout.root
        self.sandbox = sandbox
        self.damaged: list[str] = []
        if not self.layout.exists():
            if not missing_ok:
                raise NoCatalog(f"no catalog at {self.root}; run layerdb ingest first "
                                "(or give --catalog DIR / $LAYERDB_HOME)")
            self.con = duckdb.connect(":memory:")
            self.con.execute(TABLES)
        else:
            self.con = connect(self.layout.db, read_only=True)
            try:
                check_format(self.con, self.root)
            except CatalogError:
                self.con.close()
                raise
            if not _has_table(self.con, "image_meta"):  # killed before its schema committed
                self.con.close()
                self.con = duckdb.connect(":memory:")
                self.con.execute(TABLES)
        try:
            self._define_views(tables or {})
        except duckdb.Error as e:
            self.con.close()
            raise CatalogError(f"cannot read catalog {self.root}: {str(e).splitlines()[0]}") from e

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _define_views(self, tables: dict[str, str]) -> None:
        con = self.con
        con.execute("set enable_progress_bar = false")  # it would print into our output
        s = settings()
        if s.query_memory:  # DuckDB spills to disk past it
            spill = os.path.join(tempfile.gettempdir(), f"layerdb-{os.getuid()}-spill")
            con.execute(f"set memory_limit = {sql_str(s.query_memory)}")
            con.execute(f"set temp_directory = {sql_str(spill)}")
        con.execute(VIEWS)
        layer_ids = [r[0] for r in con.execute("select diff_id from layer_meta order by diff_id").fetchall()]
        image_ids = [r[0] for r in con.execute("select id from image_meta order by id").fetchall()]
        files = [self.layout.files(d) for d in layer_ids]
        members = [self.layout.members(i) for i in image_ids]
        # a damaged file must not take every command down: the views skip it, and a query
        # that reads them is refused naming the file (images and layers still work)
        bad = [p for p in files + members if not _parquet_ok(p)]
        self.damaged = bad
        files = [p for p in files if p not in bad]
        members = [p for p in members if p not in bad]
        if files:
            src = f"select * from read_parquet({_sql_list(files)}, union_by_name = true)"
        else:
            src = _empty_select(FILE_COLUMNS)
        con.execute(f"create or replace temp view files as {src}")
        if members:
            src = f"select * from read_parquet({_sql_list(members)}, union_by_name = true)"
        else:
            src = _empty_select(MEMBER_COLUMNS + FILE_COLUMNS)
        con.execute(
            "create or replace temp view members as select i.name as image, m.* "
            f"from ({src}) m join (select id, name from images) i on i.id = m.image_id")
        con.execute("""
            create or replace temp view fs as
            select image, image_id, position,
                   coalesce(content_layer, layer) as content_layer,
                   coalesce(content_offset, offset_data) as content_offset,
                   * exclude (image, image_id, position, visible, hidden_by_position,
                              hidden_by_kind, hidden_by_path, hidden_by_markers,
                              deletes_from_position, content_layer, content_offset,
                              content_size, content_sha256)
                     replace (case when type = 'hardlink' then coalesce(content_size, 0)
                                   else size end as size,
                              case when type = 'hardlink' then content_sha256
                                   else sha256 end as sha256)
            from members where visible""")
        # installed packages (layerdb.packages): package_records, packages, version_lt() ...
        from ..packages import catalog_sql, committed_files

        package_files = committed_files(self.root, layer_ids)
        catalog_sql.define(con, package_files)
        for name, path in tables.items():
            con.execute(f'create or replace temp view "{name}" as select * from '
                        f"{_reader(path)}({sql_str(os.path.abspath(path))})")
        if self.sandbox:
            allowed = [self.layout.db, *files, *members, *package_files,
                       *(os.path.abspath(p) for p in tables.values())]
            con.execute(f"set allowed_paths = {_sql_list(allowed)}")
            con.execute("set enable_external_access = false")
            con.execute("set lock_configuration = true")

    # queries -------------------------------------------------------------------------
    def _check_statements(self, sql: str) -> None:
        if self.damaged and re.search(r"\b(files|members|fs)\b", sql, re.IGNORECASE):
            raise CatalogError(_damage_message(self.damaged))
        if not self.sandbox:
            return
        try:
            stmts = duckdb.extract_statements(sql)
        except duckdb.Error as e:
            raise CatalogError(f"query failed: {sql_error(e)}") from e
        for st in stmts:
            kind = str(st.type).rsplit(".", 1)[-1]
            if kind not in _READ_ONLY:
                raise CatalogError(
                    f"query refused: {kind} statements are not allowed; layerdb sql only reads "
                    "the catalog (write results with -o FILE)")

    def query(self, sql: str, params: dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Run SQL; return (column names, rows). Errors become ``CatalogError``."""
        self._check_statements(sql)
        try:
            cur = self.con.execute(sql, params or None)
            if cur.description is None:
                return [], []
            names = [d[0] for d in cur.description]
            return names, cur.fetchall()
        except duckdb.Error as e:
            raise CatalogError(f"query failed: {sql_error(e)}") from e

    def query_iter(self, sql: str, params: dict[str, Any] | None = None,
                   batch: int = 10000) -> tuple[list[str], Iterator[tuple]]:
        """Run SQL; return (column names, rows as they are fetched, ``batch`` at a time), for a
        result too big to hold as Python tuples. Read the rows before the next query."""
        self._check_statements(sql)
        try:
            cur = self.con.execute(sql, params or None)
        except duckdb.Error as e:
            raise CatalogError(f"query failed: {sql_error(e)}") from e
        if cur.description is None:
            return [], iter(())

        def rows() -> Iterator[tuple]:
            try:
                while chunk := cur.fetchmany(batch):
                    yield from chunk
            except duckdb.Error as e:
                raise CatalogError(f"query failed: {sql_error(e)}") from e

        return [d[0] for d in cur.description], rows()

    def arrow_batches(self, sql: str, params: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
        """The result as a pyarrow RecordBatchReader (for -o FILE.parquet)."""
        self._check_statements(sql)
        try:
            return self.con.sql(sql, params=params or None).to_arrow_reader(65536)
        except duckdb.Error as e:
            raise CatalogError(f"query failed: {sql_error(e)}") from e

    def copy_to_parquet(self, sql: str, params: dict[str, Any] | None, out: str) -> None:
        import pyarrow.parquet as pq

        reader = self.arrow_batches(sql, params)
        tmp = out + ".tmp"
        try:
            with pq.ParquetWriter(tmp, reader.schema, compression="zstd") as w:
                for b in reader:
                    w.write_batch(b)
            os.replace(tmp, out)
        except duckdb.Error as e:
            raise CatalogError(f"query failed: {sql_error(e)}") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def images(self) -> list[ImageRow]:
        return image_rows(self.con)

    def resolve_image(self, ref: str | None, platform: str | None = None) -> ImageRow:
        """Find one image by ref, id or config digest (see ``selection.choose_image``)."""
        return choose_image(self.images(), ref, platform)


def image_rows(con: duckdb.DuckDBPyConnection) -> list[ImageRow]:
    rows = con.execute(
        "select id, name, refs, platform, entrypoint, cmd, working_dir, env, config_digest, "
        "index_digest from images order by id").fetchall()
    return [ImageRow(r[0], r[1], list(r[2] or []), r[3], list(r[4] or []), list(r[5] or []),
                     r[6] or "", list(r[7] or []), r[8] or "", r[9] or "") for r in rows]


def _reader(path: str) -> str:
    ext = path.lower().rsplit(".", 1)[-1]
    return {"csv": "read_csv_auto", "tsv": "read_csv_auto", "json": "read_json_auto",
            "ndjson": "read_json_auto", "jsonl": "read_json_auto",
            "parquet": "read_parquet"}.get(ext, "read_csv_auto")


def refresh_lookup_from_catalog(layout: Layout) -> None:
    """Rebuild ``lookup.sqlite`` from the catalog (a reader's repair of a missing or stale
    index). Written atomically; safe beside a running ingest, which rewrites it after its own
    commits."""
    if not layout.exists():
        raise NoCatalog(f"no catalog at {layout.root}; run layerdb ingest first "
                        "(or give --catalog DIR / $LAYERDB_HOME)")
    from .writer import refresh_lookup

    con = connect(layout.db, read_only=True)
    try:
        check_format(con, layout.root)
        refresh_lookup(layout, con)
    finally:
        con.close()
