"""eStargz layers (containerd/stargz-snapshotter docs/estargz.md), built here byte by byte.

An eStargz blob is a gzip tar whose every non-empty regular file payload starts a new gzip
member, followed by the TOC (``stargz.index.json``, a tar entry in its own gzip member) and a
51-byte footer: an empty gzip member whose Extra field holds the TOC's offset. The diff_id is
the sha256 of the whole decompressed stream, TOC included.

Where the TOC lands in the tar decides what a runtime unpacks, and so what layerdb shows.
estargz's default writer (``Build``, ``nerdctl image convert --estargz``) drops the source
tar's end-of-archive and writes the TOC as the last member before the only end-of-archive:
Go's ``archive/tar`` (containerd, moby) creates ``/stargz.index.json``. Its lossless writer
(``AppendTarLossLess``) keeps the source's end-of-archive, so the TOC sits after it: the
runtime stops at the end-of-archive and never sees the TOC, and neither may layerdb.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import imagefactory as f
import pytest

from layerdb.catalog import Catalog
from layerdb.extract import extract
from layerdb.ingest import ingest
from layerdb.merged import open_view

TOC_NAME = "stargz.index.json"
BIG = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: more than one 512-byte block, odd size
FILES = {"etc/hello.txt": b"hello estargz\n", "bin/big": BIG, ".no.prefetch.landmark": b"\x0f"}


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _footer(toc_offset: int) -> bytes:
    """The 51-byte eStargz footer: an empty gzip member, FEXTRA 'SG' + %016xSTARGZ."""
    sub = b"%016xSTARGZ" % toc_offset
    extra = b"SG" + struct.pack("<H", len(sub)) + sub
    header = b"\x1f\x8b\x08\x04" + b"\0\0\0\0" + b"\x00\xff" + struct.pack("<H", len(extra)) + extra
    empty_stored_block = b"\x01\x00\x00\xff\xff"
    out = header + empty_stored_block + struct.pack("<II", zlib.crc32(b""), 0)
    assert len(out) == 51
    return out


def _header(ti: tarfile.TarInfo) -> bytes:
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def build_estargz(lossless: bool) -> tuple[bytes, bytes, str]:
    """(blob, uncompressed stream, TOC JSON digest) of a layer holding ``FILES`` and a
    directory and symlink, written the way estargz's writers lay it out."""
    members: list[tuple[tarfile.TarInfo, bytes]] = [f.directory("etc/"), f.directory("bin/")]
    members += [f.file(name, data, 0o755 if name == "bin/big" else 0o644) for name, data in FILES.items()]
    members.append(f.symlink("etc/link", "hello.txt"))
    blob = bytearray()
    raw = bytearray()
    entries = []

    def member(data: bytes) -> None:
        blob.extend(_gz(data))
        raw.extend(data)

    for ti, data in members:
        ent = {"name": ti.name, "type": {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink"}.get(
            ti.type, "reg"), "mode": ti.mode, "uid": 0, "gid": 0}
        if ti.issym():
            ent["linkName"] = ti.linkname
        member(_header(ti))  # the header ends the previous gzip member's run
        if ti.isreg() and data:
            ent.update(size=len(data), offset=len(blob), chunkSize=0,
                       digest="sha256:" + hashlib.sha256(data).hexdigest(),
                       chunkDigest="sha256:" + hashlib.sha256(data).hexdigest())
            member(data + b"\0" * (-len(data) % 512))  # a payload starts its own member
        entries.append(ent)
    if lossless:
        member(b"\0" * 1024)  # the source tar's end-of-archive, kept
    toc = json.dumps({"version": 1, "entries": entries}, indent="\t").encode()
    ti = tarfile.TarInfo(TOC_NAME)
    ti.size = len(toc)
    toc_offset = len(blob)
    member(_header(ti) + toc + b"\0" * (-len(toc) % 512) + b"\0" * 1024)
    blob.extend(_footer(toc_offset))
    return bytes(blob), bytes(raw), "sha256:" + hashlib.sha256(toc).hexdigest()


def _write_layout(root: Path, blob: bytes, raw: bytes, toc_digest: str, tag: str) -> str:
    """An OCI layout holding one image whose one layer is ``blob``; returns the diff_id."""
    diff_id = f.digest_of(raw)
    config = f.canonical_json({
        "architecture": "amd64", "os": "linux", "created": f.CREATED,
        "config": {"Cmd": ["/bin/big"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": f.CREATED, "created_by": "estargz"}]})
    manifest = f.canonical_json({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f.digest_of(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f.digest_of(blob), "size": len(blob),
                    "annotations": {"containerd.io/snapshot/stargz/toc.digest": toc_digest,
                                    "io.containers.estargz.uncompressed-size": str(len(raw))}}]})
    for data in (blob, config, manifest):
        p = root / "blobs" / "sha256" / f.sha256_hex(data)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_bytes(f.canonical_json({
        "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f.digest_of(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return diff_id


def _go_names(raw: bytes) -> list[str]:
    """What a runtime unpacks: tarfile stops at the first end-of-archive, as Go's reader does."""
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        return [m.name for m in tf.getmembers()]


@pytest.mark.parametrize("lossless", [True, False], ids=["lossless-toc-after-eoa", "default-toc-member"])
def test_estargz_layer(tmp_path: Path, lossless: bool) -> None:
    blob, raw, toc_digest = build_estargz(lossless)
    # the blob is one valid gzip stream of concatenated members, the footer included
    assert gzip.decompress(blob) == raw
    assert blob[-51:][:4] == b"\x1f\x8b\x08\x04"
    toc_offset = int(blob[-51 + 16:-51 + 32], 16)
    assert gzip.decompress(blob[toc_offset:-51])[:len(TOC_NAME)] == TOC_NAME.encode()
    names = _go_names(raw)
    assert (TOC_NAME in names) is not lossless

    layout = tmp_path / "layout"
    diff_id = _write_layout(layout, blob, raw, toc_digest, "v1")
    cat = str(tmp_path / "cat")
    rep = ingest([str(layout)], catalog_root=cat, jobs=1)
    assert not rep.failed, rep.failed[0].error

    view = open_view(cat)
    try:
        img = view.resolve_image("v1")
        shown = sorted(e.path for e in view.subtree(img.id, "/"))
        layer = view.member(img.id, 0, "/etc/hello.txt")
    finally:
        view.close()
    assert layer is not None and layer.content_layer == diff_id  # the diff_id the config states
    want = sorted({"/"} | {"/" + n.rstrip("/") for n in names})
    assert shown == want
    assert ("/" + TOC_NAME in shown) is not lossless
    with Catalog(cat) as c:
        members = sorted(r[0] for r in c.query("select path from members")[1])
        fs = sorted(r[0] for r in c.query("select path from fs")[1])
        layers = c.query("select diff_id, size from layers")[1]
    assert layers == [(diff_id, len(raw))]
    assert members == sorted("/" + n.rstrip("/") for n in names)
    assert fs == members

    for name, data in FILES.items():
        out = io.BytesIO()
        extract(path="/" + name, image="v1", catalog_root=cat, stdout=out)
        assert out.getvalue() == data
    out = io.BytesIO()
    extract(path="/etc/link", image="v1", catalog_root=cat, stdout=out)
    assert out.getvalue() == FILES["etc/hello.txt"]
