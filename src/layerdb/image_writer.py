"""Write a one-layer image: an OCI layout directory, an oci-archive, or a docker-archive.

Reproducible: the same layer bytes, config and name give byte-identical output (canonical JSON,
sorted archive members with mtime 0 and owner 0, gzip with no name and mtime 0, single-threaded
zstd at a fixed level). Nothing is half-written: everything goes to a temporary name beside the
output, renamed into place at the end; on any error the temporary files are removed.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from .errors import UsageError

FORMATS = ("oci-archive", "docker-archive", "oci")
COMPRESSIONS = ("gzip", "zstd", "none")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = {"none": "application/vnd.oci.image.layer.v1.tar",
             "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
             "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}
GZIP_LEVEL = 6
ZSTD_LEVEL = 3


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _Counting:
    """A write-only file object that hashes (unless ``hashing`` is off) and counts what passes
    to ``out``."""

    def __init__(self, out: Any, hashing: bool = True) -> None:
        self.out = out
        self.h = hashlib.sha256()
        self.hashing = hashing
        self.size = 0

    def write(self, b: bytes) -> int:
        if self.hashing:
            self.h.update(b)
        self.size += len(b)
        self.out.write(b)
        return len(b)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


@dataclass
class LayerBlob:
    """A layer written to ``path`` (a temporary file): ``diff_id`` of the tar, ``digest`` and
    ``size`` of the blob as stored (compressed), ``tar_size`` of the tar."""

    path: str
    compression: str
    diff_id: str = ""
    digest: str = ""
    size: int = 0
    tar_size: int = 0


def write_layer(path: str, compression: str, fill: Callable[[BinaryIO], None]) -> LayerBlob:
    """Create ``path`` and write into it the layer ``fill(tar_stream)`` produces, compressed."""
    blob = LayerBlob(path, compression)
    with open(path, "wb", buffering=1 << 20) as f:
        stored = _Counting(f, hashing=compression != "none")  # else: the tar's own digest
        comp: Any
        if compression == "gzip":
            import gzip

            comp = gzip.GzipFile(filename="", mode="wb", compresslevel=GZIP_LEVEL,
                                 fileobj=stored, mtime=0)  # type: ignore[arg-type]
        elif compression == "zstd":
            import zstandard

            comp = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0).stream_writer(
                stored, closefd=False)  # type: ignore[arg-type]
        else:
            comp = None
        tar = _Counting(comp if comp is not None else stored)
        fill(tar)  # type: ignore[arg-type]
        if comp is not None:
            comp.close()
        blob.diff_id, blob.tar_size = tar.digest, tar.size
        blob.digest = stored.digest if compression != "none" else tar.digest
        blob.size = stored.size
    return blob


@dataclass
class WrittenImage:
    output: str
    format: str
    manifest_digest: str
    config_digest: str
    layer: LayerBlob
    size: int  # bytes written (the archive, or the layout's files)


def _tag_parts(tag: str) -> tuple[str, str]:
    name, sep, t = tag.rpartition(":")
    if not sep or "/" in t:
        return tag, "latest"
    return name, t


def _oci_docs(config: bytes, layer: LayerBlob, tag: str, platform: dict[str, str]
              ) -> tuple[bytes, bytes, str]:
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER[layer.compression], "digest": layer.digest,
                    "size": layer.size}]})
    name, t = _tag_parts(tag)
    index = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": _sha(manifest), "size": len(manifest),
                       "platform": platform,
                       "annotations": {"io.containerd.image.name": f"{name}:{t}",
                                       "org.opencontainers.image.ref.name": t}}]})
    return manifest, index, _sha(manifest)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tinfo(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.type, ti.mtime = size, kind, 0
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    tf.addfile(_tinfo(name, len(data)), io.BytesIO(data))


def check_output(output: str, force: bool) -> None:
    """Refuse an existing output unless ``force``; refuse a missing parent directory."""
    if os.path.lexists(output) and not force:
        raise UsageError(f"{output}: already exists (use --force to replace it)")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UsageError(f"{output}: directory {parent} does not exist")


def write_image(output: str, fmt: str, config: bytes, layer: LayerBlob, tag: str,
                platform: dict[str, str], force: bool) -> WrittenImage:
    """Assemble the image around ``layer`` (a temporary file, consumed) at ``output``."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
    check_output(output, force)
    parent = os.path.dirname(os.path.abspath(output))
    base = os.path.basename(output.rstrip("/"))
    if fmt == "oci":
        tmp = tempfile.mkdtemp(prefix=f".{base}.", suffix=".layerdb-tmp", dir=parent)
        try:
            manifest, index, mdigest = _oci_docs(config, layer, tag, platform)
            blobs = os.path.join(tmp, "blobs", "sha256")
            os.makedirs(blobs)
            for data in (config, manifest):
                with open(os.path.join(blobs, _sha(data)[7:]), "wb") as f:
                    f.write(data)
            shutil.copyfile(layer.path, os.path.join(blobs, layer.digest[7:]))
            with open(os.path.join(tmp, "index.json"), "wb") as f:
                f.write(index)
            with open(os.path.join(tmp, "oci-layout"), "wb") as f:
                f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))
            size = len(config) + len(manifest) + layer.size + len(index)
            _replace(tmp, output, is_dir=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return WrittenImage(output, fmt, mdigest, _sha(config), layer, size)
    fd, tmpf = tempfile.mkstemp(prefix=f".{base}.", suffix=".layerdb-tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
                tf.copybufsize = 1 << 20  # type: ignore[attr-defined]  # the layer goes through it
                if fmt == "oci-archive":
                    manifest, index, mdigest = _oci_docs(config, layer, tag, platform)
                    tf.addfile(_tinfo("blobs", kind=tarfile.DIRTYPE))
                    tf.addfile(_tinfo("blobs/sha256", kind=tarfile.DIRTYPE))
                    items: list[tuple[str, bytes | None]] = sorted(
                        [(_sha(config)[7:], config), (mdigest[7:], manifest), (layer.digest[7:], None)])
                    for hexd, blob_bytes in items:
                        if blob_bytes is None:
                            _add_file(tf, f"blobs/sha256/{hexd}", layer)
                        else:
                            _add_bytes(tf, f"blobs/sha256/{hexd}", blob_bytes)
                    _add_bytes(tf, "index.json", index)
                    _add_bytes(tf, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
                else:  # docker-archive, as skopeo and docker save (legacy) write it
                    name, t = _tag_parts(tag)
                    mdigest = ""
                    cname = _sha(config)[7:] + ".json"
                    lname = layer.diff_id[7:] + ".tar"
                    manifest = canonical_json([{"Config": cname, "RepoTags": [f"{name}:{t}"],
                                                "Layers": [lname]}])
                    for member in sorted((cname, lname)):
                        if member == cname:
                            _add_bytes(tf, cname, config)
                        else:
                            _add_file(tf, lname, layer)
                    _add_bytes(tf, "manifest.json", manifest)
        size = os.path.getsize(tmpf)
        _replace(tmpf, output, is_dir=False)
    except BaseException:
        try:
            os.unlink(tmpf)
        except FileNotFoundError:
            pass
        raise
    return WrittenImage(output, fmt, mdigest, _sha(config), layer, size)


def _add_file(tf: tarfile.TarFile, name: str, layer: LayerBlob) -> None:
    with open(layer.path, "rb") as src:
        tf.addfile(_tinfo(name, layer.size), src)


def _replace(tmp: str, output: str, is_dir: bool) -> None:
    """Move ``tmp`` to ``output``, replacing what is there (``--force`` was checked)."""
    if os.path.isdir(output) and not os.path.islink(output):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.", suffix=".layerdb-old",
                               dir=os.path.dirname(os.path.abspath(output)))
        os.rename(output, os.path.join(old, "x"))
        os.rename(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, output)
