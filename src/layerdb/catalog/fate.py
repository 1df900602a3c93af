"""Member fate: for each member of each layer of one image, whether a running container sees
it, and if not, which layer hides it and how (OCI image-spec, layer.md).

This is the one place that knows the whiteout rules; the ``members`` and ``fs`` views, the
reports and extract read its results. Identity is the member's raw path bytes
(``coalesce(raw_path, utf-8 of path)``): two names that print alike are still two files.

A member is
- ``visible``: the top entry at its path, not deleted, and not a whiteout marker;
- hidden by ``override``: a later member at the same path (a higher layer, or later in the
  same layer) replaces it;
- hidden by ``whiteout``: a ``.wh.NAME`` in a higher layer deletes its path or an ancestor;
- hidden by ``opaque``: a ``.wh..wh..opq`` in a higher layer empties an ancestor directory;
- hidden by ``ancestor``: a higher layer puts a non-directory where an ancestor directory was
  (the runtime removes the directory and everything below it);
- ``invalid``: a non-directory named ``/`` (a member called ``.``), which no runtime creates.
``hidden_by_position`` is the layer where the member leaves the stack: the lowest of the
layers that hide it. Whiteout and opaque markers themselves are never visible and have no
hider. When several things hide a member at that layer, the first one decides its kind: a later
member at the same path (override, or whiteout when that member is a ``.wh.`` marker of the
path), then the deletions in tar order (markers before files over directories).

What did it, for the reports (so that none restates these rules):
- ``hidden_by_path``: the path the deletion that decides the kind names (whiteout: the path it
  deletes, the member's own or an ancestor; opaque: the marker's directory; ancestor: the
  non-directory's path); none for an override or an invalid member;
- ``hidden_by_markers``: every whiteout or opaque marker of the layer at ``hidden_by_position``
  that deletes the member (its own path's ``.wh.`` when that is the next entry there, or a
  marker naming an ancestor), by tar member number, also when a later copy is the kind;
- for a whiteout marker, ``deletes_from_position``: the newest layer with something in what it
  deletes (the entry just before it at its path, when that is no marker, or anything below
  its path in a lower layer); dive's directory type rule reads it.

Work is vectorised (pyarrow, numpy) over the image's members sorted by identity: one sort,
then a scan of neighbours for overrides and a binary search per deletion for subtrees, so the
cost is a sort of the image's members and memory a few arrays of them.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

KINDS = ("override", "whiteout", "opaque", "ancestor", "invalid")
_K_OVERRIDE, _K_WHITEOUT, _K_OPAQUE, _K_ANCESTOR, _K_INVALID = range(1, 6)
_NEVER = np.iinfo(np.int32).max

MEMBER_COLUMNS = ("idx", "path", "raw_path", "parent", "type", "whiteout", "linkname")


def identity(path: pa.ChunkedArray | pa.Array, raw: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The identity bytes of each member: its raw name when the name is not UTF-8, else the
    UTF-8 bytes of its path (a view of the path column's bytes when every name is UTF-8)."""
    if raw.null_count == len(raw):
        return pc.cast(path, pa.binary())
    return pc.coalesce(raw, pc.cast(path, pa.binary()))


def display(key: bytes) -> str:
    """The display form of identity bytes (as ``path`` shows them: ``\\xNN`` for bytes that
    are not UTF-8)."""
    return key.decode("utf-8", "backslashreplace")


def _parent(key: bytes) -> bytes:
    if key == b"/":
        return b""
    p = key.rsplit(b"/", 1)[0]
    return p or b"/"


def _ancestors(key: bytes) -> Iterator[bytes]:
    while key not in (b"/", b""):
        key = _parent(key)
        yield key


def _under(prefix: bytes) -> tuple[bytes, bytes]:
    """The bounds of the keys strictly below ``prefix`` in byte order: [lo, hi)."""
    if prefix == b"/":
        return b"/", b"0"  # every key but "/" itself (filtered by the caller)
    return prefix + b"/", prefix + b"0"  # '0' follows '/'


@dataclass
class LayerFate:
    """The fate of every member of the layer at ``position``, indexed by member number."""

    position: int
    diff_id: str
    visible: np.ndarray  # bool
    hidden_by_position: np.ndarray  # int32, -1: none
    hidden_by_kind: np.ndarray  # int8: 0 none, else index into KINDS + 1
    # int32: -1 none, -2 the member's own path, else an index into ImageFate.paths
    hidden_by_path: np.ndarray
    # the markers (member numbers in the layer at hidden_by_position) that delete each member:
    # those of member i are marker_idx[marker_offsets[i]:marker_offsets[i + 1]]
    marker_offsets: np.ndarray  # int32, len(visible) + 1
    marker_idx: np.ndarray  # int32
    deletes_from_position: np.ndarray  # int32, -1: none (whiteout markers only)


@dataclass
class HardlinkTarget:
    layer: str
    offset: int
    size: int
    sha256: str | None
    sparse: object = None


@dataclass
class ImageFate:
    layers: list[LayerFate]
    # (position, idx) of a visible hardlink -> the member whose bytes it has
    links: dict[tuple[int, int], HardlinkTarget] = field(default_factory=dict)
    # directories no layer has an entry for, with the position of the first member below them
    implied: dict[bytes, int] = field(default_factory=dict)
    # the display paths LayerFate.hidden_by_path points into
    paths: list[str] = field(default_factory=list)

    def hidden_keys(self) -> np.ndarray:
        """Sorted ``position << 32 | idx`` of every member that is not visible."""
        parts = []
        for lf in self.layers:
            idx = np.flatnonzero(~lf.visible).astype(np.int64)
            parts.append((np.int64(lf.position) << 32) | idx)
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.sort(np.concatenate(parts))


def _read(path: str) -> pa.Table:
    # type and whiteout as dictionaries: a few bytes a member, not a string each
    return pq.read_table(path, columns=list(MEMBER_COLUMNS),
                         read_dictionary=["type", "whiteout", "parent"])


def _bisect(keys: pa.ChunkedArray, order: np.ndarray, k: bytes, right: bool = False) -> int:
    """bisect over ``keys`` in the sorted ``order``, without a sorted copy or a Python list."""
    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        v = keys[int(order[mid])].as_py()
        if v < k or (right and v == k):
            lo = mid + 1
        else:
            hi = mid
    return lo


def compute(layers: Sequence[tuple[int, str, str]]) -> ImageFate:
    """The fate of every member of one image. ``layers``: (position, diff_id, path of the
    layer's files Parquet), base first."""
    tables = [_read(p) for _, _, p in layers]
    counts = [t.num_rows for t in tables]
    n = sum(counts)
    pos = np.concatenate([np.full(c, p, dtype=np.int32) for (p, _, _), c in zip(layers, counts)]) \
        if n else np.zeros(0, dtype=np.int32)
    idx = np.concatenate([t.column("idx").to_numpy().astype(np.int32) for t in tables]) \
        if n else np.zeros(0, dtype=np.int32)
    # the identities, chunked as read: when names are UTF-8 they are views of the path
    # columns, not copies (memory is one copy of the image's paths; sorted keys are only
    # gathered a slice at a time)
    keys = pa.chunked_array([c for t in tables
                             for c in _chunks(identity(t.column("path"), t.column("raw_path")))],
                            type=pa.binary())
    # when every name is UTF-8 the indexer's parent column is each identity's parent, as a
    # dictionary: implied directories are then found without taking keys apart
    parents = [c for t in tables for c in t.column("parent").chunks] \
        if all(t.column("raw_path").null_count == t.num_rows for t in tables) else None
    tables = [t.drop_columns(["path", "raw_path", "parent"]) for t in tables]
    wh = np.concatenate([_code(t.column("whiteout"), {"whiteout": 1, "opaque": 2}) for t in tables]) \
        if n else np.zeros(0, dtype=np.int8)
    is_dir = np.concatenate([_code(t.column("type"), {"dir": 1}) for t in tables]).astype(bool) \
        if n else np.zeros(0, dtype=bool)
    is_link = np.concatenate([_code(t.column("type"), {"hardlink": 1}) for t in tables]).astype(bool) \
        if n else np.zeros(0, dtype=bool)

    # the key a member sets: a whiteout marker sets (deletes) the path it hides
    gkeys_py: dict[int, bytes] = {}
    # (prefix, position, kind, member): what lies below prefix in lower layers goes
    deletions: list[tuple[bytes, int, int, int]] = []
    for g in np.flatnonzero(wh).tolist():
        k = keys[g].as_py()
        parent, _, base = k.rpartition(b"/")
        parent = parent or b"/"
        if wh[g] == 1:
            hides = (parent.rstrip(b"/") + b"/" + base[4:]) if parent != b"/" else b"/" + base[4:]
            gkeys_py[g] = hides
            deletions.append((hides, int(pos[g]), _K_WHITEOUT, g))
        else:
            deletions.append((parent, int(pos[g]), _K_OPAQUE, g))
    gkeys = keys
    if gkeys_py:
        where = np.arange(n, dtype=np.int64)
        gs = list(gkeys_py)
        where[gs] = n + np.arange(len(gs))
        gkeys = pa.chunked_array([*keys.chunks, pa.array([gkeys_py[g] for g in gs], pa.binary())],
                                 type=pa.binary()).take(pa.array(where))

    hidden_by = np.full(n, _NEVER, dtype=np.int32)
    kind = np.zeros(n, dtype=np.int8)
    by_path = np.full(n, -1, dtype=np.int32)  # -2: own path, else index into deletions
    visible = np.zeros(n, dtype=bool)
    order = np.zeros(0, dtype=np.int32)
    deletes_from = np.full(n, -1, dtype=np.int32)
    pair_member: list[np.ndarray] = []  # (member, marker) pairs: the marker deletes the member
    pair_marker: list[np.ndarray] = []
    if n:
        # members are concatenated by (position, idx) and the sort is stable, so equal keys
        # stay in stack order without sorting on position and idx as well
        order = pc.sort_indices(gkeys).to_numpy().astype(np.int32)
        same = _same_as_next(gkeys, order)
        # opaque markers occupy no key: they never override anything
        not_opq = wh[order] != 2
        # the next non-opaque member at the same key (opaque markers sort by their own key,
        # which no other member shares but another opaque marker; skip them as followers)
        over = same & not_opq & np.append(not_opq[1:], False)
        del not_opq
        at = np.flatnonzero(over)
        del over
        og, g_next = order[at], order[at + 1]
        hidden_by[og] = pos[g_next]
        kind[og] = np.where(wh[g_next] == 1, _K_WHITEOUT, _K_OVERRIDE)
        by_path[og] = np.where(wh[g_next] == 1, -2, -1)
        del at, og, g_next
        # each whiteout marker and the entry just before it at its path (its own key)
        w_at = np.flatnonzero(wh[order] == 1)
        w_at = w_at[(w_at > 0)]
        w_at = w_at[same[w_at - 1]]
        wg, wprev = order[w_at], order[w_at - 1]
        keep = wh[wprev] == 0
        wg, wprev = wg[keep], wprev[keep]
        deletes_from[wg] = pos[wprev]
        del same, w_at, keep
        # a non-directory over a lower directory (or over anything a lower layer put below
        # it) deletes that subtree
        parents_below: set[bytes] = set()
        starts = np.cumsum([0] + counts)
        for li in range(len(layers)):
            lo, hi = int(starts[li]), int(starts[li + 1])
            if li > 0 and parents_below and hi > lo:
                cand = np.flatnonzero(~is_dir[lo:hi] & (wh[lo:hi] == 0)) + lo
                if len(cand):
                    ck = keys.take(pa.array(cand))
                    hit = pc.is_in(ck, value_set=pa.array(list(parents_below), pa.binary()))
                    for g in cand[np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)].tolist():
                        deletions.append((keys[g].as_py(), int(pos[g]), _K_ANCESTOR, g))
            if li == len(layers) - 1:
                break  # nothing lies above the top layer
            # the directories this layer puts (or implies) below everything above it
            for par in _unique_parents(keys.slice(lo, hi - lo)):
                if not par:
                    continue
                parents_below.add(par)
                parents_below.update(_ancestors(par))
            parents_below.discard(b"")
        # deletions hide what lies strictly below their prefix in lower layers
        spans: list[tuple[int, int]] = []
        for di, (prefix, p, k, g) in enumerate(deletions):
            a, b = _under(prefix)
            lo = _bisect(gkeys, order, a)
            hi = _bisect(gkeys, order, b)
            if prefix == b"/":
                lo = _bisect(gkeys, order, b"/", right=True)
            spans.append((lo, hi))
            if hi <= lo:
                continue
            gs = order[lo:hi]
            below = pos[gs] < p
            if k == _K_WHITEOUT and below.any():
                deletes_from[g] = max(int(deletes_from[g]), int(pos[gs][below].max()))
            hit_g = gs[below & (p < hidden_by[gs])]
            hidden_by[hit_g] = p
            kind[hit_g] = k
            by_path[hit_g] = di
        # every marker that deletes a member at the layer where it leaves the stack: its own
        # path's whiteout (when that is the entry after it there), and markers of its ancestors
        hb_w = hidden_by[wprev] == pos[wg]
        pair_member.append(wprev[hb_w])
        pair_marker.append(wg[hb_w])
        del wprev, wg, hb_w
        for (_, p, k, g), (lo, hi) in zip(deletions, spans):
            if k == _K_ANCESTOR or hi <= lo:
                continue
            gs = order[lo:hi]
            hit_g = gs[(pos[gs] < p) & (hidden_by[gs] == p) & (wh[gs] == 0)]  # markers have none
            if len(hit_g):
                pair_member.append(hit_g)
                pair_marker.append(np.full(len(hit_g), g, dtype=np.int32))
        # a non-directory at "/" is no file any runtime creates
        root = np.flatnonzero(np.asarray(pc.equal(keys, pa.scalar(b"/", pa.binary())).to_numpy(
            zero_copy_only=False), dtype=bool) & ~is_dir)
        kind[root] = _K_INVALID
        by_path[root] = -1
        hidden_by[root] = np.where(hidden_by[root] == _NEVER, -1, hidden_by[root])
        visible = (kind == 0) & (wh == 0)
        markers = wh != 0  # never visible, hidden by nothing
        kind[markers] = 0
        hidden_by[markers] = _NEVER
        by_path[markers] = -1

    # the pairs, by member then marker (tar order): per member offsets into the marker numbers
    pm = np.concatenate(pair_member).astype(np.int64) if pair_member else np.zeros(0, np.int64)
    pk = np.concatenate(pair_marker).astype(np.int64) if pair_marker else np.zeros(0, np.int64)
    del pair_member, pair_marker
    srt = np.lexsort((pk, pm))
    pm, pk = pm[srt], pk[srt]
    del srt
    pair_counts = np.bincount(pm, minlength=n) if len(pm) else np.zeros(n, dtype=np.int64)
    pair_starts = np.concatenate([[0], np.cumsum(pair_counts)]).astype(np.int64)
    marker_idx_all = idx[pk].astype(np.int32) if len(pk) else np.zeros(0, np.int32)
    # the display paths the deletions name, each once
    paths: dict[bytes, int] = {}
    del_path = np.array([paths.setdefault(prefix, len(paths)) for prefix, _, _, _ in deletions],
                        dtype=np.int32)
    if len(del_path):
        named = by_path >= 0
        by_path[named] = del_path[by_path[named]]

    fate = ImageFate(layers=[], paths=[display(k) for k in paths])
    starts = np.cumsum([0] + counts)
    for li, (p, d, _) in enumerate(layers):
        lo, hi = int(starts[li]), int(starts[li + 1])
        hb = hidden_by[lo:hi].copy()
        hb[hb == _NEVER] = -1
        off = pair_starts[lo:hi + 1]
        fate.layers.append(LayerFate(
            p, d, visible[lo:hi].copy(), hb, kind[lo:hi].copy(), by_path[lo:hi].copy(),
            (off - off[0]).astype(np.int32), marker_idx_all[int(off[0]):int(off[-1])].copy(),
            deletes_from[lo:hi].copy()))

    if n:
        _links(fate, tables, layers, pos, idx, visible, is_link, order, gkeys, starts)
        del gkeys
        _implied(fate, keys, pos, visible, parents)
    return fate


def _same_as_next(keys: pa.ChunkedArray, order: np.ndarray) -> np.ndarray:
    """For each place in the sorted ``order``: whether the next key is the same. The sorted
    keys are gathered a slice at a time, never all at once."""
    n = len(order)
    same = np.zeros(n, dtype=bool)
    for lo in range(0, n - 1, _STEP):
        sk = keys.take(pa.array(order[lo:lo + _STEP + 1]))
        m = len(sk) - 1
        same[lo:lo + m] = np.asarray(pc.equal(sk.slice(0, m), sk.slice(1)).to_numpy(
            zero_copy_only=False), dtype=bool)
    return same


def _chunks(a: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return a.chunks if isinstance(a, pa.ChunkedArray) else [a]


_STEP = 1 << 18  # keys taken at a time where a derived copy of them would be large


def _unique_parents(keys: pa.ChunkedArray) -> set[bytes]:
    """The distinct parent directories of ``keys``, a slice of them at a time."""
    out: set[bytes] = set()
    for lo in range(0, len(keys), _STEP):
        out.update(pc.unique(_parent_array(keys.slice(lo, _STEP))).to_pylist())
    return out


def _code(col: pa.ChunkedArray, codes: dict[str, int]) -> np.ndarray:
    out = np.zeros(len(col), dtype=np.int8)
    if isinstance(col, pa.ChunkedArray) and pa.types.is_dictionary(col.type):
        col = col.cast(pa.string()) if col.num_chunks == 0 else col
    for text, c in codes.items():
        hit = pc.fill_null(pc.equal(col, text), False).to_numpy(zero_copy_only=False)
        out[np.asarray(hit, dtype=bool)] = c
    return out


def _links(fate: ImageFate, tables: list[pa.Table], layers: Sequence[tuple[int, str, str]],
           pos: np.ndarray, idx: np.ndarray, visible: np.ndarray, is_link: np.ndarray,
           order: np.ndarray, gkeys: pa.ChunkedArray, starts: np.ndarray) -> None:
    """Each visible hardlink's bytes: the newest regular file at its target, at or below the
    link (earlier in the same layer), as a runtime unpacking the layers in order links it."""
    vis_links = np.flatnonzero(visible & is_link)
    if not len(vis_links):
        return
    layer_of = np.searchsorted(starts, np.arange(len(pos)), side="right") - 1
    extra: dict[int, pa.Table] = {}

    def table(li: int) -> pa.Table:
        if li not in extra:
            extra[li] = pq.read_table(layers[li][2], columns=["type", "offset_data", "size",
                                                              "sha256"])
        return extra[li]

    for g in vis_links.tolist():
        li = int(layer_of[g])
        link = tables[li].column("linkname")[int(g - starts[li])].as_py()
        if not link:
            continue
        target = link.encode("utf-8", "surrogateescape")
        lo = _bisect(gkeys, order, target)
        hi = _bisect(gkeys, order, target, right=True)
        best = None
        for j in range(lo, hi):
            t = int(order[j])
            if (pos[t], idx[t]) >= (pos[g], idx[g]):
                continue
            tl = int(layer_of[t])
            row = int(t - starts[tl])
            if table(tl).column("type")[row].as_py() != "file":
                continue
            if best is None or (pos[t], idx[t]) > (pos[best], idx[best]):
                best = t
        if best is None:
            continue
        tl = int(layer_of[best])
        row = int(best - starts[tl])
        tt = table(tl)
        fate.links[(int(pos[g]), int(idx[g]))] = HardlinkTarget(
            layers[tl][1], int(tt.column("offset_data")[row].as_py() or 0),
            int(tt.column("size")[row].as_py() or 0), tt.column("sha256")[row].as_py())


def _implied(fate: ImageFate, keys: pa.ChunkedArray, pos: np.ndarray, visible: np.ndarray,
             parents: list[pa.DictionaryArray] | None) -> None:
    """Directories that visible entries sit in but no visible member is: a runtime creates
    them (0755, root). Each gets the position of the lowest member below it. Any visible
    entry counts, not only a directory: a symlink or file that a hostile layer put members
    below stays what it is (extract refuses to write through it). ``parents``: the members'
    parent paths, chunked as ``keys`` (dictionaries), when every name is UTF-8; else parents
    are found a slice of the keys at a time, so no copy of all the keys is made."""
    vis = np.flatnonzero(visible)
    if not len(vis):
        return
    lowest: dict[bytes, int] = {}  # parent -> the lowest position of a visible entry in it
    if parents is not None:
        lo = 0
        for chunk in parents:
            hi = lo + len(chunk)
            code = chunk.indices.to_numpy(zero_copy_only=False)
            take = visible[lo:hi] & np.asarray(chunk.is_valid())  # the root has no parent
            best = np.full(len(chunk.dictionary), _NEVER, np.int32)
            np.minimum.at(best, code[take].astype(np.intp), pos[lo:hi][take])
            values = chunk.dictionary.to_pylist()
            for d in np.flatnonzero(best != _NEVER).tolist():
                k, p = values[d].encode(), int(best[d])
                if k not in lowest or p < lowest[k]:
                    lowest[k] = p
            lo = hi
    else:
        for lo in range(0, len(vis), _STEP):
            sel = vis[lo:lo + _STEP]
            par = pa.table({"k": _parent_array(keys.take(pa.array(sel))), "p": pa.array(pos[sel])})
            grouped = par.group_by("k").aggregate([("p", "min")])
            for k, p in zip(grouped.column("k").to_pylist(), grouped.column("p_min").to_pylist()):
                if k and (k not in lowest or p < lowest[k]):
                    lowest[k] = p
    if not lowest:
        return

    def present(cands: list[bytes]) -> set[bytes]:
        """Which of ``cands`` are visible entries: hash the few candidates, scan the keys."""
        vset = pa.array(cands, pa.binary())
        hit = np.asarray(pc.is_in(keys, value_set=vset).to_numpy(zero_copy_only=False), dtype=bool)
        return set(pc.unique(keys.filter(pa.array(hit & visible))).to_pylist())

    seen = present(list(lowest))
    missing = {k: p for k, p in lowest.items() if k not in seen}
    if not missing:
        return
    # their ancestors may be missing too: one membership test for all of them
    cand: dict[bytes, int] = {}
    for k, p in missing.items():
        for a in (k, *_ancestors(k)):
            if a and a != b"/":
                cand[a] = min(p, cand.get(a, p))
    seen = present(list(cand))
    fate.implied = {k: p for k, p in cand.items() if k not in seen}


def _parent_array(keys: pa.Array) -> pa.Array:
    """dirname of each identity, vectorised through a string view when every key is UTF-8."""
    try:
        s = pc.cast(keys, pa.string())
    except pa.ArrowInvalid:
        return pa.array([_parent(k) for k in keys.to_pylist()], pa.binary())
    par = pc.replace_substring_regex(s, pattern="/[^/]*$", replacement="")
    par = pc.if_else(pc.equal(par, ""), pa.scalar("/"), par)
    par = pc.if_else(pc.equal(s, "/"), pa.scalar(""), par)
    return pc.cast(par, pa.binary())
