"""Every archive format and layout, made by real tools and by the pure-Python factory,
opens into valid ``Image`` values; every broken input raises the right error naming the file."""
from __future__ import annotations

import ast
import io
import json
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import imagefactory as f
import pytest
from conformance import assert_valid_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerdb.digest import Digest
from layerdb.errors import (
    BlobNotFound,
    DigestMismatch,
    LayerdbError,
    SourceError,
    UnsupportedMediaType,
)
from layerdb.model import DOCKER_MANIFEST, OCI_MANIFEST, Image, Platform
from layerdb.sources import open_source

SRC = Path(__file__).resolve().parents[1] / "src" / "layerdb" / "sources"


def load(path: Path | str, scratch: Path, *, check_media_types: bool = True) -> list[Image]:
    """Open ``path``, list its images, check each with ``assert_valid_image``, close."""
    src = open_source(str(path), str(scratch))
    try:
        images = list(src.images())
        for im in images:
            assert_valid_image(im, check_media_types=check_media_types)
    finally:
        src.close()
    return images


def expect_error(cls: type[LayerdbError], path: Path | str, scratch: Path,
                 *words: str) -> str:
    """Open ``path`` and list its images; the error must be ``cls``, start with the path and
    contain ``words``. Returns the message."""
    with pytest.raises(cls) as info:
        load(path, scratch)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    for w in words:
        assert w in msg, msg
    assert not os.listdir(scratch), "temporary files left behind"
    return msg


# Real tools: umoci + skopeo --------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(f.UMOCI_REFS))
def test_umoci_variant_is_valid(umoci_images: dict[str, str], variant: str,
                                scratch: Path) -> None:
    src = open_source(umoci_images[variant], str(scratch))
    images = list(src.images())
    assert len(images) == 1
    im = images[0]
    # skopeo 1.9.3 labels the uncompressed blobs of docker-archive -> oci "tar+gzip".
    assert_valid_image(im, check_media_types=variant != "oci-none-mislabeled")
    src.close()
    assert not os.listdir(scratch)
    # a bare tag is qualified with the layout's name (the variant's directory)
    assert im.refs == tuple(r if ":" in r else f"{variant}:{r}" for r in f.UMOCI_REFS[variant])
    assert im.platform == Platform("linux", "amd64")
    assert len(im.layers) == len(f.UMOCI_LAYERS)
    assert im.config.cmd == ("./app",)
    assert im.config.working_dir == "/home/app/"
    assert [h.created_by for h in im.config.layer_history()] == list(f.UMOCI_LAYERS)
    assert im.source == umoci_images[variant]
    kinds = {lr.media_type for lr in im.layers}
    expected = {
        "oci-zstd": {"application/vnd.oci.image.layer.v1.tar+zstd"},
        "oci-none": {"application/vnd.oci.image.layer.v1.tar"},
        "docker-archive": {"application/x-tar"},
        "docker-archive-gz": {"application/x-tar"},
    }.get(variant, {"application/vnd.oci.image.layer.v1.tar+gzip"})
    assert kinds == expected
    if variant.startswith("docker-archive"):
        assert all(lr.digest is None for lr in im.layers)
        assert im.manifest_media_type == OCI_MANIFEST
    else:
        assert all(lr.digest is not None for lr in im.layers)


def test_umoci_variants_share_diff_ids(umoci_images: dict[str, str], scratch: Path) -> None:
    diff_ids = {name: load(p, scratch, check_media_types="mislabeled" not in name)[0]
                .config.diff_ids
                for name, p in umoci_images.items() if name != "rootfs"}
    assert len(set(diff_ids.values())) == 1, diff_ids


def _layer_names(im: Image, i: int) -> list[str]:
    import io

    from layerdb import compression

    with im.layers[i].blob.open() as raw:
        _, stream = compression.open_decompressed(raw)
        data = stream.read()
    names = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        try:
            for ti in tf:
                names.append(ti.name)
        except tarfile.ReadError:
            pass  # umoci insert writes no padding or end-of-archive blocks (see report)
    return names


def test_umoci_whiteouts_and_opaque(umoci_images: dict[str, str], scratch: Path) -> None:
    im = load(umoci_images["oci-umoci"], scratch)[0]
    assert "etc/.wh.remove.me" in _layer_names(im, 1)
    assert "var/cache/.wh.old" in _layer_names(im, 1)
    # repack of a removed-and-recreated dir: one whiteout per old child, no opaque marker
    refill = _layer_names(im, 2)
    assert {"opt/data/.wh.one", "opt/data/.wh.sub", "opt/data/three"} <= set(refill)
    assert not any(".wh..wh..opq" in n for n in refill)
    # insert --opaque writes the marker before the directory entry itself
    assert _layer_names(im, 3)[:2] == ["usr/share/doc/.wh..wh..opq", "usr/share/doc"]
    assert _layer_names(im, 4) == ["etc/.wh.obsolete.conf"]


def test_umoci_rootfs_listing(umoci_images: dict[str, str]) -> None:
    tree = f.tree_listing(umoci_images["rootfs"])
    assert tree["/"][0] == "dir"
    assert tree["/home/app/app"][:3] == ("file", 22, 0o755)
    assert tree["/home/app/hello-link"] == ("symlink", 0, 0o777, "../../etc/hello.txt", "")
    assert tree["/usr/bin/suid"][2] == 0o4755
    assert tree["/tmp"][2] == 0o1777
    assert tree["/etc/fifo"][0] == "fifo"
    assert tree["/etc/hello.txt"][4] == tree["/etc/hello-hard.txt"][4]
    assert "/opt/data/three" in tree and "/opt/data/one" not in tree
    assert "/usr/share/doc/pkg/README" in tree and "/usr/share/doc/pkg/COPYING" not in tree
    for gone in ("/etc/remove.me", "/var/cache/old", "/etc/obsolete.conf"):
        assert gone not in tree


# Pure-Python factory: every writer -------------------------------------------------------------

WRITERS: dict[str, Callable[[Path, list[f.Spec]], Path]] = {
    "oci-layout": lambda p, s: (f.write_oci_layout(p, s), p)[1],
    "oci-archive": lambda p, s: (f.write_oci_archive(p, s), p)[1],
    "oci-archive-dotslash": lambda p, s: (f.write_oci_archive(p, s, dot_slash=True), p)[1],
    "docker-legacy": lambda p, s: (f.write_docker_archive(p, s), p)[1],
    "docker-legacy-dotslash": lambda p, s: (f.write_docker_archive(p, s, dot_slash=True), p)[1],
    "docker-skopeo": lambda p, s: (f.write_docker_archive(p, s, layer_dirs=False), p)[1],
    "docker25": lambda p, s: (f.write_docker_archive(p, s, legacy=False), p)[1],
    "kaniko": lambda p, s: (f.write_docker_archive(p, s, kaniko=True), p)[1],
}


@pytest.mark.parametrize(("writer", "whole"), [
    (w, c) for w in sorted(WRITERS) for c in ("none", "gzip", "zstd")
    if w != "oci-layout" or c == "none"])  # a directory is not compressed as a whole
def test_factory_formats(writer: str, whole: str, tmp_path: Path, scratch: Path) -> None:
    spec = f.sample_image(tags=("example.com/app:v1", "example.com/app:latest"))
    path = WRITERS[writer](tmp_path / "img", [spec])
    if whole != "none":
        path = f.compress_file(path, tmp_path / f"img.{whole}", whole)
    [im] = load(path, scratch)
    built = f.build_image(spec)
    assert [str(d) for d in im.config.diff_ids] == built.diff_ids
    assert im.refs == ("example.com/app:v1", "example.com/app:latest")
    assert im.config.working_dir == "/home/app"
    if writer.startswith(("oci", "docker25")):
        assert str(im.id) == built.manifest_digest
        assert [str(lr.digest) for lr in im.layers] == built.layer_digests
    else:
        assert all(lr.digest is None for lr in im.layers)
    if writer == "kaniko":
        assert {lr.media_type for lr in im.layers} == {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"}
    for lr in im.layers:
        assert os.path.isabs(lr.blob.path)


def test_legacy_id_is_deterministic(tmp_path: Path, scratch: Path) -> None:
    spec = f.sample_image(compressions=("none", "none", "none"))
    f.write_docker_archive(tmp_path / "a.tar", [spec])
    a = load(tmp_path / "a.tar", scratch)
    f.write_docker_archive(tmp_path / "b.tar", [spec], layer_dirs=False)
    b = load(tmp_path / "b.tar", scratch)
    assert a[0].id == b[0].id
    doc = json.loads(a[0].manifest)
    assert a[0].manifest == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc["config"]["digest"] == str(a[0].config_digest)
    assert [d["size"] for d in doc["layers"]] == [lr.size for lr in a[0].layers]


def test_relative_path_gives_absolute_segments(tmp_path: Path, scratch: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    f.write_docker_archive(tmp_path / "img.tar", [f.sample_image()])
    monkeypatch.chdir(tmp_path)
    [im] = load("img.tar", scratch)
    assert im.source == "img.tar"
    assert all(lr.blob.path == str(tmp_path / "img.tar") for lr in im.layers)
    assert pickle.loads(pickle.dumps(im.layers[0].blob)) == im.layers[0].blob


def test_unpacked_docker_save_directory(tmp_path: Path, scratch: Path) -> None:
    f.write_docker_archive(tmp_path / "d.tar", [f.sample_image()])
    with tarfile.open(tmp_path / "d.tar") as tf:
        # Debian 12's python 3.11.2 predates extraction filters (3.11.4); the archive is ours
        tf.extractall(tmp_path / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    [a] = load(tmp_path / "d.tar", scratch)
    [b] = load(tmp_path / "unpacked", scratch)
    assert a.id == b.id and a.refs == b.refs


def test_layout_blobs_may_be_symlinks(tmp_path: Path, scratch: Path) -> None:
    """skopeo --dest-shared-blob-dir and hand-made layouts keep blobs elsewhere."""
    [b] = f.write_oci_layout(tmp_path / "lay", [f.sample_image()])
    assert isinstance(b, f.BuiltImage)
    blob = tmp_path / "lay" / "blobs" / "sha256" / b.layer_digests[0][7:]
    shared = tmp_path / "shared"
    shared.mkdir()
    blob.rename(shared / blob.name)
    blob.symlink_to(shared / blob.name)
    [im] = load(tmp_path / "lay", scratch)
    assert im.layers[0].blob.path == str(shared / blob.name)


def test_docker_media_types(tmp_path: Path, scratch: Path) -> None:
    spec = f.sample_image(docker_types=True)
    index = f.IndexSpec([spec], tags=["multi"], docker_types=True)
    f.write_oci_layout(tmp_path / "lay", [index])
    [im] = load(tmp_path / "lay", scratch)
    assert im.manifest_media_type == DOCKER_MANIFEST
    assert im.layers[0].media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"


# Indexes, platforms, refs ------------------------------------------------------------------------

def multi_spec(tags: tuple[str, ...] = ("latest", "example.com/multi:1")) -> f.IndexSpec:
    return f.IndexSpec([
        f.sample_image(tags=(), platform="linux/amd64"),
        f.sample_image(tags=(), platform="linux/arm64/v8"),
        f.IndexSpec([f.sample_image(tags=(), platform="linux/arm/v7")], attestations=True),
    ], tags=tags, attestations=True)


@pytest.mark.parametrize("writer", ["oci-layout", "oci-archive", "docker25"])
def test_index_every_platform(writer: str, tmp_path: Path, scratch: Path) -> None:
    WRITERS[writer](tmp_path / "img", [multi_spec()])
    built = f.build(multi_spec())
    assert isinstance(built, f.BuiltIndex)
    images = load(tmp_path / "img", scratch)
    assert [str(im.platform) for im in images] == ["linux/amd64", "linux/arm64/v8",
                                                   "linux/arm/v7"]
    assert [str(im.id) for im in images] == [b.manifest_digest for b in built.images()]
    assert {str(im.index_digest) for im in images} == {built.digest}
    expected_refs = ("img:latest", "example.com/multi:1")  # the bare tag qualified: ARCHIVE:TAG
    assert all(im.refs == expected_refs for im in images), [im.refs for im in images]


def test_index_refs_merge_and_bare_tags(tmp_path: Path, scratch: Path) -> None:
    spec = f.sample_image(tags=("latest", "example.com/app:v1", "v2"))
    f.write_oci_layout(tmp_path / "lay", [spec])
    [im] = load(tmp_path / "lay", scratch)
    assert im.refs == ("lay:latest", "example.com/app:v1", "lay:v2")
    assert im.index_digest is None


def test_docker25_merges_repotags_with_index_names(tmp_path: Path, scratch: Path) -> None:
    spec = f.sample_image(tags=("example.com/app:v1",))
    f.write_docker_archive(tmp_path / "d.tar", [spec], legacy=False)
    names = f.tar_names(tmp_path / "d.tar")
    assert {"index.json", "oci-layout", "manifest.json"} <= set(names)
    [im] = load(tmp_path / "d.tar", scratch)
    # containerd name + manifest.json RepoTag, the bare ref.name "v1" repeats the tag
    assert im.refs == ("example.com/app:v1",)
    index = json.loads(_member(tmp_path / "d.tar", "index.json"))
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "v1"


def test_docker25_manifest_json_only_entry_is_legacy(tmp_path: Path, scratch: Path) -> None:
    """A manifest.json entry with no image in index.json still yields an image."""
    a = f.sample_image(tags=("example.com/a:1",))
    b = f.sample_image(tags=("example.com/b:1",), platform="linux/arm64")
    f.write_docker_archive(tmp_path / "d.tar", [a, b], legacy=False)
    index = json.loads(_member(tmp_path / "d.tar", "index.json"))
    index["manifests"] = index["manifests"][:1]
    f.rewrite_tar(tmp_path / "d.tar", tmp_path / "e.tar",
                  replace={"index.json": json.dumps(index).encode()})
    images = load(tmp_path / "e.tar", scratch)
    assert [im.refs for im in images] == [("example.com/a:1",), ("example.com/b:1",)]
    assert images[0].layers[0].digest is not None and images[1].layers[0].digest is None


def test_partial_index_skips_missing_platforms(tmp_path: Path, scratch: Path) -> None:
    [built] = f.write_oci_layout(tmp_path / "lay", [multi_spec()])
    assert isinstance(built, f.BuiltIndex)
    arm64 = built.images()[1]
    (tmp_path / "lay" / "blobs" / "sha256" / arm64.manifest_digest[7:]).unlink()
    images = load(tmp_path / "lay", scratch)
    assert [str(im.platform) for im in images] == ["linux/amd64", "linux/arm/v7"]
    for im in built.images():
        (tmp_path / "lay" / "blobs" / "sha256" / im.manifest_digest[7:]).unlink(missing_ok=True)
    expect_error(BlobNotFound, tmp_path / "lay", scratch, "none of the manifests")


def test_artifacts_are_skipped(tmp_path: Path, scratch: Path) -> None:
    f.write_oci_layout(tmp_path / "lay", [f.sample_image(tags=("v1",))])
    lay = tmp_path / "lay"
    helm_cfg = b"{}"
    helm = f.canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json",
                   "digest": f.digest_of(helm_cfg), "size": len(helm_cfg)},
        "layers": []})
    for blob in (helm_cfg, helm):
        (lay / "blobs" / "sha256" / f.sha256_hex(blob)).write_bytes(blob)
    index = json.loads((lay / "index.json").read_bytes())
    index["manifests"] += [
        {"mediaType": OCI_MANIFEST, "digest": f.digest_of(helm), "size": len(helm)},
        {"mediaType": "application/vnd.example.thing", "digest": f.digest_of(b"x"), "size": 1},
    ]
    (lay / "index.json").write_text(json.dumps(index))
    [im] = load(lay, scratch)
    assert im.refs == ("lay:v1",)
    index["manifests"] = index["manifests"][1:]
    (lay / "index.json").write_text(json.dumps(index))
    expect_error(UnsupportedMediaType, lay, scratch, "no image manifests")


def test_repeated_manifest_is_one_image(tmp_path: Path, scratch: Path) -> None:
    spec = f.sample_image(tags=("example.com/app:v1",))
    f.write_oci_archive(tmp_path / "o.tar", [spec, spec])
    [im] = load(tmp_path / "o.tar", scratch)
    assert im.refs == ("example.com/app:v1",)


def test_empty_layout_has_no_images(tmp_path: Path, scratch: Path) -> None:
    f.write_oci_layout(tmp_path / "lay", [])
    assert load(tmp_path / "lay", scratch) == []


# Whole-archive compression and temporary files ---------------------------------------------------

@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_whole_archive_temp_file_lifecycle(kind: str, tmp_path: Path, scratch: Path) -> None:
    f.write_oci_archive(tmp_path / "o.tar", [f.sample_image()])
    packed = f.compress_file(tmp_path / "o.tar", tmp_path / "o.tar.weird-suffix", kind)
    src = open_source(str(packed), str(scratch))
    [temp] = os.listdir(scratch)
    [im] = list(src.images())
    assert im.layers[0].blob.path == str(scratch / temp)
    assert_valid_image(im)
    src.close()
    src.close()
    assert not os.listdir(scratch)


# Broken inputs -------------------------------------------------------------------------------------

def _member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tf:
        fobj = tf.extractfile(name)
        assert fobj is not None
        return fobj.read()


@pytest.fixture()
def legacy(tmp_path: Path) -> tuple[Path, f.BuiltImage]:
    [b] = f.write_docker_archive(tmp_path / "legacy.tar", [f.sample_image()])
    assert isinstance(b, f.BuiltImage)
    return tmp_path / "legacy.tar", b


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, f.BuiltImage]:
    [b] = f.write_oci_layout(tmp_path / "layout", [f.sample_image()])
    assert isinstance(b, f.BuiltImage)
    return tmp_path / "layout", b


def test_truncated_mid_layer_fails_at_open(legacy: tuple[Path, f.BuiltImage],
                                           tmp_path: Path, scratch: Path) -> None:
    path, _b = legacy
    layer = next(n for n in f.tar_names(path) if n.endswith("layer.tar"))
    offset, size = f.member_range(path, layer)
    cut = f.truncate_copy(path, tmp_path / "cut.tar", offset + size // 2)
    with pytest.raises(SourceError, match="truncated or corrupt archive") as info:
        open_source(str(cut), str(scratch))
    assert str(info.value).startswith(str(cut))


@pytest.mark.parametrize("where", ["header", "boundary", "end-marker", "garbage"])
def test_truncated_elsewhere(where: str, legacy: tuple[Path, f.BuiltImage], tmp_path: Path,
                             scratch: Path) -> None:
    path, _ = legacy
    offset, _ = f.member_range(path, "manifest.json")
    header = offset - 512
    data = path.read_bytes()
    bad = tmp_path / "bad.tar"
    if where == "header":
        bad.write_bytes(data[:header + 100])
    elif where == "boundary":
        bad.write_bytes(data[:header])
    elif where == "end-marker":
        bad.write_bytes(_strip_end_marker(data))
    else:
        bad.write_bytes(data[:header] + b"\x01" * 512 + data[header + 512:])
    expect_error(SourceError, bad, scratch, "truncated or corrupt archive")


def _strip_end_marker(data: bytes) -> bytes:
    """The archive without its trailing zero blocks."""
    end = len(data)
    while end >= 512 and data[end - 512:end].count(0) == 512:
        end -= 512
    return data[:end]


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_truncated_compressed_archive(kind: str, legacy: tuple[Path, f.BuiltImage],
                                      tmp_path: Path, scratch: Path) -> None:
    path, _ = legacy
    packed = f.compress_file(path, tmp_path / "p", kind)
    cut = f.truncate_copy(packed, tmp_path / "cut", packed.stat().st_size // 2)
    expect_error(SourceError, cut, scratch, "truncated or corrupt archive")


def test_malformed_manifest_json(legacy: tuple[Path, f.BuiltImage], tmp_path: Path,
                                 scratch: Path) -> None:
    path, _ = legacy
    bad = f.rewrite_tar(path, tmp_path / "bad.tar", replace={"manifest.json": b"[{nope"})
    expect_error(SourceError, bad, scratch, "manifest.json: malformed JSON")
    bad = f.rewrite_tar(path, tmp_path / "bad2.tar", replace={"manifest.json": b'{"a": 1}'})
    expect_error(SourceError, bad, scratch, "manifest.json: not a JSON list")
    bad = f.rewrite_tar(path, tmp_path / "bad3.tar", replace={"manifest.json": b'[{"Config": 1}]'})
    expect_error(SourceError, bad, scratch, "manifest.json: entry 0: has no Config")


def test_malformed_config(legacy: tuple[Path, f.BuiltImage], tmp_path: Path,
                          scratch: Path) -> None:
    path, _ = legacy
    doc = json.loads(_member(path, "manifest.json"))
    doc[0]["Config"] = "config.json"
    bad = f.rewrite_tar(path, tmp_path / "bad.tar", add={"config.json": b"{oops"},
                        replace={"manifest.json": json.dumps(doc).encode()})
    expect_error(SourceError, bad, scratch, "config.json: malformed JSON")


def test_malformed_index_json(layout: tuple[Path, f.BuiltImage], scratch: Path) -> None:
    path, _ = layout
    (path / "index.json").write_bytes(b"{")
    expect_error(SourceError, path, scratch, "index.json: malformed JSON")
    (path / "index.json").write_bytes(b'{"manifests": [{"digest": "sha256:12"}]}')
    expect_error(SourceError, path, scratch, "index.json: manifests[0]", "invalid digest")


def test_diff_id_count_mismatch(tmp_path: Path, scratch: Path) -> None:
    spec = f.sample_image(config_extra={"rootfs": {"type": "layers", "diff_ids": []}})
    f.write_oci_layout(tmp_path / "lay", [spec])
    expect_error(SourceError, tmp_path / "lay", scratch, "0 diff_ids", "3 layers")


def test_missing_layer_blob_in_layout(layout: tuple[Path, f.BuiltImage],
                                      scratch: Path) -> None:
    path, b = layout
    (path / "blobs" / "sha256" / b.layer_digests[1][7:]).unlink()
    expect_error(BlobNotFound, path, scratch, f"blob {b.layer_digests[1]} (layer 2 of 3)",
                 "is missing")


def test_missing_config_and_manifest_blob(layout: tuple[Path, f.BuiltImage],
                                          scratch: Path) -> None:
    path, b = layout
    (path / "blobs" / "sha256" / b.config_digest[7:]).unlink()
    expect_error(BlobNotFound, path, scratch, f"config blob {b.config_digest} is missing")
    (path / "blobs" / "sha256" / b.manifest_digest[7:]).unlink()
    expect_error(BlobNotFound, path, scratch, f"manifest blob {b.manifest_digest} is missing")


def test_missing_blob_in_oci_archive(tmp_path: Path, scratch: Path) -> None:
    [b] = f.write_oci_archive(tmp_path / "o.tar", [f.sample_image()])
    assert isinstance(b, f.BuiltImage)
    bad = f.rewrite_tar(tmp_path / "o.tar", tmp_path / "bad.tar",
                        drop=[f"blobs/sha256/{b.layer_digests[0][7:]}"])
    expect_error(BlobNotFound, bad, scratch, "(layer 1 of 3) is missing")


@pytest.mark.parametrize("layer_dirs", [True, False])
def test_missing_legacy_layer_file(layer_dirs: bool, tmp_path: Path, scratch: Path) -> None:
    f.write_docker_archive(tmp_path / "d.tar", [f.sample_image()], layer_dirs=layer_dirs)
    doc = json.loads(_member(tmp_path / "d.tar", "manifest.json"))
    victim = doc[0]["Layers"][2]
    if not layer_dirs:  # the manifest names a file; drop it so nothing is left
        assert not victim.endswith("layer.tar")
    bad = f.rewrite_tar(tmp_path / "d.tar", tmp_path / "bad.tar", drop=[victim])
    expect_error(BlobNotFound, bad, scratch, f"layer file {victim!r} (layer 3 of 3",
                 "is missing")


def test_dangling_layer_symlink(tmp_path: Path, scratch: Path) -> None:
    f.write_docker_archive(tmp_path / "d.tar", [f.sample_image()], layer_dirs=False)
    doc = json.loads(_member(tmp_path / "d.tar", "manifest.json"))
    links = [n for n in f.tar_names(tmp_path / "d.tar") if n.endswith("/layer.tar")]
    doc[0]["Layers"] = links  # manifest names the symlinks now: still fine
    good = f.rewrite_tar(tmp_path / "d.tar", tmp_path / "good.tar",
                         replace={"manifest.json": json.dumps(doc).encode()})
    assert len(load(good, scratch)[0].layers) == 3
    target = next(n for n in f.tar_names(tmp_path / "d.tar") if n.endswith(".tar")
                  and "/" not in n)
    bad = f.rewrite_tar(good, tmp_path / "bad.tar", drop=[target])
    expect_error(BlobNotFound, bad, scratch, "is missing")


def test_manifest_digest_mismatch(layout: tuple[Path, f.BuiltImage], tmp_path: Path,
                                  scratch: Path) -> None:
    path, b = layout
    blob = path / "blobs" / "sha256" / b.manifest_digest[7:]
    blob.write_bytes(b.manifest + b"\n")
    expect_error(DigestMismatch, path, scratch, f"manifest {b.manifest_digest}",
                 "digest mismatch")


def test_manifest_digest_mismatch_in_archive(tmp_path: Path, scratch: Path) -> None:
    [b] = f.write_oci_archive(tmp_path / "o.tar", [f.sample_image()])
    assert isinstance(b, f.BuiltImage)
    bad = f.rewrite_tar(tmp_path / "o.tar", tmp_path / "bad.tar",
                        replace={f"blobs/sha256/{b.manifest_digest[7:]}": b.manifest + b" "})
    expect_error(DigestMismatch, bad, scratch, "digest mismatch")


def test_config_digest_mismatch(layout: tuple[Path, f.BuiltImage], scratch: Path) -> None:
    path, b = layout
    (path / "blobs" / "sha256" / b.config_digest[7:]).write_bytes(b.config + b" ")
    expect_error(DigestMismatch, path, scratch, f"config {b.config_digest}", "digest mismatch")


@pytest.mark.parametrize("kaniko", [False, True])
def test_legacy_config_digest_mismatch(kaniko: bool, tmp_path: Path, scratch: Path) -> None:
    [b] = f.write_docker_archive(tmp_path / "d.tar", [f.sample_image()], kaniko=kaniko)
    assert isinstance(b, f.BuiltImage)
    name = f"sha256:{b.config_digest[7:]}" if kaniko else f"{b.config_digest[7:]}.json"
    bad = f.rewrite_tar(tmp_path / "d.tar", tmp_path / "bad.tar",
                        replace={name: b.config.replace(b"/home/app", b"/home/bad")})
    expect_error(DigestMismatch, bad, scratch, name, "digest mismatch")


def test_layer_size_mismatch(layout: tuple[Path, f.BuiltImage], scratch: Path) -> None:
    path, b = layout
    blob = path / "blobs" / "sha256" / b.layer_digests[0][7:]
    blob.write_bytes(blob.read_bytes() + b"junk")
    expect_error(DigestMismatch, path, scratch, "(layer 1 of 3)", "size mismatch")


def test_unknown_layer_media_type(tmp_path: Path, scratch: Path) -> None:
    layers = f.sample_layers()
    layers[1] = f.Layer(layers[1].content, "none", media_type="application/x-weird")
    f.write_oci_archive(tmp_path / "o.tar", [f.ImageSpec(layers)])
    expect_error(UnsupportedMediaType, tmp_path / "o.tar", scratch, "layer 2 of 3",
                 "'application/x-weird'")


def _random_tar(path: Path) -> Path:
    with tarfile.open(path, "w") as tf:
        for ti, data in [f.directory("docs"), f.file("docs/readme.txt", b"hello")]:
            tf.addfile(ti, io.BytesIO(data))
    return path


@pytest.mark.parametrize("what", ["text", "empty", "random-tar", "gzip-text", "empty-dir",
                                  "dir", "missing", "old-docker", "binary"])
def test_not_an_image(what: str, tmp_path: Path, scratch: Path) -> None:
    p = tmp_path / "input"
    if what == "text":
        p.write_text("this is not an image archive\n" * 40)
    elif what == "empty":
        p.write_bytes(b"")
    elif what == "binary":
        p.write_bytes(bytes(range(256)) * 8)
    elif what == "random-tar":
        _random_tar(p)
    elif what == "gzip-text":
        (tmp_path / "t").write_text("plain text")
        f.compress_file(tmp_path / "t", p, "gzip")
    elif what in ("empty-dir", "dir"):
        p.mkdir()
        if what == "dir":
            (p / "file.txt").write_text("x")
    elif what == "old-docker":
        with tarfile.open(p, "w") as tf:
            ti, data = f.file("repositories", b"{}")
            tf.addfile(ti, io.BytesIO(data))
    msg = expect_error(SourceError, p, scratch,
                       "cannot open" if what == "missing" else "not an image archive or layout")
    if what == "old-docker":
        assert "docker < 1.10" in msg


# Properties --------------------------------------------------------------------------------------

_names = st.text(alphabet="abcdefgh", min_size=1, max_size=6)
_files = st.dictionaries(_names, st.binary(max_size=300), min_size=0, max_size=5)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=st.lists(st.tuples(_files, st.sampled_from(["none", "gzip", "zstd"])),
                       min_size=1, max_size=3),
       writer=st.sampled_from(["oci-archive", "docker25", "docker-skopeo"]))
def test_any_layers_round_trip(layers: list[tuple[dict[str, bytes], str]], writer: str,
                               tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path_factory.mktemp("prop")
    spec = f.ImageSpec([f.Layer([f.file(n, d) for n, d in files.items()], c)
                        for files, c in layers])
    path = WRITERS[writer](work / "img", [spec])
    (work / "s").mkdir()
    [im] = load(path, work / "s")
    assert [str(d) for d in im.config.diff_ids] == f.build_image(spec).diff_ids


# Architecture ------------------------------------------------------------------------------------

def test_sources_import_only_allowed_modules() -> None:
    """sources/* never import the store, catalog, tarindex or ingest, and a format module
    never imports another format module (shared code lives in private helpers)."""
    formats = {"docker_archive", "oci_layout", "registry"}
    banned = {"store", "catalog", "tarindex", "ingest", "extract", "cli", "reports", "repack"}
    for py in SRC.glob("*.py"):
        tree = ast.parse(py.read_text())
        for node in ast.walk(tree):
            mods: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                mods = [base] + [f"{base}.{a.name}" if base else a.name for a in node.names]
                if node.level == 0 and not base.startswith("layerdb"):
                    continue
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for m in mods:
                parts = set(m.split("."))
                assert not parts & banned, f"{py.name} imports {m}"
                if py.stem in formats:
                    assert not (parts & formats) - {py.stem}, f"{py.name} imports {m}"


def test_digest_of_ids_are_digests(layout: tuple[Path, f.BuiltImage], scratch: Path) -> None:
    path, _ = layout
    [im] = load(path, scratch)
    assert isinstance(im.id, Digest) and isinstance(im.config_digest, Digest)
