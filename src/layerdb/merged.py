"""The read interface of an image's merged filesystem: ``FsEntry`` rows behind ``MergedView``.

Extract, slim, ls and every other reader of "what does the running container see" use this
protocol only, whichever backend answers (the DuckDB catalog, or the catalog's DuckDB-free
lookup index). Importing this module loads neither duckdb nor pyarrow.

Path identity is bytes: ``FsEntry.raw`` is the path as the layer's tar names it (absolute,
normalised); ``FsEntry.path`` is its display form (UTF-8, undecodable bytes shown as
``\\xNN``), which may be lossy. Two entries are the same file only if their ``raw`` is equal.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .selection import ImageRow


@dataclass(frozen=True)
class FsEntry:
    """One entry of an image's merged filesystem (see docs/catalog.md, view ``fs``).

    ``size`` and ``sha256`` are those of the bytes the entry has: for a hardlink, its target's.
    The bytes are at ``content_offset`` in the uncompressed tar of layer ``content_layer``
    (a diff_id). For a sparse file, ``sparse`` lists the (logical offset, length) of each data
    region in stored order: the stored bytes are those regions one after the other, and the
    file is ``size`` bytes long with zeros elsewhere; ``()`` for an ordinary file."""

    path: str
    raw: bytes
    type: str  # file, dir, symlink, hardlink, char, block, fifo
    size: int = 0
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    mtime: int = 0
    linkname: str | None = None
    content_layer: str | None = None
    content_offset: int | None = None
    sha256: str | None = None
    devmajor: int | None = None
    devminor: int | None = None
    position: int = -1  # the layer (0 = base) that provides the entry; -1: implied directory
    sparse: tuple[tuple[int, int], ...] = ()

    @property
    def name(self) -> bytes:
        """The last component of the raw path (``b""`` for the root)."""
        return self.raw.rsplit(b"/", 1)[-1]

    @classmethod
    def implied_dir(cls, path: str) -> FsEntry:
        """A directory no layer has an entry for, created by the runtime (0755, root)."""
        return cls(path=path, raw=path.encode("utf-8", "surrogateescape"), type="dir")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> FsEntry:
        """From a row of the ``fs`` view or of the lookup index (column names as there)."""
        raw = row.get("raw_path")
        sha = row.get("sha256")
        if isinstance(sha, (bytes, bytearray, memoryview)):
            sha = bytes(sha).hex()
        sparse = row.get("sparse") or ()
        return cls(
            path=row["path"], raw=bytes(raw) if raw else row["path"].encode("utf-8"),
            type=row["type"], size=int(row.get("size") or 0),
            mode=int(row["mode"]) if row.get("mode") is not None else 0o755,
            uid=int(row.get("uid") or 0), gid=int(row.get("gid") or 0),
            uname=row.get("uname") or "", gname=row.get("gname") or "",
            mtime=int(row.get("mtime") or 0), linkname=row.get("linkname"),
            content_layer=row.get("content_layer"), content_offset=row.get("content_offset"),
            sha256=sha, devmajor=row.get("devmajor"), devminor=row.get("devminor"),
            position=int(row["position"]) if row.get("position") is not None else -1,
            sparse=tuple((int(x["offset"]), int(x["length"])) if isinstance(x, dict)
                         else (int(x[0]), int(x[1])) for x in sparse))


class MergedView(Protocol):
    """What a running container of an image sees, by path. Implemented by the catalog's
    backends; open one with ``open_view``. Paths are absolute display paths (``/usr/bin``);
    every method answers for one image, named by its id (``ImageRow.id``)."""

    def images(self) -> list[ImageRow]:
        """Every image the view can answer for, sorted by id."""
        ...

    def resolve_image(self, ref: str | None, platform: str | None = None) -> ImageRow:
        """One image by ref, id (prefix) or config digest; raises ``ImageNotFound``."""
        ...

    def lookup(self, image_id: str, paths: Sequence[str]) -> dict[str, FsEntry]:
        """The entries at exactly these paths (absent paths are left out)."""
        ...

    def subtree(self, image_id: str, path: str) -> Iterator[FsEntry]:
        """``path`` and every entry below it, sorted by raw path."""
        ...

    def member(self, image_id: str, position: int, path: str) -> FsEntry | None:
        """The member at ``path`` as stored in layer ``position`` (0 = base) of the image,
        whether or not an upper layer hides, replaces or deletes it; None when that layer has
        no such member (whiteout markers are not members here). Within a layer the last
        member of a name wins. ``content_layer``/``content_offset``/``size``/``sha256`` are
        the member's own bytes (for a hardlink: none; its ``linkname`` names the target).
        Raises ``UsageError`` when the image has no layer ``position``."""
        ...

    def close(self) -> None: ...


def open_view(root: str | None = None, image: str | None = None) -> MergedView:
    """The merged views of the catalog at ``root`` (default: ``$LAYERDB_HOME``...), read
    without duckdb or pyarrow: images from ``lookup.sqlite``, entries from the layer indexes
    and each image's fate file. When the lookup index is missing or stale (it says so: it is
    stamped with the database it describes), it is rebuilt from the catalog first. Raises
    ``NoCatalog`` when there is no catalog. ``image`` is accepted for symmetry; any image of
    the catalog can be asked for."""
    from .catalog.fastview import FastView
    from .catalog.layout import Layout
    from .catalog.lookupindex import LookupIndex

    layout = Layout.at(root)
    idx = LookupIndex.open(layout)
    if idx is None:
        from .catalog.db import refresh_lookup_from_catalog

        refresh_lookup_from_catalog(layout)
        idx = LookupIndex.open(layout)
        if idx is None:
            from .errors import CatalogError

            raise CatalogError(f"catalog {layout.root}: cannot build its lookup index "
                               "(is the directory writable?)")
    return FastView(layout, idx)
