"""``docker save`` archives and their relatives: podman / ``skopeo copy docker-archive:``,
kaniko / go-containerregistry tarballs, and Docker >= 25's OCI-layout-in-a-tar.

Every one has a ``manifest.json``: a list of ``{"Config", "RepoTags", "Layers"}`` whose values
are member names. The member naming differs by writer:

- docker < 25: ``<64hex>.json`` config, ``<v1 id>/layer.tar`` layers, a ``repositories`` file;
- skopeo / podman: ``<64hex>.json`` config, ``<diff_id hex>.tar`` layers (``<id>/layer.tar``
  are symlinks to them);
- kaniko / ggcr: ``sha256:<64hex>`` config, ``<blob hex>.tar.gz`` gzip layers;
- docker >= 25: ``blobs/sha256/<hex>`` for both, plus ``oci-layout`` and ``index.json``.

When ``index.json`` is present the OCI layout is authoritative (real manifest digests,
platforms, indexes) and ``manifest.json``'s RepoTags are merged into the matching images
(same config digest and layer count). Other ``manifest.json`` entries are legacy images:
they keep no manifest, so one is synthesized (see ``synthesize_manifest``).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from .. import compression
from ..digest import Digest
from ..errors import BlobNotFound
from ..model import OCI_CONFIG, OCI_MANIFEST, Blob, Image, LayerRef
from ._files import SourceBase, read_small
from ._images import Collector, check_digest, expect, load_config, load_json, merge_refs, qualify_ref
from ._oci import walk_layout

#: Media type of a legacy layer file, by the compression its first bytes show.
LEGACY_LAYER_TYPES = {
    compression.NONE: "application/x-tar",
    compression.GZIP: "application/vnd.docker.image.rootfs.diff.tar.gzip",
    compression.ZSTD: "application/vnd.docker.image.rootfs.diff.tar.zstd",
}

# A member name that carries its content digest: <hex>.json, sha256:<hex>, blobs/sha256/<hex>.
_DIGEST_NAME = re.compile(r"(?:^|/)(?:sha256:)?([0-9a-f]{64})(?:\.json)?$")


@dataclass(frozen=True)
class Entry:
    """One ``manifest.json`` entry: member names of the config and of the layers (base
    first), and the tags it carries."""

    config: str
    layers: tuple[str, ...]
    repo_tags: tuple[str, ...]


class DockerArchiveSource(SourceBase):
    """A docker-save-style archive (see ``SourceBase`` for the attributes)."""

    def images(self) -> Iterator[Image]:
        """Every image, in ``index.json`` order then ``manifest.json`` order, one per manifest
        digest, layers base first. ``Image.id``: the manifest digest (legacy entries: the
        digest of the synthesized manifest). ``LayerRef.digest``: the blob digest from the
        OCI manifest, or None for legacy layer files (``diff_id`` always from the config)."""
        entries = self.entries()
        found = Collector()
        oci = walk_layout(self.files, self.path) if self.files.has("index.json") else []
        for image in oci:
            found.add(image)
        for i, entry in enumerate(entries):
            # a bare RepoTag (``v1``) as a bare OCI tag: qualified with the archive's name
            entry = replace(entry, repo_tags=merge_refs(qualify_ref(t, self.path) for t in entry.repo_tags))
            raw = self._config_bytes(entry, i)
            digest = Digest.of_bytes(raw)
            matches = [im for im in oci
                       if im.config_digest == digest and len(im.layers) == len(entry.layers)]
            for im in matches:
                found.add_refs(im.id, entry.repo_tags)
            if not matches:
                found.add(self._legacy_image(entry, i, raw))
        yield from found

    def entries(self) -> list[Entry]:
        """The parsed ``manifest.json``, validated."""
        _, doc = load_json(self.files, "manifest.json")
        where = f"{self.path}: manifest.json"
        expect(isinstance(doc, list), where, "not a JSON list")
        return [_entry(e, f"{where}: entry {i}") for i, e in enumerate(doc)]

    def _config_bytes(self, entry: Entry, i: int) -> bytes:
        if not self.files.has(entry.config):
            raise BlobNotFound(f"{self.path}: config file {entry.config!r} "
                               f"(manifest.json entry {i}) is missing")
        raw = read_small(self.files, entry.config, entry.config)
        named = _DIGEST_NAME.search(entry.config)
        if named:
            check_digest(raw, Digest.from_hex(named.group(1)), f"{self.path}: {entry.config}")
        return raw

    def _legacy_image(self, entry: Entry, i: int, raw_config: bytes) -> Image:
        config = load_config(raw_config, f"{self.path}: {entry.config}", len(entry.layers))
        n = len(entry.layers)
        layers = []
        for pos, name in enumerate(entry.layers):
            seg = self.files.segment(name)
            if seg is None:
                raise BlobNotFound(f"{self.path}: layer file {name!r} (layer {pos + 1} of {n}, "
                                   f"manifest.json entry {i}) is missing")
            layers.append(LayerRef(
                diff_id=config.diff_ids[pos],
                digest=None,
                media_type=LEGACY_LAYER_TYPES[_sniff(seg)],
                size=seg.size(),
                blob=seg,
            ))
        config_digest = Digest.of_bytes(raw_config)
        manifest = synthesize_manifest(config_digest, len(raw_config), layers)
        return Image(
            id=Digest.of_bytes(manifest),
            refs=entry.repo_tags,
            manifest=manifest,
            manifest_media_type=OCI_MANIFEST,
            config_digest=config_digest,
            config=config,
            layers=tuple(layers),
            platform=config.platform,
            source=self.path,
            index_digest=None,
        )


def synthesize_manifest(config_digest: Digest, config_size: int,
                        layers: list[LayerRef]) -> bytes:
    """The OCI-style manifest layerdb writes for a legacy image, canonical JSON (sorted keys,
    no spaces). Layer descriptors carry media type and blob size but no digest: the legacy
    layout does not record blob digests, and the diff_ids are pinned by the config digest.
    The same archive content always gives the same bytes, hence the same image id."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": str(config_digest), "size": config_size},
        "layers": [{"mediaType": lr.media_type, "size": lr.size} for lr in layers],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _entry(doc: Any, where: str) -> Entry:
    expect(isinstance(doc, dict), where, "not a JSON object")
    config = doc.get("Config")
    expect(isinstance(config, str) and bool(config), where, "has no Config")
    layers = doc.get("Layers")
    expect(isinstance(layers, list) and all(isinstance(x, str) and x for x in layers), where,
           "Layers is not a list of member names")
    tags = doc.get("RepoTags") or []
    expect(isinstance(tags, list) and all(isinstance(x, str) for x in tags), where,
           "RepoTags is not a list of strings")
    return Entry(config, tuple(layers), tuple(dict.fromkeys(tags)))


def _sniff(seg: Blob) -> str:
    """The compression of a blob, from its first bytes (a blob not kept from a stream
    remembers them)."""
    head = getattr(seg, "head", None)
    if isinstance(head, bytes):
        return compression.detect(head)
    with seg.open() as f:
        return compression.detect(f.read(4))
