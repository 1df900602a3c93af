"""``MergedView`` without duckdb or pyarrow: images from ``lookup.sqlite``, entries from the
layers' sorted indexes, visibility from the image's fate file (``members``).

A path's entry is the member at that identity that the fate file does not list as hidden
(at most one is visible); a subtree is every such member below it, plus the directories the
runtime implies. No whiteout rule is restated here: the fate was computed once, at ingest.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import CatalogError, ImageNotFound
from ..merged import FsEntry
from ..selection import ImageRow
from .layerindex import LayerIndex
from .layout import Layout
from .lookupindex import LookupIndex
from .members import FateFile


def _display(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def _undisplay(raw: bytes) -> bytes:
    import re

    return re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)


def raw_of(path: str) -> bytes:
    """The identity bytes a command-line path names (surrogateescape keeps raw bytes)."""
    return path.encode("utf-8", "surrogateescape")


class FastView:
    def __init__(self, layout: Layout, index: LookupIndex) -> None:
        self.layout = layout
        self.index = index
        self._fates: dict[str, FateFile] = {}
        self._layers: dict[str, LayerIndex] = {}

    def close(self) -> None:
        for li in self._layers.values():
            li.close()
        self._layers.clear()
        self.index.close()

    def __enter__(self) -> FastView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # images ------------------------------------------------------------------------
    def images(self) -> list[ImageRow]:
        return self.index.images()

    def resolve_image(self, ref: str | None, platform: str | None = None) -> ImageRow:
        return self.index.resolve_image(ref, platform)

    # entries -----------------------------------------------------------------------
    def _fate(self, image_id: str) -> FateFile:
        if image_id not in self._fates:
            try:
                self._fates[image_id] = FateFile(self.layout.fate(image_id))
            except (OSError, ValueError) as e:
                raise ImageNotFound(f"image {image_id[:19]}: its member table is missing or "
                                    f"damaged ({e}); run layerdb verify") from e
        return self._fates[image_id]

    def _layer(self, diff_id: str) -> LayerIndex:
        if diff_id not in self._layers:
            try:
                self._layers[diff_id] = LayerIndex(self.layout.layer_index(diff_id))
            except (OSError, ValueError) as e:
                raise CatalogError(f"layer {diff_id[:19]}: its index is missing or damaged "
                                   f"({e}); run layerdb verify") from e
        return self._layers[diff_id]

    def _entry(self, fate: FateFile, position: int, diff_id: str, i: int,
               r: dict[str, Any]) -> FsEntry:
        layer: str | None = diff_id
        offset, size, sha = r["offset"], r["size"], r["sha256"]
        sparse = r["sparse"]
        if r["type"] == "hardlink":
            t = fate.links.get((position, i))
            if t is not None:
                layer, offset, size, sha = t
                sparse = ()
            else:  # a dangling hardlink: no bytes
                layer, offset, size, sha = None, None, 0, None
        return FsEntry(
            path=_display(r["raw"]), raw=r["raw"], type=r["type"], size=size, mode=r["mode"],
            uid=r["uid"], gid=r["gid"], uname=r["uname"], gname=r["gname"], mtime=r["mtime"],
            linkname=r["linkname"], content_layer=layer, content_offset=offset, sha256=sha,
            devmajor=r["devmajor"], devminor=r["devminor"], position=position, sparse=sparse)

    def _find(self, image_id: str, raw: bytes) -> FsEntry | None:
        fate = self._fate(image_id)
        for position in range(len(fate.layers) - 1, -1, -1):
            diff_id = fate.layers[position]
            li = self._layer(diff_id)
            for i in reversed(li.find(raw)):
                if fate.hidden(position, i):
                    continue
                r = li.row(i)
                if r["whiteout"] != "none":
                    continue
                return self._entry(fate, position, diff_id, i, r)
        if raw in fate.implied:
            return FsEntry.implied_dir(_display(raw))
        if raw == b"/":
            return FsEntry.implied_dir("/")
        return None

    def lookup(self, image_id: str, paths: Sequence[str]) -> dict[str, FsEntry]:
        out = {}
        for p in paths:
            raw = raw_of(p)
            e = self._find(image_id, raw)
            if e is None and b"\\x" in raw:
                # the display form of a name that is not UTF-8, as tables print it: an alias
                # only when no file has that very name (identity is the bytes)
                e = self._find(image_id, _undisplay(raw))
            if e is not None:
                out[p] = e
        return out

    def subtree(self, image_id: str, path: str) -> Iterator[FsEntry]:
        raw = raw_of(path)
        fate = self._fate(image_id)
        found: list[FsEntry] = []
        top = self._find(image_id, raw)
        if top is not None:
            found.append(top)
        for position, diff_id in enumerate(fate.layers):
            li = self._layer(diff_id)
            for i in li.below(raw):
                if fate.hidden(position, i):
                    continue
                r = li.row(i)
                if r["whiteout"] != "none":
                    continue
                found.append(self._entry(fate, position, diff_id, i, r))
        lo = raw.rstrip(b"/") + b"/"
        for k in fate.implied:
            if k.startswith(lo) or (raw == b"/" and k != b"/"):
                found.append(FsEntry.implied_dir(_display(k)))
        found.sort(key=lambda e: e.raw)
        yield from found

    def member(self, image_id: str, position: int, path: str) -> FsEntry | None:
        """The member at ``path`` as layer ``position`` of the image stores it, whether or
        not a running container sees it (the last one in the layer's tar order)."""
        fate = self._fate(image_id)
        n = len(fate.layers)
        if not 0 <= position < n:
            from ..errors import UsageError

            raise UsageError(f"no layer {position}: the image has {n} layer(s)"
                             + (f" (0-{n - 1})" if n else ""))
        diff_id = fate.layers[position]
        li = self._layer(diff_id)
        hits = li.find(raw_of(path))
        if not hits:
            return None
        i = hits[-1]
        r = li.row(i)
        if r["whiteout"] != "none":
            return None
        if r["type"] == "hardlink" and (position, i) not in fate.links:
            # not visible: no resolved bytes; its linkname names the target (as stored)
            return FsEntry(path=_display(r["raw"]), raw=r["raw"], type="hardlink", mode=r["mode"],
                           uid=r["uid"], gid=r["gid"], uname=r["uname"], gname=r["gname"],
                           mtime=r["mtime"], linkname=r["linkname"], position=position)
        return self._entry(fate, position, diff_id, i, r)

    def layer_count(self, image_id: str) -> int:
        return len(self._fate(image_id).layers)
