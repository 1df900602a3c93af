"""Generated test images, shared by every test. Nothing here is committed as a binary fixture.

Two factories:

1. A small pure-Python writer (``tarfile`` + ``json``) for edge cases: layers given as tar
   members or prebuilt tar bytes, compressed none / gzip / zstd, written as an OCI layout
   directory, an oci-archive, a docker-save archive (legacy, Docker >= 25, kaniko), with tags,
   multi-platform indexes (nested, with BuildKit-style attestation manifests). Deterministic:
   fixed mtimes and timestamps, canonical JSON, gzip with mtime 0.

       layer = Layer([directory("etc"), file("etc/hello", b"hi\\n")], compression="gzip")
       write_oci_layout(tmp / "layout", [ImageSpec([layer], tags=["v1"])])

2. ``build_umoci_image``: a real multi-layer image made by ``umoci`` and converted by
   ``skopeo`` into every format it writes, plus the rootfs ``umoci unpack`` produces.

Plus corruption helpers (``rewrite_tar``, ``truncate_copy``, ``compress_file``) and
``tree_listing`` of an unpacked directory.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import zstandard

# Fixed times: 2020-09-13T12:26:40Z.
FIXED_MTIME = 1_600_000_000
CREATED = "2020-09-13T12:26:40Z"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
DOCKER_LAYER = {
    "none": "application/vnd.docker.image.rootfs.diff.tar",
    "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "zstd": "application/vnd.docker.image.rootfs.diff.tar.zstd",
}
IN_TOTO = "application/vnd.in-toto+json"

Member = tuple[tarfile.TarInfo, bytes]
_V = TypeVar("_V")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + sha256_hex(data)


def canonical_json(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# Tar members ---------------------------------------------------------------------------------

def _info(name: str, type_: bytes, mode: int, uid: int = 0, gid: int = 0,
          mtime: int = FIXED_MTIME) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.uname = ti.gname = ""
    ti.mtime = mtime
    return ti


def file(path: str, data: bytes = b"", mode: int = 0o644, *, uid: int = 0, gid: int = 0,
         mtime: int = FIXED_MTIME, pax: Mapping[str, str] | None = None) -> Member:
    """A regular file member. ``pax``: extra PAX headers (e.g. ``SCHILY.xattr.user.k``)."""
    ti = _info(path, tarfile.REGTYPE, mode, uid, gid, mtime)
    ti.size = len(data)
    if pax:
        ti.pax_headers = dict(pax)
    return ti, data


def directory(path: str, mode: int = 0o755, *, uid: int = 0, gid: int = 0,
              mtime: int = FIXED_MTIME) -> Member:
    return _info(path, tarfile.DIRTYPE, mode, uid, gid, mtime), b""


def symlink(path: str, target: str, *, mtime: int = FIXED_MTIME) -> Member:
    ti = _info(path, tarfile.SYMTYPE, 0o777, mtime=mtime)
    ti.linkname = target
    return ti, b""


def hardlink(path: str, target: str, mode: int = 0o644, *, mtime: int = FIXED_MTIME) -> Member:
    """A hardlink member; ``target`` is the archive path of an earlier member."""
    ti = _info(path, tarfile.LNKTYPE, mode, mtime=mtime)
    ti.linkname = target
    return ti, b""


def fifo(path: str, mode: int = 0o644) -> Member:
    return _info(path, tarfile.FIFOTYPE, mode), b""


def whiteout(path: str) -> Member:
    """``dir/.wh.name``: hides ``dir/name`` (and its subtree) of lower layers."""
    head, _, name = path.rstrip("/").rpartition("/")
    return _info(f"{head}/.wh.{name}" if head else f".wh.{name}", tarfile.REGTYPE, 0o644), b""


def opaque(dir_path: str) -> Member:
    """``dir/.wh..wh..opq``: hides every lower-layer child of ``dir``."""
    return _info(f"{dir_path.rstrip('/')}/.wh..wh..opq", tarfile.REGTYPE, 0o644), b""


def tar_bytes(members: Iterable[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar of ``members`` in order (end-of-archive blocks included)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


def compress(data: bytes, kind: str) -> bytes:
    """Deterministic gzip (mtime 0) or zstd of ``data``; ``none`` returns it unchanged."""
    if kind == "none":
        return data
    if kind == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    raise ValueError(f"unknown compression {kind!r}")


# Image specs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    """A layer: ``content`` is a list of members or a prebuilt uncompressed tar.
    ``media_type`` overrides the one derived from ``compression`` and the manifest style."""

    content: Sequence[Member] | bytes
    compression: str = "none"
    media_type: str | None = None

    def tar(self) -> bytes:
        """The uncompressed tar (its sha256 is the diff_id)."""
        return self.content if isinstance(self.content, bytes) else tar_bytes(self.content)


@dataclass(frozen=True)
class ImageSpec:
    """One image (one platform). ``tags``: full refs (``repo:tag``) or bare tags, written as
    RepoTags in docker archives and as ``org.opencontainers.image.ref.name`` in layouts.
    ``docker_types``: Docker v2s2 manifest/config/layer media types instead of OCI ones.
    ``config_extra``: top-level keys merged into the config JSON (may override anything)."""

    layers: Sequence[Layer]
    tags: Sequence[str] = ()
    platform: str = "linux/amd64"
    cmd: Sequence[str] = ("/bin/sh",)
    entrypoint: Sequence[str] = ()
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    working_dir: str = ""
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    docker_types: bool = False
    config_extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexSpec:
    """A multi-platform image index. ``manifests``: images or nested indexes.
    ``attestations``: add a BuildKit-style attestation manifest (platform unknown/unknown,
    ``vnd.docker.reference.type: attestation-manifest``) after each direct image child."""

    manifests: Sequence[ImageSpec | IndexSpec]
    tags: Sequence[str] = ()
    attestations: bool = False
    docker_types: bool = False


@dataclass
class BuiltImage:
    """An image as bytes. ``blobs``: digest -> bytes of the manifest, config and layers.
    ``diff_ids``, ``layer_digests``, ``layer_media_types``, ``layer_tars``: base first."""

    spec: ImageSpec
    manifest: bytes
    manifest_digest: str
    manifest_media_type: str
    config: bytes
    config_digest: str
    diff_ids: list[str]
    layer_digests: list[str]
    layer_media_types: list[str]
    layer_tars: list[bytes]
    blobs: dict[str, bytes]

    @property
    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.manifest_media_type, "digest": self.manifest_digest,
                "size": len(self.manifest)}

    def images(self) -> list[BuiltImage]:
        return [self]


@dataclass
class BuiltIndex:
    """An index as bytes; ``children``: the built images / indexes it lists (attestations
    not included); ``blobs``: every blob reachable from it, itself included."""

    spec: IndexSpec
    index: bytes
    digest: str
    media_type: str
    children: list[BuiltImage | BuiltIndex]
    blobs: dict[str, bytes]

    @property
    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.index)}

    def images(self) -> list[BuiltImage]:
        """Every platform image below this index, depth first, attestations excluded."""
        return [im for c in self.children for im in c.images()]


Built = BuiltImage | BuiltIndex
Spec = ImageSpec | IndexSpec


def _platform(text: str) -> dict[str, str]:
    parts = text.split("/")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) > 2:
        out["variant"] = parts[2]
    return out


def build_image(spec: ImageSpec) -> BuiltImage:
    """Serialise an ``ImageSpec``: layer blobs, config, manifest (canonical JSON)."""
    types = DOCKER_LAYER if spec.docker_types else OCI_LAYER
    tars = [layer.tar() for layer in spec.layers]
    blobs_l = [compress(t, layer.compression) for t, layer in zip(tars, spec.layers)]
    media = [layer.media_type or types[layer.compression] for layer in spec.layers]
    diff_ids = [digest_of(t) for t in tars]
    cfg: dict[str, object] = {
        **_platform(spec.platform),
        "created": CREATED,
        "config": {k: v for k, v in {
            "Cmd": list(spec.cmd), "Entrypoint": list(spec.entrypoint) or None,
            "Env": list(spec.env), "WorkingDir": spec.working_dir, "User": spec.user,
            "Labels": dict(spec.labels) or None}.items() if v},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": f"layer {i}"} for i in range(len(tars))],
    }
    cfg.update(spec.config_extra)
    config = canonical_json(cfg)
    manifest_type = DOCKER_MANIFEST if spec.docker_types else OCI_MANIFEST
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": DOCKER_CONFIG if spec.docker_types else OCI_CONFIG,
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": m, "digest": digest_of(b), "size": len(b)}
                   for m, b in zip(media, blobs_l)],
    })
    blobs = {digest_of(b): b for b in [manifest, config, *blobs_l]}
    return BuiltImage(spec, manifest, digest_of(manifest), manifest_type, config,
                      digest_of(config), diff_ids, [digest_of(b) for b in blobs_l], media, tars,
                      blobs)


def _attestation(subject: BuiltImage) -> tuple[dict[str, object], dict[str, bytes]]:
    """A BuildKit-like attestation manifest for ``subject``: its descriptor and blobs."""
    statement = canonical_json({"_type": "https://in-toto.io/Statement/v0.1",
                                "subject": [{"digest": {"sha256": subject.manifest_digest[7:]}}]})
    config = canonical_json({"architecture": "unknown", "os": "unknown",
                             "rootfs": {"type": "layers", "diff_ids": [digest_of(statement)]}})
    manifest = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": IN_TOTO, "digest": digest_of(statement),
                    "size": len(statement),
                    "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}],
    })
    desc = {"mediaType": OCI_MANIFEST, "digest": digest_of(manifest), "size": len(manifest),
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {"vnd.docker.reference.digest": subject.manifest_digest,
                            "vnd.docker.reference.type": "attestation-manifest"}}
    return desc, {digest_of(b): b for b in (statement, config, manifest)}


def build(spec: Spec) -> Built:
    """Serialise an ``ImageSpec`` or an ``IndexSpec`` (recursively)."""
    if isinstance(spec, ImageSpec):
        return build_image(spec)
    children = [build(c) for c in spec.manifests]
    blobs: dict[str, bytes] = {}
    entries: list[dict[str, object]] = []
    for child in children:
        blobs.update(child.blobs)
        desc = dict(child.descriptor)
        if isinstance(child, BuiltImage):
            desc["platform"] = _platform(child.spec.platform)
        entries.append(desc)
        if spec.attestations and isinstance(child, BuiltImage):
            adesc, ablobs = _attestation(child)
            entries.append(adesc)
            blobs.update(ablobs)
    media_type = DOCKER_LIST if spec.docker_types else OCI_INDEX
    index = canonical_json({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})
    blobs[digest_of(index)] = index
    return BuiltIndex(spec, index, digest_of(index), media_type, children, blobs)


# Ready-made content ----------------------------------------------------------------------------

def sample_layers(compressions: Sequence[str] = ("gzip", "zstd", "none")) -> list[Layer]:
    """Three layers, base first: (0) a base tree with dirs, files, an executable, a setuid
    file, a symlink and a hardlink; (1) a modified file, a whiteout of a file and of a
    directory; (2) an opaque directory refilled. ``compressions`` gives each layer's."""
    base = [
        directory("etc"), file("etc/hello.txt", b"hello\n"),
        hardlink("etc/hello-hard.txt", "etc/hello.txt"), file("etc/remove.me", b"bye\n"),
        directory("home"), directory("home/app"),
        file("home/app/app", b"#!/bin/sh\necho app\n", 0o755),
        symlink("home/app/hello-link", "../../etc/hello.txt"),
        directory("usr"), directory("usr/bin"), file("usr/bin/suid", b"s\n", 0o4755),
        directory("var"), directory("var/cache"), directory("var/cache/old"),
        file("var/cache/old/a", b"a\n"),
        directory("opt"), directory("opt/data"), file("opt/data/one", b"one\n"),
    ]
    change = [
        file("home/app/app", b"#!/bin/sh\necho app v2\n", 0o755),
        whiteout("etc/remove.me"), whiteout("var/cache/old"),
    ]
    refill = [directory("opt/data"), opaque("opt/data"), file("opt/data/three", b"three\n")]
    return [Layer(m, c) for m, c in zip((base, change, refill), compressions)]


def sample_image(tags: Sequence[str] = ("example.com/sample:v1",), platform: str = "linux/amd64",
                 compressions: Sequence[str] = ("gzip", "zstd", "none"),
                 **kw: object) -> ImageSpec:
    """``sample_layers`` as an image with ``working_dir`` /home/app and cmd ./app."""
    return ImageSpec(sample_layers(compressions), tags=tags, platform=platform,
                     cmd=("./app",), working_dir="/home/app", **kw)  # type: ignore[arg-type]


# Layout members ------------------------------------------------------------------------------

def _tag_part(ref: str) -> str:
    """``example.com:5000/app:v1`` -> ``v1`` (``latest`` when the ref has no tag)."""
    last = ref.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else ("latest" if "/" in ref else ref)


def _layout_files(built: Sequence[Built], containerd: bool) -> list[tuple[str, bytes]]:
    """(name, bytes) of an OCI layout: ``oci-layout``, blobs (sorted), ``index.json``."""
    blobs: dict[str, bytes] = {}
    entries: list[dict[str, object]] = []
    for b in built:
        blobs.update(b.blobs)
        tags = list(b.spec.tags) or [""]
        for tag in tags:
            desc = dict(b.descriptor)
            if tag and containerd:
                desc["annotations"] = {"io.containerd.image.name": tag,
                                       "org.opencontainers.image.ref.name": _tag_part(tag)}
            elif tag:
                desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
            entries.append(desc)
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')]
    files += [(f"blobs/sha256/{d[7:]}", data) for d, data in sorted(blobs.items())]
    files.append(("index.json", index))
    return files


def _write_tar(path: str | Path, files: Sequence[tuple[str, bytes]], *,
               dot_slash: bool = False,
               symlinks: Sequence[tuple[str, str]] = ()) -> None:
    """A deterministic tar of regular files (and symlinks), parent directories first."""
    prefix = "./" if dot_slash else ""
    dirs: list[str] = []
    for name, _ in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.append(d)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in dirs:
            tf.addfile(_info(prefix + d, tarfile.DIRTYPE, 0o755))
        for name, data in files:
            ti = _info(prefix + name, tarfile.REGTYPE, 0o644)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for name, target in symlinks:
            ti = _info(prefix + name, tarfile.SYMTYPE, 0o777)
            ti.linkname = target
            tf.addfile(ti)


def write_oci_layout(root: str | Path, images: Sequence[Spec]) -> list[Built]:
    """Write an OCI image layout directory; one ``index.json`` entry per tag (or one untagged
    entry) of each spec. Returns the built images/indexes, in ``images`` order."""
    built = [build(s) for s in images]
    root = Path(root)
    for name, data in _layout_files(built, containerd=False):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return built


def write_oci_archive(path: str | Path, images: Sequence[Spec], *,
                      dot_slash: bool = False) -> list[Built]:
    """The same layout as ``write_oci_layout``, inside a tar (an ``oci-archive``)."""
    built = [build(s) for s in images]
    _write_tar(path, _layout_files(built, containerd=False), dot_slash=dot_slash)
    return built


def _v1_ids(diff_ids: Sequence[str]) -> list[str]:
    """Stand-ins for docker's v1 layer ids (chain of diff_ids)."""
    out, parent = [], ""
    for d in diff_ids:
        parent = sha256_hex(f"{parent} {d}".encode())
        out.append(parent)
    return out


def write_docker_archive(path: str | Path, images: Sequence[Spec], *, legacy: bool = True,
                         layer_dirs: bool = True, kaniko: bool = False,
                         dot_slash: bool = False) -> list[Built]:
    """Write a ``docker save``-style archive.

    - ``legacy=True, layer_dirs=True``: docker < 25: ``<config hex>.json``,
      ``<v1 id>/layer.tar`` (+ ``VERSION``, ``json``), ``manifest.json``, ``repositories``.
    - ``legacy=True, layer_dirs=False``: skopeo/podman: ``<diff_id hex>.tar`` files with
      ``<v1 id>/layer.tar`` symlinks to them.
    - ``kaniko=True``: kaniko / ggcr tarball: ``sha256:<config hex>`` config, gzip layers as
      ``<blob hex>.tar.gz`` (layer compression forced to gzip), ``manifest.json`` only.
    - ``legacy=False``: Docker >= 25: an OCI layout (``index.json`` entries annotated with
      ``io.containerd.image.name`` and a bare ``ref.name`` tag) plus ``manifest.json`` whose
      Config/Layers are ``blobs/sha256/<hex>``. Index specs are allowed only here.

    Legacy layer files hold each layer's blob as its spec compresses it. Returns the built
    images (for kaniko: built with gzip layers).
    """
    if kaniko:
        images = [_force_gzip(s) for s in images]
    built = [build(s) for s in images]
    if legacy or kaniko:
        if any(isinstance(b, BuiltIndex) for b in built):
            raise ValueError("legacy and kaniko archives cannot hold an image index")
        files, links = _legacy_files([b for b in built if isinstance(b, BuiltImage)],
                                     kaniko=kaniko, layer_dirs=layer_dirs)
    else:
        files, links = _docker25_files(built), []
    _write_tar(path, files, dot_slash=dot_slash, symlinks=links)
    return built


def _docker25_files(built: Sequence[Built]) -> list[tuple[str, bytes]]:
    files = _layout_files(built, containerd=True)
    manifest = [{"Config": f"blobs/sha256/{im.config_digest[7:]}",
                 "RepoTags": list(b.spec.tags) or None,
                 "Layers": [f"blobs/sha256/{d[7:]}" for d in im.layer_digests]}
                for b in built for im in b.images()]
    files.append(("manifest.json", canonical_json(manifest)))
    files.append(("repositories", _repositories(built)))
    return files


def _legacy_files(built: Sequence[BuiltImage], *, kaniko: bool, layer_dirs: bool
                  ) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """(regular files, symlinks) of a docker < 25, skopeo-style or kaniko archive."""
    files: list[tuple[str, bytes]] = []
    links: list[tuple[str, str]] = []
    manifest = []
    for b in built:
        layer_names = []
        for i, (v1, digest) in enumerate(zip(_v1_ids(b.diff_ids), b.layer_digests)):
            blob = b.blobs[digest]
            if kaniko:
                name = f"{digest[7:]}.tar.gz"
                files.append((name, blob))
            elif layer_dirs:
                name = f"{v1}/layer.tar"
                files += [(name, blob), (f"{v1}/VERSION", b"1.0"),
                          (f"{v1}/json", canonical_json({"id": v1}))]
            else:
                name = f"{b.diff_ids[i][7:]}.tar"
                files.append((name, blob))
                links.append((f"{v1}/layer.tar", f"../{name}"))
            layer_names.append(name)
        config_name = f"sha256:{b.config_digest[7:]}" if kaniko else f"{b.config_digest[7:]}.json"
        files.append((config_name, b.config))
        manifest.append({"Config": config_name, "RepoTags": list(b.spec.tags) or None,
                         "Layers": layer_names})
    files = _dedupe(files)
    files.append(("manifest.json", canonical_json(manifest)))
    if not kaniko:
        files.append(("repositories", _repositories(built)))
    return files, _dedupe(links)


def _dedupe(items: Sequence[tuple[str, _V]]) -> list[tuple[str, _V]]:
    """First occurrence of each name wins (images may share layers)."""
    seen: dict[str, _V] = {}
    for name, v in items:
        seen.setdefault(name, v)
    return list(seen.items())


def _force_gzip(spec: Spec) -> Spec:
    assert isinstance(spec, ImageSpec)
    return replace(spec, layers=[Layer(la.content, "gzip", la.media_type) for la in spec.layers])


def _repositories(built: Sequence[Built]) -> bytes:
    repos: dict[str, dict[str, str]] = {}
    for b in built:
        for im in b.images():
            top = _v1_ids(im.diff_ids)[-1] if im.diff_ids else ""
            for tag in b.spec.tags:
                repo, _, t = tag.rpartition(":")
                if repo and "/" not in t:
                    repos.setdefault(repo, {})[t] = top
    return canonical_json(repos)


# Corruption and packaging helpers --------------------------------------------------------------

def compress_file(src: str | Path, dst: str | Path, kind: str) -> Path:
    """Compress a whole file (gzip with mtime 0, or zstd), streaming."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        if kind == "gzip":
            with gzip.GzipFile(fileobj=fout, mode="wb", mtime=0) as gz:
                shutil.copyfileobj(fin, gz, 1 << 20)
        elif kind == "zstd":
            zstandard.ZstdCompressor(level=3).copy_stream(fin, fout)
        else:
            raise ValueError(f"unknown compression {kind!r}")
    return Path(dst)


def truncate_copy(src: str | Path, dst: str | Path, size: int) -> Path:
    """A copy of the first ``size`` bytes of ``src`` (negative: drop that many bytes)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[:size])
    return Path(dst)


def tar_names(path: str | Path) -> list[str]:
    with tarfile.open(path) as tf:
        return tf.getnames()


def member_range(path: str | Path, name: str) -> tuple[int, int]:
    """(offset of the data, size) of member ``name`` (exact member name) in tar ``path``."""
    with tarfile.open(path) as tf:
        m = tf.getmember(name)
        return m.offset_data, m.size


def rewrite_tar(src: str | Path, dst: str | Path, *,
                replace: Mapping[str, bytes] | None = None,
                drop: Iterable[str] = (), add: Mapping[str, bytes] | None = None) -> Path:
    """Copy tar ``src`` to ``dst`` with members' contents replaced, members dropped, and
    regular files appended (names exactly as in the archive). Headers otherwise kept."""
    replace = dict(replace or {})
    drop = set(drop)
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for ti in tin:
            if ti.name in drop:
                continue
            if ti.name in replace:
                data = replace[ti.name]
                ti.size = len(data)
                tout.addfile(ti, io.BytesIO(data))
            elif ti.isreg():
                tout.addfile(ti, tin.extractfile(ti))
            else:
                tout.addfile(ti)
        for name, data in (add or {}).items():
            ti = _info(name, tarfile.REGTYPE, 0o644)
            ti.size = len(data)
            tout.addfile(ti, io.BytesIO(data))
    return Path(dst)


# Real directories ------------------------------------------------------------------------------

Entry = tuple[str, int, int, str, str]


def tree_listing(rootfs: str | Path) -> dict[str, Entry]:
    """Every path of an unpacked directory tree -> (type, size, mode, linkname, sha256).

    Paths are absolute and normalised as the catalog writes them (root is ``/``). ``type``:
    file, dir, symlink, char, block, fifo, socket (hardlinked files are plain ``file``s: a
    directory cannot tell which name came first). ``size``: bytes of regular files, else 0.
    ``mode``: permission bits incl. setuid/setgid/sticky. ``linkname``: symlink target.
    ``sha256``: hex of regular files' content, else "".
    """
    root = Path(rootfs)
    out: dict[str, Entry] = {"/": _entry(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out["/" + p.relative_to(root).as_posix()] = _entry(p)
    return dict(sorted(out.items()))


def _entry(p: Path) -> Entry:
    st = p.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        return "file", st.st_size, mode, "", sha256_hex(p.read_bytes())
    if stat.S_ISLNK(st.st_mode):
        return "symlink", 0, mode, os.readlink(p), ""
    kind = ("dir" if stat.S_ISDIR(st.st_mode) else "fifo" if stat.S_ISFIFO(st.st_mode)
            else "char" if stat.S_ISCHR(st.st_mode) else "block" if stat.S_ISBLK(st.st_mode)
            else "socket")
    return kind, 0, mode, "", ""


# The umoci + skopeo factory ------------------------------------------------------------------------

UMOCI_TAG = "v1"
SKOPEO_REF = "example.com/layerdb/umoci:v1"
SKOPEO_REF2 = "example.com/layerdb/umoci:latest"

#: Refs each variant of ``build_umoci_image`` carries.
UMOCI_REFS: dict[str, tuple[str, ...]] = {
    "oci-umoci": (UMOCI_TAG,),
    "oci-gzip": (UMOCI_TAG,),
    "oci-zstd": (UMOCI_TAG,),
    "oci-none": (UMOCI_TAG,),
    "oci-none-mislabeled": (UMOCI_TAG,),
    "oci-archive": (SKOPEO_REF,),
    "oci-archive-zst": (SKOPEO_REF,),
    "docker-archive": (SKOPEO_REF, SKOPEO_REF2),
    "docker-archive-gz": (SKOPEO_REF, SKOPEO_REF2),
}

#: The layers of the umoci image, base first, and what each one does.
UMOCI_LAYERS = (
    "repack: base tree (dirs, files, symlink, hardlink, fifo, setuid, executable, long path)",
    "repack: modify /home/app/app, delete /etc/remove.me, delete dir /var/cache/old",
    "repack: rm -rf /opt/data then recreate it (umoci writes .wh. per old child, no opaque)",
    "insert --opaque: /usr/share/doc replaced (a real .wh..wh..opq, written before its dir)",
    "insert --whiteout: /etc/obsolete.conf removed (one header, no end-of-archive blocks)",
)


def _run(*args: str, env: Mapping[str, str] | None = None) -> None:
    try:
        subprocess.run(args, check=True, capture_output=True, env=env)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(args)} failed: {e.stderr.decode(errors='replace')}") from e


def _settle(root: Path) -> None:
    """Set every mtime under ``root`` to FIXED_MTIME (umoci's mtree diff compares contents by
    sha256, so unchanged files stay out of the next layer)."""
    paths = [root] + [Path(d) / n for d, ds, fs in os.walk(root) for n in ds + fs]
    for p in paths:
        os.utime(p, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)


def _repack(layout: Path, bundle: Path, what: str) -> None:
    _settle(bundle / "rootfs")
    _run("umoci", "repack", "--refresh-bundle", "--history.created", CREATED,
         "--history.created_by", what, "--image", f"{layout}:{UMOCI_TAG}", str(bundle))


def _layer1(r: Path) -> None:
    for d in ("etc", "home/app", "usr/bin", "usr/share/doc/pkg", "var/cache/old/deep",
              "opt/data/sub", "tmp"):
        (r / d).mkdir(parents=True, exist_ok=True)
    (r / "etc/hello.txt").write_bytes(b"hello\n")
    os.link(r / "etc/hello.txt", r / "etc/hello-hard.txt")
    (r / "etc/remove.me").write_bytes(b"to be deleted\n")
    (r / "etc/empty").write_bytes(b"")
    (r / "etc/obsolete.conf").write_bytes(b"obsolete=1\n")
    (r / "home/app/app").write_bytes(b"#!/bin/sh\necho app\n")
    os.chmod(r / "home/app/app", 0o755)
    os.symlink("../../etc/hello.txt", r / "home/app/hello-link")
    (r / "usr/bin/suid").write_bytes(b"setuid\n")
    os.chmod(r / "usr/bin/suid", 0o4755)
    os.chmod(r / "tmp", 0o1777)
    (r / "usr/share/doc/pkg/README").write_bytes(b"old docs\n")
    (r / "usr/share/doc/pkg/COPYING").write_bytes(b"old license\n")
    (r / "var/cache/old/a").write_bytes(b"a\n")
    (r / "var/cache/old/deep/b").write_bytes(b"b\n")
    (r / "opt/data/one").write_bytes(b"one\n")
    (r / "opt/data/sub/two").write_bytes(b"two\n")
    long_dir = r / "opt" / ("d" * 60) / ("e" * 60)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 80)).write_bytes(b"long path\n")
    # 192 KiB of deterministic bytes, so member offsets are not all small.
    blob = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(6144))
    (r / "usr/bin/tool").write_bytes(blob)
    os.chmod(r / "usr/bin/tool", 0o755)
    os.mkfifo(r / "etc/fifo", 0o600)


def build_umoci_image(workdir: str | Path) -> dict[str, str]:
    """Build a 5-layer image with real ``umoci`` (see ``UMOCI_LAYERS``) and convert it with
    ``skopeo``. Returns variant name -> path:

    - ``oci-umoci``: umoci's own layout (gzip layers, ref ``v1``);
    - ``oci-gzip`` / ``oci-zstd``: ``skopeo copy oci: oci: --dest-compress-format gzip|zstd``;
    - ``oci-none``: ``skopeo copy --dest-decompress`` to ``dir:``, then to ``oci:`` with
      ``--dest-oci-accept-uncompressed-layers`` (media type ``...layer.v1.tar``);
    - ``oci-none-mislabeled``: ``docker-archive:`` -> ``oci:`` with
      ``--dest-oci-accept-uncompressed-layers``: skopeo 1.9.3 stores the uncompressed blobs
      but labels them ``tar+gzip``;
    - ``oci-archive``: ``skopeo copy ... oci-archive:`` (gzip layers);
    - ``docker-archive``: ``skopeo copy ... docker-archive:`` (legacy layout, uncompressed
      ``<diff_id>.tar`` layers, ``<v1 id>/layer.tar`` symlinks, two RepoTags);
    - ``docker-archive-gz`` / ``oci-archive-zst``: those archives compressed as a whole;
    - ``rootfs``: the final image unpacked by ``umoci unpack --rootless``.

    Refs per variant are in ``UMOCI_REFS``. Takes well under a second.
    """
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(work)}
    layout, bundle = work / "oci-umoci", work / "bundle"
    img = f"{layout}:{UMOCI_TAG}"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", img)
    _run("umoci", "unpack", "--rootless", "--image", img, str(bundle))
    r = bundle / "rootfs"
    _layer1(r)
    _repack(layout, bundle, UMOCI_LAYERS[0])
    (r / "home/app/app").write_bytes(b"#!/bin/sh\necho app v2\n")
    (r / "etc/remove.me").unlink()
    shutil.rmtree(r / "var/cache/old")
    _repack(layout, bundle, UMOCI_LAYERS[1])
    shutil.rmtree(r / "opt/data")
    (r / "opt/data").mkdir()
    (r / "opt/data/three").write_bytes(b"three\n")
    _repack(layout, bundle, UMOCI_LAYERS[2])
    docs = work / "newdocs"
    (docs / "pkg").mkdir(parents=True)
    (docs / "pkg/README").write_bytes(b"new docs\n")
    _settle(docs)
    _run("umoci", "insert", "--rootless", "--history.created", CREATED,
         "--history.created_by", UMOCI_LAYERS[3], "--image", img, "--opaque", str(docs),
         "/usr/share/doc")
    _run("umoci", "insert", "--rootless", "--history.created", CREATED,
         "--history.created_by", UMOCI_LAYERS[4], "--image", img, "--whiteout",
         "/etc/obsolete.conf")
    _run("umoci", "config", "--image", img, "--config.workingdir", "/home/app/",
         "--config.cmd", "./app", "--config.env", "APP_MODE=test", "--created", CREATED,
         "--history.created", CREATED, "--architecture", "amd64", "--os", "linux")
    _run("umoci", "gc", "--layout", str(layout))
    _run("umoci", "unpack", "--rootless", "--image", img, str(work / "final"))

    out = {"oci-umoci": str(layout), "rootfs": str(work / "final" / "rootfs")}
    sk = ["skopeo", "--insecure-policy", "--tmpdir", str(work), "copy", "-q"]
    src = f"oci:{img}"

    def copy(dest: str, *flags: str, source: str = src) -> None:
        _run(*sk, *flags, source, dest, env=env)

    out["docker-archive"] = str(work / "docker-archive.tar")
    copy(f"docker-archive:{out['docker-archive']}:{SKOPEO_REF}", "--additional-tag", SKOPEO_REF2)
    out["oci-archive"] = str(work / "oci-archive.tar")
    copy(f"oci-archive:{out['oci-archive']}:{SKOPEO_REF}")
    for kind in ("gzip", "zstd"):
        out[f"oci-{kind}"] = str(work / f"oci-{kind}")
        copy(f"oci:{out[f'oci-{kind}']}:{UMOCI_TAG}", "--dest-compress-format", kind)
    copy(f"dir:{work / 'dir-none'}", "--dest-decompress")
    out["oci-none"] = str(work / "oci-none")
    copy(f"oci:{out['oci-none']}:{UMOCI_TAG}", "--dest-oci-accept-uncompressed-layers",
         source=f"dir:{work / 'dir-none'}")
    out["oci-none-mislabeled"] = str(work / "oci-none-mislabeled")
    copy(f"oci:{out['oci-none-mislabeled']}:{UMOCI_TAG}",
         "--dest-oci-accept-uncompressed-layers",
         source=f"docker-archive:{out['docker-archive']}")
    out["docker-archive-gz"] = str(compress_file(out["docker-archive"],
                                                 work / "docker-archive.tar.gz", "gzip"))
    out["oci-archive-zst"] = str(compress_file(out["oci-archive"],
                                               work / "oci-archive.tar.zst", "zstd"))
    return out


def have_tools() -> bool:
    """True when ``umoci`` and ``skopeo`` are on PATH."""
    return bool(shutil.which("umoci") and shutil.which("skopeo"))
