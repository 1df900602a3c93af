"""Ingest real images (umoci-built, skopeo-converted) and compare the merged view with what
`umoci unpack` puts on disk; the cache keeps each layer once; re-ingest reads nothing."""
from __future__ import annotations

import os
import subprocess
import sys

import imagefactory as f
import pytest
from catalog_snapshot import snapshot, tmp_is_clean

from layerdb.catalog import Catalog
from layerdb.ingest import ingest

VARIANTS = ("oci-umoci", "oci-gzip", "oci-zstd", "oci-none", "oci-none-mislabeled",
            "oci-archive", "oci-archive-zst", "docker-archive", "docker-archive-gz")


def _fs_listing(cat: Catalog, image_id: str) -> dict[str, tuple]:
    _, rows = cat.query(
        "select path, type, size, mode, coalesce(linkname, ''), coalesce(sha256, '') "
        "from fs where image_id = $i", {"i": image_id})
    out = {}
    for path, kind, size, mode, link, sha in rows:
        if kind == "hardlink":  # on disk a hardlink is just another name of a regular file
            kind, link = "file", ""
        out[path] = (kind, size, mode, link, sha)
    return out


def _one_image(cat: Catalog) -> str:
    _, rows = cat.query("select id from images")
    assert len(rows) == 1
    return rows[0][0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_merged_view_equals_umoci_unpack(umoci_images, variant, tmp_path):
    rep = ingest([umoci_images[variant]], catalog_root=str(tmp_path), jobs=2)
    assert not rep.failed, rep.failed[0].error
    want = f.tree_listing(umoci_images["rootfs"])
    with Catalog(str(tmp_path)) as cat:
        got = _fs_listing(cat, _one_image(cat))
    # umoci --rootless cannot keep the root directory's own mode from the image
    want.pop("/"), got.pop("/", None)
    assert got == want
    assert tmp_is_clean(tmp_path)


def test_every_variant_shares_one_cache(umoci_images, tmp_path):
    rep = ingest([umoci_images[v] for v in VARIANTS], catalog_root=str(tmp_path), jobs=2)
    assert not rep.failed
    with Catalog(str(tmp_path)) as cat:
        _, layers = cat.query("select diff_id, list_sort(digests), member_count from layers")
        _, imgs = cat.query("select count(*), count(distinct config_digest) from images")
        _, refs = cat.query("select list_sort(refs) from images where source like '%docker-archive.tar'")
    assert len(layers) == 5  # five layers, however many blob digests carried them
    # oci-umoci, oci-gzip, oci-archive(-zst) carry the same manifest; skopeo's docker-archive
    # -> oci copy writes a Docker-style config: 5 manifests, 2 configs
    assert imgs == [(5, 2)]
    cached = sorted(p.name for p in (tmp_path / "blobs" / "sha256").iterdir())
    assert cached == sorted(d[7:] + ".zst" for d, _, _ in layers)
    # gzip, zstd and uncompressed blobs of the same layer are all recorded
    assert max(len(d) for _, d, _ in layers) >= 3
    assert refs == [(["example.com/layerdb/umoci:latest", "example.com/layerdb/umoci:v1"],)]


def test_reingest_reads_no_layer(umoci_images, tmp_path):
    path = umoci_images["oci-archive"]
    first = ingest([path], catalog_root=str(tmp_path))
    before = snapshot(tmp_path)
    again = ingest([path], catalog_root=str(tmp_path))
    assert first.archives[0].new_layers == 5 and first.archives[0].bytes_read > 0
    assert again.archives[0].new_layers == 0 and again.archives[0].bytes_read == 0
    assert again.archives[0].new_images == 0
    assert snapshot(tmp_path) == before


def test_same_layers_new_archive_only_json(umoci_images, tmp_path):
    ingest([umoci_images["oci-gzip"]], catalog_root=str(tmp_path))
    rep = ingest([umoci_images["docker-archive"]], catalog_root=str(tmp_path))
    # a different manifest (uncompressed layers) but every diff_id is known: nothing is read
    assert rep.archives[0].new_images == 1 and rep.archives[0].bytes_read == 0


def test_cli_ingest_and_sql_as_written(umoci_images, tmp_path):
    env = {**os.environ, "LAYERDB_HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "layerdb.cli", *args], capture_output=True,
                              text=True, env=env)

    r = run("ingest", umoci_images["docker-archive"])
    assert r.returncode == 0, r.stderr
    r = run("sql", "select image, path, size from fs where path like '%/app'", "--format", "csv")
    assert r.returncode == 0, r.stderr
    lines = sorted(r.stdout.splitlines())
    assert lines == sorted(["image,path,size",
                            "example.com/layerdb/umoci:v1,/home/app,0",
                            "example.com/layerdb/umoci:v1,/home/app/app,22"])


def test_reingest_shortcut_needs_no_duckdb(umoci_images, tmp_path):
    path = umoci_images["docker-archive"]
    ingest([path], catalog_root=str(tmp_path))
    code = ("import sys; from layerdb.ingest import ingest; "
            f"r = ingest([{path!r}], catalog_root={str(tmp_path)!r}); "
            "a = r.archives[0]; "
            "print(a.error, len(a.images), a.new_images, a.new_layers, 'duckdb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "1", "0", "0", "False"]
    # a new ref for a known image is not "known": the full path records it
    f.write_oci_archive(tmp_path / "again.tar", [f.sample_image(tags=("x:1",))])
    ingest([str(tmp_path / "again.tar")], catalog_root=str(tmp_path))
    f.write_oci_archive(tmp_path / "retag.tar", [f.sample_image(tags=("x:2",))])
    rep = ingest([str(tmp_path / "retag.tar")], catalog_root=str(tmp_path))
    assert rep.archives[0].error is None
    with Catalog(str(tmp_path)) as cat:
        _, rows = cat.query("select list_sort(refs) from images where list_contains(refs, 'x:2')")
    assert rows == [(["x:1", "x:2"],)]
