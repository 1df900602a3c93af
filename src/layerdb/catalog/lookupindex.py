"""``lookup.sqlite``: the catalog's images, refs and blob digests, for readers that must not
pay for duckdb (extract, the re-ingest shortcut). SQLite ships with Python and opens in
milliseconds. Merged-view rows are not here: they come from the layer indexes and fate files
(``fastview``).

The writer rewrites the whole file after each commit (it is small: a row per image). It
records which ``catalog.duckdb`` it describes (inode, size, mtime): when the database has
changed since (an ingest killed between its commit and this write), or the file came from
another catalog, ``LookupIndex.open`` treats it as absent, and readers refresh it from the
catalog (``refresh``). This module imports neither duckdb nor pyarrow.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable

from ..selection import ImageRow, choose_image
from .layout import FORMAT_VERSION, Layout

SCHEMA = """
create table images (
  id text primary key, name text, refs text, platform text, entrypoint text, cmd text,
  working_dir text, env text, config_digest text, layers text, index_digest text);
create table blobs (digest text primary key);
create table meta (format integer, db_stamp text);
"""


def db_stamp(layout: Layout) -> str:
    try:
        st = os.stat(layout.db)
    except FileNotFoundError:
        return ""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class LookupIndex:
    """Read side: ``images``, ``resolve_image``, ``known``, ``layers_of``."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    @classmethod
    def open(cls, layout: Layout) -> LookupIndex | None:
        """The index, or None when it is missing, unreadable, of another format (an older
        layerdb's, without ``index_digest``), or does not describe the catalog database as it
        is now."""
        if not os.path.exists(layout.lookup):
            return None
        try:
            con = sqlite3.connect(f"file:{layout.lookup}?mode=ro", uri=True)
        except sqlite3.Error:
            return None
        try:
            row = con.execute("select format, db_stamp from meta").fetchone()
            con.execute("select index_digest from images limit 0")  # absent: an older writer's
        except sqlite3.Error:
            con.close()
            return None
        if not row or row[0] != FORMAT_VERSION or row[1] != db_stamp(layout):
            con.close()
            return None
        return cls(con)

    def close(self) -> None:
        self.con.close()

    def images(self) -> list[ImageRow]:
        rows = self.con.execute(
            "select id, name, refs, platform, entrypoint, cmd, working_dir, env, config_digest, "
            "index_digest from images order by id").fetchall()
        return [ImageRow(r[0], r[1], json.loads(r[2]), r[3], json.loads(r[4]), json.loads(r[5]),
                         r[6], json.loads(r[7]), r[8], r[9] or "") for r in rows]

    def layers_of(self, image_id: str) -> list[str] | None:
        row = self.con.execute("select layers from images where id = ?", [image_id]).fetchone()
        return json.loads(row[0]) if row else None

    def known(self) -> tuple[dict[str, set[str]], set[str]]:
        """Every recorded image's refs, and every recorded (verified) blob digest."""
        refs = {r[0]: set(json.loads(r[1])) for r in self.con.execute("select id, refs from images")}
        blobs = {r[0] for r in self.con.execute("select digest from blobs")}
        return refs, blobs

    def resolve_image(self, ref: str | None, platform: str | None = None) -> ImageRow:
        return choose_image(self.images(), ref, platform)


def write(layout: Layout, images: Iterable[tuple[ImageRow, list[str]]],
          blob_digests: Iterable[str]) -> None:
    """Replace the index with these images (and the diff_ids of their layers by position)
    and blob digests, stamped with the database as it is now. Atomic: a new file renamed
    over the old one."""
    tmp = layout.lookup + f".{os.getpid()}.tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    con = sqlite3.connect(tmp)
    try:
        con.executescript(SCHEMA)
        with con:
            con.execute("insert into meta values (?, ?)", [FORMAT_VERSION, db_stamp(layout)])
            con.executemany("insert or ignore into blobs values (?)", ((d,) for d in blob_digests))
            con.executemany(
                "insert into images values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(i.id, i.name, json.dumps(i.refs), i.platform, json.dumps(i.entrypoint),
                  json.dumps(i.cmd), i.working_dir, json.dumps(i.env), i.config_digest,
                  json.dumps(layers), i.index_digest) for i, layers in images])
    finally:
        con.close()
    os.replace(tmp, layout.lookup)
