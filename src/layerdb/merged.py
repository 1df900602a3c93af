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

from .lookup import ImageRow


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
            sparse=tuple((int(a), int(b)) for a, b in sparse))


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


def open_view(root: str, image: str | None = None) -> MergedView:
    """The cheapest backend that knows the catalog at ``root``: the lookup index when it holds
    ``image`` (or any image, when ``image`` is None), else the DuckDB catalog."""
    from .lookup import LookupIndex

    idx = LookupIndex.open(root)
    if idx is not None:
        try:
            if image is None or idx.resolve_image(image, None):
                return _Adapter(idx, root)
        except Exception:  # noqa: BLE001 - not indexed (yet): the catalog answers
            pass
        idx.close()
    from .catalog import Catalog

    cat = Catalog(root)
    return _Adapter(cat, root, cat)


class _Adapter:
    """``MergedView`` over a backend whose rows are dicts (lookup index or catalog)."""

    def __init__(self, backend: Any, root: str | None = None, catalog: Any = None) -> None:
        self.backend = backend
        self.root = root
        self._catalog = catalog  # the DuckDB catalog, opened when first needed
        self._layers: dict[str, list[str]] = {}

    def images(self) -> list[ImageRow]:
        if hasattr(self.backend, "images"):
            return self.backend.images()
        return self.backend._image_rows("true", [])

    def resolve_image(self, ref: str | None, platform: str | None = None) -> ImageRow:
        return self.backend.resolve_image(ref, platform)

    def lookup(self, image_id: str, paths: Sequence[str]) -> dict[str, FsEntry]:
        return {p: FsEntry.from_row(r) for p, r in self.backend.lookup(image_id, paths).items()}

    def subtree(self, image_id: str, path: str) -> Iterator[FsEntry]:
        for r in self.backend.subtree(image_id, path):
            yield FsEntry.from_row(r)

    def member(self, image_id: str, position: int, path: str) -> FsEntry | None:
        from .errors import UsageError

        cat = self._duckdb()
        layers = self._layers.get(image_id)
        if layers is None:
            rows = cat.query("select diff_id from image_layers where image_id = $id "
                             "order by position", {"id": image_id})[1]
            layers = self._layers[image_id] = [r[0] for r in rows]
        if not 0 <= position < len(layers):
            raise UsageError(f"no layer {position}: the image has {len(layers)} layer(s)"
                             + (f" (0-{len(layers) - 1})" if layers else ""))
        names, rows = cat.query(
            "select * from files where layer = $layer and path = $path and whiteout = 'none' "
            "order by idx desc limit 1", {"layer": layers[position], "path": path})
        if not rows:
            return None
        row = dict(zip(names, rows[0]))
        row.update(content_layer=row["layer"], content_offset=row["offset_data"],
                   position=position)
        return FsEntry.from_row(row)

    def _duckdb(self) -> Any:
        if self._catalog is None:
            from .catalog import Catalog

            self._catalog = Catalog(self.root)
        return self._catalog

    def close(self) -> None:
        if self._catalog is not None and self._catalog is not self.backend:
            self._catalog.close()
        self.backend.close()

    def __enter__(self) -> _Adapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
