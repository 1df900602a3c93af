"""Member fate (catalog/fate.py): each member of each layer of an image is visible or hidden,
by what and where. The oracle is a small model of a runtime unpacking the layers in order
(containerd's applier: whiteouts and opaque markers delete lower entries, a non-directory
replaces a directory with everything below it, a later member at a path replaces an earlier).
"""
from __future__ import annotations

import io
import os
import tarfile

import imagefactory as f
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerdb.catalog import fate as F
from layerdb.tarindex import SCHEMA, index_layer

PATHS = ["a", "a/b", "a/b/c", "a/d", "e", "e/f", "g"]


def _index(tmp, name: str, members: list) -> str:
    data = f.tar_bytes(members)
    out = os.path.join(tmp, name + ".parquet")
    with pq.ParquetWriter(out, SCHEMA) as w:
        for b in index_layer(io.BytesIO(data), "sha256:" + name.rjust(64, "0")):
            w.write_batch(b)
    return out


def _fates(tmp, layers: list[list]) -> F.ImageFate:
    specs = []
    for i, members in enumerate(layers):
        specs.append((i, "sha256:" + str(i).rjust(64, "0"), _index(tmp, f"l{i}", members)))
    return F.compute(specs)


def _visible(fate: F.ImageFate) -> set[tuple[int, int]]:
    return {(lf.position, int(i)) for lf in fate.layers for i in lf.visible.nonzero()[0]}


def _kind(fate: F.ImageFate, position: int, idx: int) -> tuple[str | None, int]:
    lf = fate.layers[position]
    k = int(lf.hidden_by_kind[idx])
    return (F.KINDS[k - 1] if k else None), int(lf.hidden_by_position[idx])


def _deleted_by(fate: F.ImageFate, position: int, idx: int) -> tuple[list[int], str | None]:
    """(hidden_by_markers, hidden_by_path) of a member; the own path is shown as "<own>"."""
    lf = fate.layers[position]
    markers = [int(i) for i in lf.marker_idx[lf.marker_offsets[idx]:lf.marker_offsets[idx + 1]]]
    code = int(lf.hidden_by_path[idx])
    return markers, None if code == -1 else "<own>" if code == -2 else fate.paths[code]


# -- a runtime, modelled ------------------------------------------------------------------

def _under(p: str, d: str) -> bool:
    return p.startswith(d + "/")


def _unpack(layers: list[list[tuple[str, str]]]) -> dict[str, tuple[int, int]]:
    """(path -> (position, idx)) after applying the layers in order; a layer is a list of
    (op, path) with op in file, dir, symlink, whiteout, opaque."""
    state: dict[str, tuple[int, int, str]] = {}
    for pos, layer in enumerate(layers):
        before = dict(state)
        for idx, (op, path) in enumerate(layer):
            if op == "whiteout":
                for p in [p for p in state if (p == path or _under(p, path)) and p in before
                          and state[p][0] < pos]:
                    del state[p]
            elif op == "opaque":
                for p in [p for p in state if _under(p, path) and state[p][0] < pos]:
                    del state[p]
            else:
                old = state.get(path)
                if old is not None and old[2] == "dir" and op != "dir":
                    for p in [p for p in state if _under(p, path)]:
                        del state[p]
                state[path] = (pos, idx, op)
    return {p: (v[0], v[1]) for p, v in state.items()}


def _member(op: str, path: str) -> tuple:
    if op == "file":
        return f.file(path, path.encode())
    if op == "dir":
        return f.directory(path)
    if op == "symlink":
        return f.symlink(path, "/g")
    if op == "whiteout":
        return f.whiteout(path)
    return f.opaque(path)


@st.composite
def _layers(draw: st.DrawFn) -> list[list[tuple[str, str]]]:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        deletes = draw(st.lists(st.tuples(st.sampled_from(["whiteout", "opaque"]),
                                          st.sampled_from(PATHS)), max_size=2, unique=True))
        puts = draw(st.lists(st.tuples(st.sampled_from(["file", "dir", "dir", "symlink"]),
                                       st.sampled_from(PATHS)), max_size=6))
        layer: list[tuple[str, str]] = []
        kinds: dict[str, str] = {}
        for op, p in puts:
            # a runtime needs every ancestor to be a directory: the layer says so itself
            anc = ["/".join(p.split("/")[:i]) for i in range(1, p.count("/") + 1)]
            if any(kinds.get(a, "dir") != "dir" for a in anc) or (
                    op != "dir" and any(_under(q, p) for q in kinds)):
                continue
            for a in anc:
                if a not in kinds:
                    kinds[a] = "dir"
                    layer.append(("dir", a))
            kinds[p] = op
            layer.append((op, p))
        # markers first (a layer's own entries are not what its whiteouts delete)
        out.append([d for d in deletes if d[0] == "whiteout" or
                    all(not _under(q, d[1]) for _, q in layer)] + layer)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_layers())
def test_fate_equals_a_runtime_unpacking_the_layers(tmp_path_factory, layers):
    tmp = str(tmp_path_factory.mktemp("fate"))
    fate = _fates(tmp, [[_member(op, p) for op, p in layer] for layer in layers])
    want = set(_unpack(layers).values())
    assert _visible(fate) == want
    # every hidden member names a layer above it; markers have no hider
    for lf, layer in zip(fate.layers, layers):
        for idx, (op, _) in enumerate(layer):
            kind, by = _kind(fate, lf.position, idx)
            if op in ("whiteout", "opaque"):
                assert (kind, by) == (None, -1) and not lf.visible[idx]
            elif not lf.visible[idx]:
                assert kind in F.KINDS and by >= lf.position
    # what deleted each hidden entry: every marker of its hiding layer naming it or an
    # ancestor (markers come first in these layers: its own path's .wh. is the next entry)
    for lf, layer in zip(fate.layers, layers):
        for idx, (op, p) in enumerate(layer):
            kind, by = _kind(fate, lf.position, idx)
            markers, path = _deleted_by(fate, lf.position, idx)
            path = "/" + p if path == "<own>" else path
            if op in ("whiteout", "opaque") or lf.visible[idx]:
                assert (markers, path) == ([], None)
                continue
            want = [i for i, (o, q) in enumerate(layers[by]) if by > lf.position and (
                (o == "whiteout" and (q == p or _under(p, q))) or (o == "opaque" and _under(p, q)))]
            assert markers == want
            if kind in ("whiteout", "opaque"):
                own = [i for i in want if layers[by][i] == ("whiteout", p)]
                first = layers[by][(own or want)[0]][1]
                assert path == "/" + first
            elif kind == "ancestor":
                assert path is not None and _under("/" + p, path) and not want
                assert any(q == path[1:] and o != "dir" for o, q in layers[by])
            else:
                assert path is None


def test_each_kind_of_hiding(tmp_path):
    base = [f.directory("d"), f.file("d/x", b"x"), f.directory("e"), f.file("e/y", b"y"),
            f.directory("o"), f.file("o/z", b"z"), f.file("k", b"k"), f.directory("r"),
            f.file("r/w", b"w")]
    upper = [f.whiteout("d"), f.opaque("o"), f.file("k", b"k2"), f.file("r", b"now a file"),
             f.file("o/new", b"n")]
    fate = _fates(str(tmp_path), [base, upper])
    assert _kind(fate, 0, 0) == ("whiteout", 1)  # d itself
    assert _kind(fate, 0, 1) == ("whiteout", 1)  # d/x, below it
    assert _kind(fate, 0, 5) == ("opaque", 1)  # o/z; o itself stays
    assert fate.layers[0].visible[4]
    assert _kind(fate, 0, 6) == ("override", 1)  # k
    assert _kind(fate, 0, 7) == ("override", 1)  # r, the directory, replaced by a file
    assert _kind(fate, 0, 8) == ("ancestor", 1)  # r/w went with it
    assert fate.layers[0].visible[2] and fate.layers[0].visible[3]  # e and e/y untouched
    assert list(fate.layers[1].visible) == [False, False, True, True, True]


def test_raw_name_identity_is_bytes(tmp_path):
    """A raw name b"bin/su\\xff" and the literal name "bin/su\\\\xff" (which prints alike)
    are two files: both visible, neither overrides the other."""
    raw = tarfile.TarInfo("bin/su\udcff")  # surrogateescape: the byte 0xff
    raw.mode, raw.size = 0o4755, 3
    lit = tarfile.TarInfo("bin/su\\xff")
    lit.mode, lit.size = 0o644, 3
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        tf.addfile(f.directory("bin")[0])
        tf.addfile(raw, io.BytesIO(b"su!"))
        tf.addfile(lit, io.BytesIO(b"lit"))
    out = os.path.join(tmp_path, "l.parquet")
    with pq.ParquetWriter(out, SCHEMA) as w:
        for b in index_layer(io.BytesIO(buf.getvalue()), "sha256:" + "0" * 64):
            w.write_batch(b)
    fate = F.compute([(0, "sha256:" + "0" * 64, out)])
    assert list(fate.layers[0].visible) == [True, True, True]


def test_dot_member_is_no_root_file_and_implied_directories(tmp_path):
    dot = tarfile.TarInfo(".")
    dot.size = 2
    fate = _fates(str(tmp_path), [[(dot, b"hi"), f.file("d7/x", b"x"), f.file("p/q/r", b"r")]])
    assert _kind(fate, 0, 0) == ("invalid", -1)
    assert not fate.layers[0].visible[0]
    assert fate.implied == {b"/d7": 0, b"/p": 0, b"/p/q": 0}


def _dir(tmp_path, name: str) -> str:
    (tmp_path / name).mkdir()
    return str(tmp_path / name)


def test_ties_in_one_layer_name_every_marker(tmp_path):
    """Two markers of one layer delete /a/b/c: the first in tar order gives its kind and path
    (its own path's .wh. before any), hidden_by_markers lists both."""
    base = [f.directory("a"), f.directory("a/b"), f.file("a/b/c", b"c"), f.file("a/y", b"y")]
    fate = _fates(_dir(tmp_path, "1"), [base, [f.opaque("a"), f.whiteout("a/b")]])
    assert _kind(fate, 0, 1) == ("whiteout", 1)  # a/b: its own .wh.b, though opaque is first
    assert _deleted_by(fate, 0, 1) == ([0, 1], "<own>")
    assert _kind(fate, 0, 2) == ("opaque", 1) and _deleted_by(fate, 0, 2) == ([0, 1], "/a")
    assert _deleted_by(fate, 0, 3) == ([0], "/a")
    fate = _fates(_dir(tmp_path, "2"), [base, [f.whiteout("a"), f.opaque("a")]])
    assert _kind(fate, 0, 0) == ("whiteout", 1) and _deleted_by(fate, 0, 0) == ([0], "<own>")
    assert _kind(fate, 0, 2) == ("whiteout", 1) and _deleted_by(fate, 0, 2) == ([0, 1], "/a")
    # a whiteout's deletes_from_position: the entry it replaces, or the newest layer below
    # with anything under its path (a marker too)
    fate = _fates(_dir(tmp_path, "3"), [base, [f.whiteout("a/y")], [f.whiteout("a")]])
    assert list(fate.layers[2].deletes_from_position) == [1]
    assert list(fate.layers[1].deletes_from_position) == [0]
    # a later copy in the layer of an opaque marker: an override, and the marker deleted it too
    fate = _fates(_dir(tmp_path, "4"), [base, [f.opaque("a"), f.file("a/y", b"y2")]])
    assert _kind(fate, 0, 3) == ("override", 1) and _deleted_by(fate, 0, 3) == ([0], None)
