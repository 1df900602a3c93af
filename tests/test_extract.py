"""extract: merged-view lookup, symlinks inside the image, hardlinks, whole trees, entrypoint,
hostile layers, and ingest-then-extract returning identical bytes."""
from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import imagefactory as f
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerdb.errors import ImageNotFound, PathNotFound
from layerdb.extract import extract
from layerdb.ingest import ingest


def _ingest(root: Path, *paths) -> str:
    rep = ingest([str(p) for p in paths], catalog_root=str(root), jobs=1)
    assert not rep.failed, rep.failed[0].error
    return str(root)


def _bytes(cat: str, path: str, image: str | None = None, **kw) -> bytes:
    out = io.BytesIO()
    extract(path=path, image=image, catalog_root=cat, stdout=out, **kw)
    return out.getvalue()


@pytest.fixture(scope="module")
def umoci_cat(umoci_images, tmp_path_factory) -> str:
    return _ingest(tmp_path_factory.mktemp("cat"), umoci_images["docker-archive"])


def test_whole_tree_equals_umoci_unpack(umoci_cat, umoci_images, tmp_path):
    out = tmp_path / "rootfs"
    res = extract(path="/", image="example.com/layerdb/umoci:v1", output=str(out),
                  catalog_root=umoci_cat, keep_setuid=True)
    assert res.warnings == []
    got, want = f.tree_listing(out), f.tree_listing(umoci_images["rootfs"])
    got.pop("/"), want.pop("/")
    assert got == want


def test_setuid_dropped_unless_asked(umoci_cat, tmp_path):
    extract(path="/usr/bin/suid", output=str(tmp_path / "a"), catalog_root=umoci_cat)
    extract(path="/usr/bin/suid", output=str(tmp_path / "b"), catalog_root=umoci_cat,
            keep_setuid=True)
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o4755


def test_entrypoint(umoci_cat, tmp_path):
    res = extract(entrypoint=True, image="example.com/layerdb/umoci:v1",
                  output=str(tmp_path / "app"), catalog_root=umoci_cat)
    assert res.path == "/home/app/app"  # Cmd ./app, WorkingDir /home/app/
    assert (tmp_path / "app").read_bytes() == b"#!/bin/sh\necho app v2\n"
    assert stat.S_IMODE(os.stat(tmp_path / "app").st_mode) == 0o755
    assert int(os.stat(tmp_path / "app").st_mtime) == f.FIXED_MTIME


def test_file_into_existing_dir_keeps_name(umoci_cat, tmp_path):
    res = extract(path="/etc/hello.txt", output=str(tmp_path), catalog_root=umoci_cat)
    assert res.output == str(tmp_path / "hello.txt")
    assert (tmp_path / "hello.txt").read_bytes() == b"hello\n"


def test_symlink_and_hardlink(umoci_cat):
    assert _bytes(umoci_cat, "/home/app/hello-link") == b"hello\n"
    assert _bytes(umoci_cat, "/etc/hello-hard.txt") == b"hello\n"
    # relative to WorkingDir when not absolute
    assert _bytes(umoci_cat, "app") == b"#!/bin/sh\necho app v2\n"


def test_deleted_and_missing_paths(umoci_cat):
    with pytest.raises(PathNotFound, match="deleted in an upper layer"):
        _bytes(umoci_cat, "/etc/remove.me")
    with pytest.raises(PathNotFound, match="deleted in an upper layer"):
        _bytes(umoci_cat, "/var/cache/old/a")
    with pytest.raises(PathNotFound, match="no such file"):
        _bytes(umoci_cat, "/nope")
    with pytest.raises(ImageNotFound, match="no image matches"):
        _bytes(umoci_cat, "/etc/hello.txt", image="nope:latest")


def test_directory_to_stdout_is_a_tar(umoci_cat):
    data = _bytes(umoci_cat, "/opt/data")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = sorted(tf.getnames())
        three = tf.extractfile("data/three").read()
    assert names == ["data", "data/three"]  # the opaque rewrite hid one and sub/two
    assert three == b"three\n"


def _hostile(tmp_path: Path) -> str:
    layer0 = [f.directory("etc"), f.file("etc/passwd", b"image passwd\n"),
              f.file("../../etc/x", b"climbed\n"), f.symlink("evil", "/etc"),
              f.file("evil/inside", b"through link\n"), f.symlink("up", "../../../../etc"),
              f.file("abs/../../escape", b"e\n")]
    spec = f.ImageSpec([f.Layer(layer0)], tags=("hostile:1",))
    f.write_oci_archive(tmp_path / "hostile.tar", [spec])
    return _ingest(tmp_path / "cat", tmp_path / "hostile.tar")


def test_hostile_layer_writes_nothing_outside(tmp_path):
    cat = _hostile(tmp_path)
    out = tmp_path / "out"
    before = sorted(p for p in tmp_path.rglob("*") if not str(p).startswith(str(tmp_path / "cat")))
    res = extract(path="/", image="hostile:1", output=str(out), catalog_root=cat)
    after = sorted(p for p in tmp_path.rglob("*") if not str(p).startswith(str(tmp_path / "cat")))
    new = {p for p in after if p not in before}
    assert all(str(p).startswith(str(out)) for p in new)
    assert (out / "etc/x").read_bytes() == b"climbed\n"  # ../../ clamped at the image root
    assert (out / "escape").read_bytes() == b"e\n"
    assert os.readlink(out / "evil") == "/etc"  # a link is written as a link, never followed
    assert any("evil/inside" in w for w in res.warnings)
    assert not Path("/etc/inside").exists()
    # following the link happens inside the image: /evil/passwd is the image's /etc/passwd
    assert _bytes(cat, "/evil/passwd") == b"image passwd\n"
    assert _bytes(cat, "/up/passwd") == b"image passwd\n"  # ../.. stops at the image root


def test_ambiguous_path_names_candidates(tmp_path):
    for tag in ("one:1", "two:1"):
        spec = f.ImageSpec([f.Layer([f.file("app", tag.encode())])], tags=(tag,))
        f.write_oci_archive(tmp_path / f"{tag[:3]}.tar", [spec])
    cat = _ingest(tmp_path / "cat", tmp_path / "one.tar", tmp_path / "two.tar")
    with pytest.raises(ImageNotFound, match=r"/app is in 2 images: one:1 .*two:1"):
        _bytes(cat, "/app")
    assert _bytes(cat, "/app", image="two:1") == b"two:1"


def test_hardlink_across_layers_keeps_content_at_link_time(tmp_path):
    spec = f.ImageSpec([
        f.Layer([f.file("a", b"first")]),
        f.Layer([f.hardlink("b", "a")]),
        f.Layer([f.file("a", b"second")]),
    ], tags=("hl:1",))
    f.write_oci_archive(tmp_path / "hl.tar", [spec])
    cat = _ingest(tmp_path / "cat", tmp_path / "hl.tar")
    assert _bytes(cat, "/b") == b"first"
    assert _bytes(cat, "/a") == b"second"


def test_multi_platform_index(tmp_path):
    idx = f.IndexSpec([
        f.ImageSpec([f.Layer([f.file("arch", b"amd64")])], platform="linux/amd64"),
        f.ImageSpec([f.Layer([f.file("arch", b"arm64")], "gzip")], platform="linux/arm64/v8"),
    ], tags=("multi:1",), attestations=True)
    f.write_oci_archive(tmp_path / "m.tar", [idx])
    cat = _ingest(tmp_path / "cat", tmp_path / "m.tar")
    assert _bytes(cat, "/arch", image="multi:1", platform="linux/arm64") == b"arm64"
    assert _bytes(cat, "/arch", image="multi:1", platform="linux/amd64") == b"amd64"


def test_whiteout_of_dir_and_opaque(tmp_path):
    spec = f.ImageSpec([
        f.Layer([f.directory("d"), f.file("d/x", b"x"), f.directory("o"), f.file("o/old", b"o"),
                 f.directory("o/sub"), f.file("o/sub/deep", b"d")]),
        f.Layer([f.whiteout("d"), f.directory("o"), f.opaque("o"), f.file("o/new", b"n")]),
        f.Layer([f.directory("d"), f.file("d/y", b"y")]),
    ], tags=("wh:1",))
    f.write_oci_archive(tmp_path / "wh.tar", [spec])
    cat = _ingest(tmp_path / "cat", tmp_path / "wh.tar")
    out = tmp_path / "root"
    extract(path="/", image="wh:1", output=str(out), catalog_root=cat)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["d", "d/y", "o", "o/new"]


def test_non_utf8_names_round_trip(tmp_path):
    raw = b"caf\xe9"
    name = raw.decode("utf-8", "surrogateescape")
    spec = f.ImageSpec([f.Layer([f.file(name, b"latin1 name")])], tags=("n:1",))
    f.write_oci_archive(tmp_path / "n.tar", [spec])
    cat = _ingest(tmp_path / "cat", tmp_path / "n.tar")
    out = tmp_path / "out"
    extract(path="/", image="n:1", output=str(out), catalog_root=cat)
    assert (out / os.fsdecode(raw)).read_bytes() == b"latin1 name"
    assert _bytes(cat, "/caf\\xe9") == b"latin1 name"


_names = st.text(alphabet="abcxyz._-", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and not s.startswith(".wh."))


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(files=st.dictionaries(st.lists(_names, min_size=1, max_size=3).map("/".join),
                             st.binary(max_size=3000), min_size=1, max_size=12),
       compression=st.sampled_from(["none", "gzip", "zstd"]))
def test_property_ingest_then_extract_identical_bytes(tmp_path_factory, files, compression):
    # a path cannot be both a file and a directory
    paths = sorted(files)
    files = {p: d for p, d in files.items() if not any(q.startswith(p + "/") for q in paths)}
    half = len(files) // 2
    items = sorted(files.items())
    layers = [f.Layer([f.file(p, d) for p, d in items[:half]], compression),
              f.Layer([f.file(p, d) for p, d in items[half:]], compression)]
    tmp = tmp_path_factory.mktemp("prop")
    f.write_oci_archive(tmp / "p.tar", [f.ImageSpec([l for l in layers if l.content] or layers[:1],
                                                    tags=("p:1",))])
    cat = _ingest(tmp / "cat", tmp / "p.tar")
    for p, d in files.items():
        assert _bytes(cat, "/" + p) == d


def test_fast_path_needs_no_duckdb_and_falls_back(tmp_path):
    """extract with --image reads lookup.sqlite (no duckdb import); without the index, or
    with an index that lags the catalog, it gives the same bytes through the catalog."""
    import subprocess
    import sys

    spec = f.ImageSpec([f.Layer([f.directory("d"), f.file("d/x", b"payload"),
                                 f.symlink("l", "d/x")])], tags=("fast:1",))
    f.write_oci_archive(tmp_path / "a.tar", [spec])
    cat = _ingest(tmp_path / "cat", tmp_path / "a.tar")
    assert (tmp_path / "cat" / "lookup.sqlite").exists()
    code = ("import io, sys; from layerdb.extract import extract; o = io.BytesIO(); "
            f"extract(path='/l', image='fast:1', catalog_root={cat!r}, stdout=o); "
            "print(o.getvalue().decode(), 'duckdb' in sys.modules, 'pyarrow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["payload", "False", "False"]
    # an index that lags the catalog (as after a kill between the two commits)
    index = tmp_path / "cat" / "lookup.sqlite"
    stale = index.read_bytes()
    spec2 = f.ImageSpec([f.Layer([f.file("y", b"second")])], tags=("later:1",))
    f.write_oci_archive(tmp_path / "b.tar", [spec2])
    _ingest(tmp_path / "cat", tmp_path / "b.tar")
    for p in tmp_path.joinpath("cat").glob("lookup.sqlite*"):
        p.unlink()
    index.write_bytes(stale)
    assert _bytes(cat, "/y", image="later:1") == b"second"
    index.unlink()
    assert _bytes(cat, "/d/x", image="fast:1") == b"payload"
    out_dir = tmp_path / "tree"
    extract(path="/d", image="fast:1", output=str(out_dir), catalog_root=cat)
    assert (out_dir / "x").read_bytes() == b"payload"
