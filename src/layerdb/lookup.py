"""The extract fast path: the catalog's images and merged views as a SQLite index.

``extract`` is a lookup of a few paths in one image; importing duckdb alone costs more than
the whole lookup (about 0.1 s and 40 MB). So the catalog also keeps ``lookup.sqlite``
(written by ``Catalog`` only, after each committed transaction): the images with their refs,
and every merged-view row with the columns extraction needs, keyed by (image, path). SQLite
ships with Python and opens in milliseconds.

The index may lag the catalog (an ingest killed between the two commits): an image it does
not know is looked up through DuckDB instead, so it is never wrong, at worst slower. This
module imports nothing heavy, and neither duckdb nor pyarrow.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ImageNotFound
from .model import Platform, ref_matches

NAME = "lookup.sqlite"
FORMAT_VERSION = 1  # of the whole catalog: bump when tables or Parquet columns change

#: merged-view columns the index keeps (what extract reads), in this order
FS_COLUMNS = ("path", "raw_path", "type", "size", "mode", "uid", "gid", "uname", "gname",
              "mtime", "linkname", "content_layer", "content_offset", "sha256", "devmajor",
              "devminor")

# Rows are kept small (a 1M-file image costs ~100 MB): images and layers are integers here
# (image_keys and layer_keys never renumber), sha256 is 32 bytes.
SCHEMA = """
create table if not exists images (
  id text primary key, name text, refs text, platform text, entrypoint text, cmd text,
  working_dir text, env text, config_digest text);
create table if not exists image_keys (n integer primary key, id text unique not null);
create table if not exists layer_keys (n integer primary key, diff_id text unique not null);
create table if not exists fs (
  image integer not null, path text not null, raw_path blob, type text, size integer,
  mode integer, uid integer, gid integer, uname text, gname text, mtime integer,
  linkname text, layer integer, content_offset integer, sha256 blob, devmajor integer,
  devminor integer, primary key (image, path)) without rowid;
create table if not exists indexed (image text primary key);
create table if not exists blobs (digest text primary key);
create table if not exists meta (format integer);
"""
_SELECT = ("select f.path, f.raw_path, f.type, f.size, f.mode, f.uid, f.gid, f.uname, f.gname, "
           "f.mtime, f.linkname, l.diff_id, f.content_offset, f.sha256, f.devmajor, f.devminor "
           "from fs f left join layer_keys l on l.n = f.layer")


@dataclass(frozen=True)
class ImageRow:
    id: str
    name: str
    refs: list[str]
    platform: str
    entrypoint: list[str]
    cmd: list[str]
    working_dir: str
    env: list[str]
    config_digest: str = ""


def choose_image(rows: Sequence[ImageRow], ref: str | None, platform: str | None) -> ImageRow:
    """Pick one image by ref (``repo:tag``; ``repo`` means ``repo:latest``), id or config
    digest (full or a prefix of at least 4 hex digits). Without ``ref`` there must be exactly
    one image (per platform). Raises ``ImageNotFound`` naming the candidates."""
    want = Platform.parse(platform) if platform else None
    found = list(rows)
    if ref:
        ref = ref.strip()
        hexpart = ref[7:] if ref.startswith("sha256:") else ref
        is_hex = len(hexpart) >= 4 and all(c in "0123456789abcdef" for c in hexpart)

        def hit(r: ImageRow) -> bool:
            if any(ref_matches(ref, x) for x in r.refs):
                return True
            return is_hex and (r.id[7:].startswith(hexpart) or r.config_digest[7:].startswith(hexpart))

        found = [r for r in found if hit(r)]
    if want:
        found = [r for r in found if Platform.parse(r.platform).matches(want)]
    if len(found) > 1 and not want:
        host = [r for r in found if r.platform.startswith(host_platform())]
        if len(host) == 1:
            found = host
    if not found:
        what = f"no image matches {ref!r}" if ref else "the catalog holds no image"
        if platform:
            what += f" for platform {platform}"
        raise ImageNotFound(what)
    if len(found) > 1:
        names = ", ".join(f"{r.name} ({r.id[:19]}, {r.platform})" for r in found[:10])
        raise ImageNotFound(
            f"{len(found)} images match {ref or 'no --image'}: {names}; name one with --image"
            + ("" if want else " or --platform"))
    return found[0]


def default_root() -> str:
    """``$LAYERDB_HOME``, else ``$XDG_DATA_HOME/layerdb``, else ``~/.local/share/layerdb``."""
    if os.environ.get("LAYERDB_HOME"):
        return os.environ["LAYERDB_HOME"]
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "layerdb")


def host_platform() -> str:
    import platform as _p

    m = _p.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)
    return f"linux/{arch}"


class LookupIndex:
    """Read side of ``lookup.sqlite``: ``resolve_image``, ``lookup``, ``subtree``."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    @classmethod
    def open(cls, root: str) -> LookupIndex | None:
        path = os.path.join(root, NAME)
        if not os.path.exists(path):
            return None
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            con.execute("select 1 from images limit 1").fetchall()
        except sqlite3.Error:
            return None
        return cls(con)

    def close(self) -> None:
        self.con.close()

    def images(self) -> list[ImageRow]:
        rows = self.con.execute(
            "select id, name, refs, platform, entrypoint, cmd, working_dir, env, config_digest "
            "from images where id in (select image from indexed) order by id").fetchall()
        return [ImageRow(r[0], r[1], json.loads(r[2]), r[3], json.loads(r[4]), json.loads(r[5]),
                         r[6], json.loads(r[7]), r[8]) for r in rows]

    def known(self) -> tuple[dict[str, set[str]], set[str]] | None:
        """Every recorded image's refs, and every recorded blob digest (None: not known)."""
        try:
            fmt = self.con.execute("select max(format) from meta").fetchone()
            if not fmt or fmt[0] != FORMAT_VERSION:
                return None
            refs = {r[0]: set(json.loads(r[1])) for r in self.con.execute("select id, refs from images")}
            blobs = {r[0] for r in self.con.execute("select digest from blobs")}
        except sqlite3.Error:
            return None
        return refs, blobs

    def resolve_image(self, ref: str | None, platform: str | None) -> ImageRow:
        """As ``choose_image`` over the indexed images. Not finding one here is no answer:
        the caller asks the catalog (the index may lag it)."""
        return choose_image(self.images(), ref, platform)

    def lookup(self, image_id: str, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not paths:
            return {}
        marks = ", ".join("?" for _ in paths)
        return self._rows(image_id, f"f.path in ({marks})", list(paths))

    def subtree(self, image_id: str, path: str) -> list[dict[str, Any]]:
        if path == "/":
            rows = self._rows(image_id, "true", [])
        else:  # "p/..." sorts between "p/" and "p0" ('0' follows '/')
            rows = self._rows(image_id, "(f.path = ? or (f.path >= ? and f.path < ?))",
                              [path, path + "/", path + "0"])
        return [rows[k] for k in sorted(rows)]

    def _rows(self, image_id: str, where: str, params: list) -> dict[str, dict[str, Any]]:
        key = self.con.execute("select n from image_keys where id = ?", [image_id]).fetchone()
        if key is None:
            return {}
        cur = self.con.execute(f"{_SELECT} where f.image = ? and {where}", [key[0], *params])
        out = {}
        for r in cur:
            row = dict(zip(FS_COLUMNS, r))
            if row["sha256"] is not None:
                row["sha256"] = bytes(row["sha256"]).hex()
            out[r[0]] = row
        return out


def write_index(path: str, images: Iterable[ImageRow],
                fs_rows: Iterable[tuple[str, Iterable[Sequence[Any]]]],
                blob_digests: Iterable[str] = ()) -> None:
    """Replace the images and blobs tables and add the merged views of new images
    (``fs_rows``: pairs of image id and its rows in ``FS_COLUMNS`` order), in one SQLite
    transaction."""
    con = sqlite3.connect(path)
    try:
        con.execute("pragma journal_mode = wal")
        con.executescript(SCHEMA)
        with con:
            con.execute("delete from meta")
            con.execute("insert into meta values (?)", [FORMAT_VERSION])
            con.execute("delete from blobs")
            con.executemany("insert or ignore into blobs values (?)", ((d,) for d in blob_digests))
            con.execute("delete from images")
            con.executemany(
                "insert into images values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(i.id, i.name, json.dumps(i.refs), i.platform, json.dumps(i.entrypoint),
                  json.dumps(i.cmd), i.working_dir, json.dumps(i.env), i.config_digest)
                 for i in images])
            marks = ", ".join("?" for _ in range(len(FS_COLUMNS) + 1))
            layer_n: dict[str, int] = dict(
                (d, n) for n, d in con.execute("select n, diff_id from layer_keys"))
            i_layer, i_sha = FS_COLUMNS.index("content_layer"), FS_COLUMNS.index("sha256")

            def packed(n: int, rows: Iterable[Sequence[Any]]) -> Iterator[tuple]:
                for r in rows:
                    r = list(r)
                    d = r[i_layer]
                    if d is not None:
                        if d not in layer_n:
                            con.execute("insert into layer_keys (diff_id) values (?)", [d])
                            layer_n[d] = con.execute(
                                "select n from layer_keys where diff_id = ?", [d]).fetchone()[0]
                        r[i_layer] = layer_n[d]
                    if r[i_sha] is not None:
                        r[i_sha] = bytes.fromhex(r[i_sha])
                    yield (n, *r)

            for image_id, rows in fs_rows:
                con.execute("insert or ignore into image_keys (id) values (?)", [image_id])
                n = con.execute("select n from image_keys where id = ?", [image_id]).fetchone()[0]
                con.execute("delete from fs where image = ?", [n])
                con.executemany(f"insert into fs values ({marks})", packed(n, rows))
                con.execute("insert or ignore into indexed values (?)", [image_id])
    finally:
        con.close()
