"""``layerdb ls``: an image's merged tree (through ``merged.open_view``), or one layer's own
members marked added / modified / removed as dive's layer view marks them.

Rows are ``FsEntry`` values; the human forms (``ls -l`` columns, a ``tree`` drawing) are built
here, with every name made printable (control characters never reach a terminal raw).
"""
from __future__ import annotations

import posixpath
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import PathNotFound, UsageError, printable
from .merged import FsEntry

_TYPE_BITS = {"file": stat.S_IFREG, "hardlink": stat.S_IFREG, "dir": stat.S_IFDIR,
              "symlink": stat.S_IFLNK, "char": stat.S_IFCHR, "block": stat.S_IFBLK,
              "fifo": stat.S_IFIFO}

#: status of a layer member, as dive's layer view marks it
ADDED, MODIFIED, REMOVED, OPAQUE = "added", "modified", "removed", "opaque"


@dataclass(frozen=True)
class Row:
    """One listed entry; ``status`` is set for ``--layer`` listings only."""

    entry: FsEntry
    status: str = ""


def absolute(path: str | None, working_dir: str) -> str:
    """``path`` inside the image: absolute, or relative to WorkingDir; normalised."""
    p = path or "/"
    if not p.startswith("/"):
        p = posixpath.join(working_dir or "/", p)
    p = posixpath.normpath(p)
    return "/" if p in ("/", "//", ".") else p


def _parent(path: str) -> str:
    return posixpath.dirname(path) or "/"


def merged_rows(root: str, image: str, platform: str | None, path: str | None,
                recursive: bool) -> tuple[Any, list[Row]]:
    """The merged view at ``path`` of ``image``: the entry itself when it is not a directory,
    else its children (``recursive``: every entry below, directories the runtime would create
    included). Returns (image row, rows sorted by path)."""
    from .merged import open_view

    view = open_view(root, image)
    try:
        img = view.resolve_image(image, platform)
        want = absolute(path, img.working_dir)
        entries = list(view.subtree(img.id, want))
    finally:
        view.close()
    top = next((e for e in entries if e.path == want), None)
    if top is None and not entries:
        raise PathNotFound(f"{img.name}: {want}: no such file or directory")
    if top is not None and top.type != "dir":
        return img, [Row(top)]
    return img, [Row(e) for e in with_implied_dirs(entries, want, recursive)]


def with_implied_dirs(entries: Iterable[FsEntry], top: str, recursive: bool) -> Iterator[FsEntry]:
    """The entries below ``top`` (children only unless ``recursive``), adding the directories
    no layer has an entry for (``/d/x`` without ``/d``), sorted by path."""
    have: dict[str, FsEntry] = {}
    prefix = top.rstrip("/") + "/"
    for e in entries:
        if e.path == top or not e.path.startswith(prefix):
            continue
        have[e.path] = e
        d = _parent(e.path)
        while d != top and d.startswith(prefix) and d not in have:
            have[d] = FsEntry.implied_dir(d)
            d = _parent(d)
    out = sorted(have.values(), key=lambda e: e.path.split("/"))
    if not recursive:
        out = [e for e in out if _parent(e.path) == top]
    return iter(out)


def layer_rows(root: str, image: str, platform: str | None, position: int,
               path: str | None) -> tuple[Any, list[Row]]:
    """The members of layer ``position`` (0 = base) of ``image`` under ``path``, each marked
    added, modified (the path was visible below) or removed (a whiteout: the row is the path
    it hides; an opaque marker's row is its directory)."""
    from .catalog import Catalog

    with Catalog(root) as cat:
        img = cat.resolve_image(image, platform)
        _, n = cat.query("select count(*) from image_layers where image_id = $id", {"id": img.id})
        count = n[0][0]
        if not 0 <= position < count:
            raise UsageError(f"{img.name} has {count} layer(s): --layer takes 0 to {count - 1}")
        want = absolute(path, img.working_dir)
        cols, rows = layer_members(cat, img.id, position, want)
    out = []
    for r in rows:
        d = dict(zip(cols, r))
        status = d.pop("status")
        out.append(Row(FsEntry.from_row({**d, "position": position}), status))
    return img, out


def layer_members(cat: Any, image_id: str, position: int, under: str) -> tuple[list[str], list[tuple]]:
    """One query, over the ``members`` view (every member of the image with the fate computed
    at ingest), of layer ``position``'s members under ``under`` with their status. A member is
    ``modified`` when a lower member at its identity (raw path) leaves the stack at this very
    layer (``hidden_by_position``): it was visible just below; else ``added``. A whiteout row
    is ``removed`` (the path it hides), an opaque marker ``opaque`` (its directory). No whiteout
    rule is restated here. Within the layer the last member of a name (in tar order) speaks."""
    sql = """
    with m as (select position, idx, path, raw_path, hidden_by_position from members
               where image_id = $id and position < $n and idx >= 0 and hidden_by_position = $n),
    this as (select * from members where image_id = $id and position = $n and idx >= 0
             and ($under = '/' or coalesce(hides, path) = $under
                  or starts_with(coalesce(hides, path), $under || '/')))
    select coalesce(t.hides, t.path) as path, t.raw_path, t.type, t.size, t.mode, t.uid,
           t.gid, t.uname, t.gname, t.mtime, t.linkname, t.layer as content_layer,
           t.offset_data as content_offset, t.sha256, t.devmajor, t.devminor,
           case when t.whiteout = 'opaque' then 'opaque'
                when t.whiteout = 'whiteout' then 'removed'
                when exists (select 1 from m where m.path = t.path
                             and m.raw_path is not distinct from t.raw_path) then 'modified'
                else 'added' end as status
    from this t
    qualify row_number() over (partition by coalesce(t.hides, t.path), t.whiteout = 'opaque'
                               order by t.idx desc) = 1
    order by coalesce(t.hides, t.path), t.whiteout
    """
    return cat.query(sql, {"id": image_id, "n": position, "under": under})  # type: ignore[no-any-return]


# Human forms --------------------------------------------------------------------------------

def mode_string(e: FsEntry) -> str:
    """``-rwsr-xr-x`` as ls prints it."""
    return stat.filemode(_TYPE_BITS.get(e.type, 0) | (e.mode & 0o7777))


def _owner(name: str, n: int) -> str:
    return printable(name) if name else str(n)


def _when(mtime: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime)) if mtime > 0 else "-"


def display_name(e: FsEntry, full: bool, links: bool = True) -> str:
    """The path (``full``) or last component, printable, with what a link points to
    (``links``)."""
    name = e.path if full else (posixpath.basename(e.path) or e.path)
    s = printable(name)
    if not links:
        return s
    if e.type == "symlink":
        s += " -> " + printable(e.linkname or "")
    elif e.type == "hardlink":
        s += " link to " + printable(e.linkname or "")
    return s


_MARK = {ADDED: "A", MODIFIED: "M", REMOVED: "D", OPAQUE: "O"}


def long_lines(rows: list[Row], full: bool) -> list[str]:
    """``ls -l`` lines: mode, owner, group, size, mtime (UTC), name (``-> target``); a ``--layer``
    listing starts each with A/M/D/O."""
    from .output import human_bytes

    cells = []
    for r in rows:
        e = r.entry
        size = human_bytes(e.size) if e.type in ("file", "hardlink") else (
            f"{e.devmajor},{e.devminor}" if e.type in ("char", "block") else "-")
        cells.append(([_MARK.get(r.status, "")] if r.status else []) + [
            mode_string(e), _owner(e.uname, e.uid), _owner(e.gname, e.gid), size, _when(e.mtime),
            display_name(e, full)])
    if not cells:
        return []
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]) - 1)]
    size_col = len(cells[0]) - 3
    return ["  ".join((c[i].rjust(w) if i == size_col else c[i].ljust(w))
                      for i, w in enumerate(widths)) + "  " + c[-1] for c in cells]


def short_lines(rows: list[Row], full: bool) -> list[str]:
    """Names only, as plain ``ls`` (``--layer``: A/M/D/O first)."""
    return [(f"{_MARK.get(r.status, '')} " if r.status else "") + display_name(r.entry, full, False)
            for r in rows]


def tree_lines(rows: list[Row], top: str, long: bool) -> list[str]:
    """A ``tree`` drawing of ``rows`` (every entry below ``top``) under a ``top`` line."""
    children: dict[str, list[Row]] = {}
    for r in rows:
        children.setdefault(_parent(r.entry.path), []).append(r)
    known = {r.entry.path for r in rows}
    for p in list(children):  # a parent missing from rows (a layer listing) still hangs
        d = p
        while d != top and d not in known and d.startswith(top.rstrip("/") + "/"):
            known.add(d)
            children.setdefault(_parent(d), []).append(Row(FsEntry.implied_dir(d)))
            d = _parent(d)
    labels = dict(zip((id(r) for r in rows), long_lines(rows, False))) if long else {}
    out = [printable(top)]

    def walk(path: str, indent: str) -> None:
        kids = sorted(children.get(path, []), key=lambda r: r.entry.path)
        for i, r in enumerate(kids):
            last = i == len(kids) - 1
            mark = f"{_MARK.get(r.status, '')} " if r.status and not long else ""
            label = labels.get(id(r)) or mark + display_name(r.entry, False)
            out.append(indent + ("└── " if last else "├── ") + label)
            if r.entry.type == "dir":
                walk(r.entry.path, indent + ("    " if last else "│   "))

    walk(top, "")
    return out


COLUMNS = ("path", "type", "mode", "mode_string", "uid", "gid", "uname", "gname", "size",
           "mtime", "linkname", "content_layer", "sha256")


def records(rows: list[Row]) -> tuple[list[str], list[tuple]]:
    """Columns and rows for ``--format json|csv`` (exact values; ``content_layer`` is the
    diff_id of the layer that holds the entry, null for a directory the runtime creates)."""
    cols = list(COLUMNS) + (["status"] if any(r.status for r in rows) else [])
    out = []
    for r in rows:
        e = r.entry
        vals: list[Any] = [e.path, e.type, f"{e.mode & 0o7777:04o}", mode_string(e), e.uid, e.gid,
                           e.uname, e.gname, e.size, e.mtime, e.linkname, e.content_layer, e.sha256]
        if len(cols) > len(COLUMNS):
            vals.append(r.status)
        out.append(tuple(vals))
    return cols, out

