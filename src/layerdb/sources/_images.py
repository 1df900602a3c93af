"""Helpers every format shares: JSON documents, descriptors, digest checks, configs, refs.

Error messages start with the archive path the user gave and name the member or blob, e.g.
``img.tar: manifest.json: malformed JSON: ...``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from ..digest import Digest
from ..errors import DigestMismatch, SourceError, UnsupportedMediaType
from ..model import (
    DOCKER_CONFIG,
    LAYER_TYPES,
    OCI_CONFIG,
    Image,
    ImageConfig,
    Platform,
    decode_json,
    parse_config,
)
from ._files import Files, read_small

#: Config media types of runnable images; a manifest with another config type is an artifact.
IMAGE_CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
REFERENCE_TYPE = "vnd.docker.reference.type"


def parse_json(raw: bytes, where: str) -> Any:
    """Decode a JSON document within layerdb's limits (``model.MAX_JSON_BYTES`` and
    ``MAX_JSON_DEPTH``); ``where`` prefixes the error (``img.tar: manifest.json``)."""
    return decode_json(raw, where)


def load_json(files: Files, name: str, what: str = "") -> tuple[bytes, Any]:
    """Read member/file ``name`` and decode it. Returns (exact bytes, document)."""
    label = what or name
    raw = read_small(files, name, label)
    return raw, parse_json(raw, f"{files.display}: {label}")


def expect(cond: bool, where: str, msg: str) -> None:
    """Raise ``SourceError`` "``where``: ``msg``" unless ``cond``."""
    if not cond:
        raise SourceError(f"{where}: {msg}")


def check_digest(raw: bytes, expected: Digest, where: str) -> Digest:
    """The digest of ``raw``; ``DigestMismatch`` when it is not ``expected``."""
    got = Digest.of_bytes(raw)
    if got != expected:
        raise DigestMismatch(f"{where}: digest mismatch: expected {expected}, got {got}")
    return got


def blob_name(digest: Digest) -> str:
    """The path of a blob inside an OCI layout."""
    return f"blobs/sha256/{digest.hex}"


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor. ``digest`` names the blob; ``size`` is its length in bytes."""

    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str]
    platform: Platform | None = None


def parse_descriptor(doc: Any, where: str) -> Descriptor:
    """Validate a descriptor object (``mediaType``, ``digest``, ``size``, ``annotations``,
    ``platform``)."""
    expect(isinstance(doc, dict), where, "descriptor is not a JSON object")
    media_type = doc.get("mediaType") or ""
    expect(isinstance(media_type, str), where, "mediaType is not a string")
    raw_digest = doc.get("digest")
    expect(isinstance(raw_digest, str), where, "descriptor has no digest")
    try:
        digest = Digest.parse(raw_digest)
    except SourceError as e:
        raise SourceError(f"{where}: {e}") from e
    size = doc.get("size")
    expect(isinstance(size, int) and not isinstance(size, bool) and size >= 0, where,
           f"bad size {size!r}")
    annotations = doc.get("annotations") or {}
    expect(isinstance(annotations, dict), where, "annotations is not a JSON object")
    plat = doc.get("platform")
    platform = None
    if plat is not None:
        expect(isinstance(plat, dict), where, "platform is not a JSON object")
        platform = Platform(str(plat.get("os") or ""), str(plat.get("architecture") or ""),
                            str(plat.get("variant") or ""))
    return Descriptor(media_type, digest, size,
                      {str(k): str(v) for k, v in annotations.items()}, platform)


def is_attestation(desc: Descriptor) -> bool:
    """BuildKit attestation manifests: platform unknown/unknown or the docker reference type."""
    if desc.annotations.get(REFERENCE_TYPE) == "attestation-manifest":
        return True
    p = desc.platform
    return p is not None and p.os == "unknown" and p.architecture == "unknown"


def refs_from_annotations(annotations: dict[str, str]) -> list[str]:
    """Names an index descriptor gives its target: ``io.containerd.image.name`` (a full
    reference) then ``org.opencontainers.image.ref.name`` as written (a bare tag such as
    ``latest`` is kept), unless that tag merely repeats the tag of the containerd name."""
    out: list[str] = []
    full = annotations.get(CONTAINERD_NAME, "").strip()
    ref = annotations.get(REF_NAME, "").strip()
    if full:
        out.append(full)
    if ref and not (full and (full == ref or full.endswith((":" + ref, "@" + ref)))):
        out.append(ref)
    return out


#: what a file name ends with that is not part of an archive's name (stripped repeatedly)
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.zst", ".tar.zstd", ".gz", ".zst", ".zstd", ".tar",
                     ".oci")
_NOT_NAME = re.compile(r"[^a-z0-9._-]+")


def archive_name(path: str) -> str | None:
    """The name a bare tag is qualified with: the base name of the archive or layout ``path``
    (a source as the user gave it: ``oci-archive:`` / ``oci:`` / ``docker-archive:`` prefixes
    and skopeo's ``:TAG`` suffix dropped), without archive suffixes (``.tar``, ``.tar.gz``,
    ``.oci``...), lowercased, runs of characters a repository name cannot hold made ``-``.
    None for a stream without a name of its own (``-``, ``/dev/fd/N``, ``/proc/...``)."""
    for prefix in ("docker-archive:", "oci-archive:", "oci:"):
        if path.startswith(prefix):
            path = path[len(prefix):]
            if prefix != "docker-archive:":
                path = path.partition(":")[0]
            break
    if path in ("", "-") or path.startswith(("/dev/", "/proc/")):
        return None
    name = os.path.basename(path.rstrip("/")).lower()
    stripped = True
    while stripped:
        stripped = False
        for suffix in _ARCHIVE_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name, stripped = name[: -len(suffix)], True
                break
    name = _NOT_NAME.sub("-", name).strip("-.")
    return name or None


def is_bare_tag(ref: str) -> bool:
    """A ref that is a tag alone (``v1``, ``latest``): no repository, registry or digest."""
    return bool(ref) and not any(c in ref for c in "/:@")


def qualify_ref(ref: str, path: str) -> str:
    """A bare tag as ``ARCHIVE:TAG`` (``archive_name`` of ``path``), so that two archives
    tagged ``v1`` keep two names; any other ref, and a tag from a nameless stream, as is."""
    if not is_bare_tag(ref):
        return ref
    name = archive_name(path)
    return f"{name}:{ref}" if name else ref


def merge_refs(*groups: Iterable[str]) -> tuple[str, ...]:
    """Concatenate, dropping empties and repeats, first occurrence first."""
    seen: dict[str, None] = {}
    for g in groups:
        for r in g:
            if r and r not in seen:
                seen[r] = None
    return tuple(seen)


def check_layer_type(media_type: str, where: str) -> None:
    if media_type not in LAYER_TYPES:
        raise UnsupportedMediaType(f"{where}: unsupported layer media type {media_type!r}")


def load_config(raw: bytes, where: str, layer_count: int) -> ImageConfig:
    """Parse a config blob and check it has one ``rootfs.diff_ids`` entry per layer."""
    cfg = parse_config(raw, where)
    if len(cfg.diff_ids) != layer_count:
        raise SourceError(f"{where}: config lists {len(cfg.diff_ids)} diff_ids but the manifest "
                          f"has {layer_count} layers")
    return cfg


def layer_where(display: str, digest: object, i: int, n: int) -> str:
    return f"{display}: blob {digest} (layer {i + 1} of {n})"


class Collector:
    """Images in the order first seen, one per manifest digest; refs of repeats are merged."""

    def __init__(self) -> None:
        self._by_id: dict[Digest, Image] = {}

    def add(self, image: Image) -> None:
        old = self._by_id.get(image.id)
        if old is None:
            self._by_id[image.id] = image
        else:
            self._by_id[image.id] = replace(old, refs=merge_refs(old.refs, image.refs))

    def add_refs(self, image_id: Digest, refs: Iterable[str]) -> None:
        old = self._by_id[image_id]
        self._by_id[image_id] = replace(old, refs=merge_refs(old.refs, refs))

    def __iter__(self) -> Iterator[Image]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)
