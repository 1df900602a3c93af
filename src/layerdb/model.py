"""Plain values that describe an image. Frozen, no I/O (except opening a ``Blob``).

Digests: ``LayerRef.digest`` is the digest of the blob *as stored* (maybe compressed);
``LayerRef.diff_id`` is the digest of the *uncompressed* tar (``rootfs.diff_ids`` in the
config). The same diff_id can arrive under several blob digests (gzip, zstd, none).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, runtime_checkable

from .digest import Digest

# Media types ---------------------------------------------------------------------------
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

# layer media type -> compression the media type declares ("none" | "gzip" | "zstd")
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    # docker save's legacy layout has no media type; sources use this one for it.
    "application/x-tar": "none",
}


@dataclass(frozen=True)
class Platform:
    os: str = ""
    architecture: str = ""
    variant: str = ""

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        return cls(*(parts + ["", "", ""])[:3])

    def matches(self, want: Platform) -> bool:
        """True when every field ``want`` sets equals ours."""
        return all(not w or w == h for w, h in
                   ((want.os, self.os), (want.architecture, self.architecture),
                    (want.variant, self.variant)))


@runtime_checkable
class Blob(Protocol):
    """Where a blob's raw (maybe compressed) bytes can be read from.

    ``open()`` returns a new binary stream positioned at byte 0 of the blob (``read(n)``,
    ``close()``); ``size()`` is the blob's length in bytes as its source states it, -1 when
    unknown. A blob must pickle: worker processes receive it and open it themselves. Nothing
    here is verified: whoever reads the bytes hashes them against the digest that names them.
    ``FileSegment`` (a byte range of a local file, read with ``pread``) and
    ``sources.registry.RegistryBlob`` (an HTTP stream, resumed with ``Range``) implement it.
    """

    def open(self) -> BinaryIO: ...

    def size(self) -> int: ...


@dataclass(frozen=True)
class FileSegment:
    """Where a blob's bytes are: ``length`` bytes of file ``path`` from ``offset``.

    Picklable, so worker processes can open a blob without re-reading the archive index.
    ``length`` is -1 for "to the end of the file". The local fast path of ``Blob``.
    """

    path: str
    offset: int = 0
    length: int = -1

    def open(self) -> BinaryIO:
        f = open(self.path, "rb", buffering=0)
        if self.offset or self.length >= 0:
            return _Window(f, self.offset, self.length)  # type: ignore[return-value]
        return io.BufferedReader(f, 1 << 20)  # type: ignore[return-value]

    def size(self) -> int:
        if self.length >= 0:
            return self.length
        return os.path.getsize(self.path) - self.offset


class _Window(io.RawIOBase):
    """A read-only view of ``length`` bytes of a file from ``offset``."""

    def __init__(self, f: Any, offset: int, length: int) -> None:
        self._f = f
        self._start = offset
        self._end = offset + length if length >= 0 else os.fstat(f.fileno()).st_size
        self._pos = offset

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: self._start, 1: self._pos, 2: self._end}[whence]
        self._pos = max(self._start, base + pos)
        return self._pos - self._start

    def tell(self) -> int:
        return self._pos - self._start

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._end - self._pos)
        if n <= 0:
            return 0
        got = os.preadv(self._f.fileno(), [memoryview(b)[:n]], self._pos)
        self._pos += got
        return got

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._end - self._pos
        n = min(n, self._end - self._pos)
        if n <= 0:
            return b""
        data = os.pread(self._f.fileno(), n, self._pos)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._f.close()
        super().close()


@dataclass(frozen=True)
class LayerRef:
    """One layer of an image, as the image's manifest and config describe it.

    ``digest``: blob digest as stored in the source, or None when the source does not say
    (docker save's legacy ``<id>/layer.tar``: then it is computed while reading).
    ``size``: blob size in bytes as stored, -1 if unknown. ``media_type``: from the manifest,
    or ``application/x-tar`` when the source has none. ``blob``: where the bytes are (a
    ``Blob``: a local file segment or a registry stream).
    """

    diff_id: Digest
    digest: Digest | None
    media_type: str
    size: int
    blob: Blob
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HistoryEntry:
    created: str = ""
    created_by: str = ""
    comment: str = ""
    empty_layer: bool = False


@dataclass(frozen=True)
class ImageConfig:
    """The parsed config blob. ``raw`` is its exact bytes (their digest is the config digest)."""

    raw: bytes
    os: str
    architecture: str
    variant: str
    created: str
    author: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    working_dir: str
    env: tuple[str, ...]
    user: str
    labels: tuple[tuple[str, str], ...]
    diff_ids: tuple[Digest, ...]
    history: tuple[HistoryEntry, ...]

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)

    def layer_history(self) -> list[HistoryEntry | None]:
        """The history entry of each layer, base first (entries with empty_layer skipped)."""
        entries = [h for h in self.history if not h.empty_layer]
        out: list[HistoryEntry | None] = list(entries[: len(self.diff_ids)])
        out += [None] * (len(self.diff_ids) - len(out))
        return out


@dataclass(frozen=True)
class Image:
    """One image (one platform) found in a source.

    ``id``: the manifest digest (for docker save's legacy layout, which keeps no manifest,
    the digest of the OCI manifest layerdb writes for it). ``refs``: names such as
    ``repo:tag`` (may be empty). ``layers``: base first, one per ``config.diff_ids``.
    ``manifest``: the manifest's exact bytes.
    """

    id: Digest
    refs: tuple[str, ...]
    manifest: bytes
    manifest_media_type: str
    config_digest: Digest
    config: ImageConfig
    layers: tuple[LayerRef, ...]
    platform: Platform
    source: str = ""
    index_digest: Digest | None = None


def _strs(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    return tuple(str(x) for x in v)


def parse_config(raw: bytes, where: str = "config") -> ImageConfig:
    """Parse an image config blob (OCI or Docker). Raises SourceError when malformed."""
    from .errors import SourceError

    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise SourceError(f"{where}: malformed JSON: {e}") from e
    if not isinstance(doc, dict):
        raise SourceError(f"{where}: not a JSON object")
    cfg = doc.get("config") or doc.get("container_config") or {}
    rootfs = doc.get("rootfs") or {}
    try:
        diff_ids = tuple(Digest.parse(d) for d in rootfs.get("diff_ids") or ())
    except Exception as e:
        raise SourceError(f"{where}: bad rootfs.diff_ids: {e}") from e
    history = tuple(
        HistoryEntry(
            created=str(h.get("created") or ""),
            created_by=str(h.get("created_by") or ""),
            comment=str(h.get("comment") or ""),
            empty_layer=bool(h.get("empty_layer")),
        )
        for h in (doc.get("history") or ())
        if isinstance(h, dict)
    )
    labels = cfg.get("Labels") or {}
    return ImageConfig(
        raw=raw,
        os=str(doc.get("os") or ""),
        architecture=str(doc.get("architecture") or ""),
        variant=str(doc.get("variant") or ""),
        created=str(doc.get("created") or ""),
        author=str(doc.get("author") or ""),
        entrypoint=_strs(cfg.get("Entrypoint")),
        cmd=_strs(cfg.get("Cmd")),
        working_dir=str(cfg.get("WorkingDir") or ""),
        env=_strs(cfg.get("Env")),
        user=str(cfg.get("User") or ""),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        diff_ids=diff_ids,
        history=history,
    )


def familiar_ref(ref: str) -> str:
    """A ref as docker shows it: ``docker.io/library/x:t`` -> ``x:t``, ``docker.io/u/x`` -> ``u/x``."""
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/",
                   "index.docker.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def ref_matches(asked: str, ref: str) -> bool:
    """Whether the user's ``asked`` names ``ref``: registry defaults (docker.io, library/,
    podman's localhost/) and a missing ``:latest`` tag are filled in as docker would."""
    def norm(r: str) -> str:
        r = familiar_ref(r)
        if r.startswith("localhost/"):
            r = r[len("localhost/"):]
        last = r.rsplit("/", 1)[-1]
        if ":" not in last and "@" not in r:
            r += ":latest"
        return r

    return norm(asked) == norm(ref)
