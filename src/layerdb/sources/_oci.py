"""Walk an OCI image layout (``index.json`` + ``blobs/sha256/<hex>``), in a directory or a tar.

Shared by ``oci_layout`` (OCI layouts and oci-archives) and ``docker_archive`` (Docker >= 25
writes an OCI layout inside its tar). Reads only JSON blobs; layer blobs are located and their
sizes checked, never read.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..digest import Digest
from ..errors import BlobNotFound, DigestMismatch, SourceError, UnsupportedMediaType
from ..model import INDEX_TYPES, MANIFEST_TYPES, Image, LayerRef
from ._files import Files, read_small
from ._images import (
    IMAGE_CONFIG_TYPES,
    Collector,
    Descriptor,
    blob_name,
    check_digest,
    check_layer_type,
    expect,
    is_attestation,
    is_bare_tag,
    layer_where,
    load_config,
    load_json,
    merge_refs,
    parse_descriptor,
    parse_json,
    qualify_ref,
    refs_from_annotations,
)

_MAX_DEPTH = 8


def walk_layout(files: Files, source: str) -> list[Image]:
    """Every image an OCI layout's ``index.json`` reaches, in index order, one per manifest
    digest (refs of repeated manifests merged; a bare tag such as ``v1`` qualified with the
    archive's name as ``NAME:v1``, see ``qualify_ref``; ``source`` is the path as given).

    Indexes are followed (nested ones too); every platform becomes its own ``Image`` with
    ``index_digest`` set to the index blob the top-level ``index.json`` entry names, and the
    refs of that entry (a ref names one image per platform; annotations of an index blob's
    children are not refs); BuildKit
    attestation manifests and non-image artifacts are skipped. A platform manifest missing from
    an index blob's children is skipped too (``docker save`` and ``skopeo`` keep an index but
    only the platforms they copied); a missing blob named by ``index.json`` itself, or any
    missing config or layer, raises ``BlobNotFound``.
    """
    _, doc = load_json(files, "index.json")
    where = f"{files.display}: index.json"
    expect(isinstance(doc, dict), where, "not a JSON object")
    entries = doc.get("manifests")
    expect(isinstance(entries, list), where, "has no manifests list")
    walker = Walker(files, source)
    for i, entry in enumerate(entries):
        desc = parse_descriptor(entry, f"{where}: manifests[{i}]")
        walker.visit(desc, refs_from_annotations(desc.annotations), None, 0, top=True)
    if not len(walker.found) and walker.skipped:
        raise UnsupportedMediaType(f"{where}: no image manifests; skipped "
                                   + ", ".join(walker.skipped))
    # a bare tag (``v1``) names nothing outside its archive: qualify it with the archive's name
    return [replace(i, refs=merge_refs(qualify_ref(r, source) for r in i.refs))
            if any(is_bare_tag(r) for r in i.refs) else i for i in walker.found]


class Walker:
    """Walks manifests and indexes from a descriptor down to images. The hooks ``fetch``
    (a JSON blob's verified bytes), ``present``, ``wanted`` (an index child to follow) and
    ``layer`` read from ``files``; the registry source overrides them."""

    def __init__(self, files: Files | None, source: str, display: str | None = None) -> None:
        self.files: Files = files  # type: ignore[assignment]
        self.display = display if display is not None else files.display  # type: ignore[union-attr]
        self.source = source
        self.found = Collector()
        self.skipped: list[str] = []

    def present(self, desc: Descriptor) -> bool:
        """Whether the blob an index child names is there to read."""
        return self.files.has(blob_name(desc.digest))

    def wanted(self, desc: Descriptor) -> bool:
        """Whether to follow this (non-attestation) index child."""
        return True

    def fetch(self, desc: Descriptor, what: str) -> bytes:
        return self._blob(desc, what)

    def _blob(self, desc: Descriptor, what: str) -> bytes:
        """A JSON blob's bytes, digest-checked (``what``: manifest, index, config)."""
        name = blob_name(desc.digest)
        if not self.files.has(name):
            raise BlobNotFound(f"{self.display}: {what} blob {desc.digest} is missing")
        raw = read_small(self.files, name, f"{what} {desc.digest}")
        check_digest(raw, desc.digest, f"{self.display}: {what} {desc.digest}")
        return raw

    def visit(self, desc: Descriptor, refs: list[str], index_digest: Digest | None,
              depth: int, *, top: bool) -> int:
        """Collect the images ``desc`` leads to; returns how many (repeats included)."""
        expect(depth <= _MAX_DEPTH, f"{self.display}: index {desc.digest}",
               "indexes nested too deeply")
        kind = _kind(desc.media_type)
        if kind == "other":
            self.skipped.append(f"{desc.media_type} {desc.digest}")
            return 0
        if not top and not self.present(desc):
            self.skipped.append(f"missing {desc.digest}")
            return 0
        raw = self.fetch(desc, "index" if kind == "index" else "manifest")
        where = f"{self.display}: {'index' if kind == 'index' else 'manifest'} {desc.digest}"
        doc = parse_json(raw, where)
        expect(isinstance(doc, dict), where, "not a JSON object")
        if kind == "unknown":  # descriptor without a mediaType: trust the document
            kind = _kind(str(doc.get("mediaType") or "")) if doc.get("mediaType") else (
                "index" if "manifests" in doc else "manifest")
            if kind == "other":
                self.skipped.append(f"{doc.get('mediaType')} {desc.digest}")
                return 0
        if kind == "index":
            return self._index(doc, refs, index_digest or desc.digest, depth, where)
        image = self._image(desc, raw, doc, refs, index_digest, where)
        if image is None:
            return 0
        self.found.add(image)
        return 1

    def _index(self, doc: dict[str, Any], refs: list[str], index_digest: Digest, depth: int,
               where: str) -> int:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise SourceError(f"{where}: index has no manifests list")
        count, skipped_before = 0, len(self.skipped)
        for i, child in enumerate(children):
            cdesc = parse_descriptor(child, f"{where}: manifests[{i}]")
            if is_attestation(cdesc) or not self.wanted(cdesc):
                continue
            # a child is named by its index's refs only: ``ref.name`` and containerd's name
            # are names where ``index.json`` gives them (the OCI image-layout spec) and mean
            # nothing on an index blob's children (a registry has no index.json at all)
            count += self.visit(cdesc, refs, index_digest, depth + 1, top=False)
        missing = [s for s in self.skipped[skipped_before:] if s.startswith("missing")]
        if count == 0 and missing:
            raise BlobNotFound(f"{where}: none of the manifests it lists is present")
        return count

    def _image(self, desc: Descriptor, raw: bytes, doc: dict[str, Any], refs: list[str],
               index_digest: Digest | None, where: str) -> Image | None:
        expect(doc.get("schemaVersion") == 2, where,
               f"unsupported schemaVersion {doc.get('schemaVersion')!r}")
        media_type = desc.media_type or str(doc.get("mediaType") or "")
        cdesc = parse_descriptor(doc.get("config"), f"{where}: config")
        if doc.get("artifactType") or (cdesc.media_type
                                       and cdesc.media_type not in IMAGE_CONFIG_TYPES):
            self.skipped.append(f"artifact {desc.digest}")
            return None
        layer_docs = doc.get("layers")
        if not isinstance(layer_docs, list):
            raise SourceError(f"{where}: has no layers list")
        ldescs = [parse_descriptor(d, f"{where}: layers[{i}]") for i, d in enumerate(layer_docs)]
        craw = self.fetch(cdesc, "config")
        config = load_config(craw, f"{self.display}: config {cdesc.digest}", len(ldescs))
        layers = tuple(self.layer(ld, i, len(ldescs), config.diff_ids[i], where)
                       for i, ld in enumerate(ldescs))
        platform = desc.platform if desc.platform and desc.platform.os else config.platform
        return Image(
            id=desc.digest,
            refs=tuple(refs),
            manifest=raw,
            manifest_media_type=media_type,
            config_digest=cdesc.digest,
            config=config,
            layers=layers,
            platform=platform,
            source=self.source,
            index_digest=index_digest,
        )

    def layer(self, ld: Descriptor, i: int, n: int, diff_id: Digest, where: str) -> LayerRef:
        check_layer_type(ld.media_type, f"{where}: layer {i + 1} of {n}")
        seg = self.files.segment(blob_name(ld.digest))
        if seg is None:
            raise BlobNotFound(f"{layer_where(self.display, ld.digest, i, n)} is missing")
        if seg.size() != ld.size:
            raise DigestMismatch(f"{layer_where(self.display, ld.digest, i, n)}: size mismatch: "
                                 f"the manifest says {ld.size} bytes, the blob has {seg.size()}")
        return LayerRef(
            diff_id=diff_id,
            digest=ld.digest,
            media_type=ld.media_type,
            size=ld.size,
            blob=seg,
            annotations=tuple(sorted(ld.annotations.items())),
        )


def _kind(media_type: str) -> str:
    """index, manifest, unknown (no media type given) or other (an unrelated artifact)."""
    if not media_type:
        return "unknown"
    if media_type in INDEX_TYPES:
        return "index"
    if media_type in MANIFEST_TYPES:
        return "manifest"
    return "other"

