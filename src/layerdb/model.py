"""Plain values that describe an image. Frozen, no I/O: ``Blob`` is only the protocol of where
a layer's bytes are read from (``sources.FileSegment``: a byte range of a local file;
``sources.registry.RegistryBlob``: a registry stream).

Digests: ``LayerRef.digest`` is the digest of the blob *as stored* (maybe compressed);
``LayerRef.diff_id`` is the digest of the *uncompressed* tar (``rootfs.diff_ids`` in the
config). The same diff_id can arrive under several blob digests (gzip, zstd, none).
"""
from __future__ import annotations

import json
import re
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


_KNOWN_OS = frozenset({"linux", "windows", "darwin", "freebsd", "netbsd", "openbsd", "solaris",
                       "illumos", "aix", "android", "ios", "plan9", "js", "wasip1", "dragonfly"})
_KNOWN_ARCH = frozenset({"amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64",
                         "mips64le", "mips64", "mipsle", "mips", "loong64", "wasm"})
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386",
                 "i686": "386", "armhf": "arm", "armel": "arm"}


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
        """``os/arch[/variant]``, as containerd reads a platform: an architecture alone means
        ``linux/ARCH`` (``arm64``, ``arm/v7``), an OS alone any architecture of it; common
        aliases are normalised (``x86_64`` and ``x86-64`` -> ``amd64``, ``aarch64`` ->
        ``arm64``, whose ``v8`` variant is its only one and is dropped)."""
        parts = [p.strip().lower() for p in text.strip().split("/")]
        if len(parts) <= 2 and parts[0] not in _KNOWN_OS and (
                parts[0] in _ARCH_ALIASES or parts[0] in _KNOWN_ARCH):
            parts = ["linux", *parts]
        os_, arch, variant = (parts + ["", "", ""])[:3]
        arch = _ARCH_ALIASES.get(arch, arch)
        if arch == "arm64" and variant == "v8":
            variant = ""
        return cls(os_, arch, variant)

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
    ``sources.FileSegment`` (a byte range of a local file, read with ``pread``) and
    ``sources.registry.RegistryBlob`` (an HTTP stream, resumed with ``Range``) implement it.
    """

    def open(self) -> BinaryIO: ...

    def size(self) -> int: ...


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


#: JSON documents (index.json, manifest.json, manifests, configs) larger than this are refused
#: before they are read: the distribution registry refuses manifests past 4 MiB too, and a
#: parsed document costs up to ~25x its size in memory.
MAX_JSON_BYTES = 4 << 20
#: arrays and objects nested deeper than this are refused (real documents nest ~5 deep)
MAX_JSON_DEPTH = 100

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep arrays and objects nest in ``raw`` (strings skipped), counting no further
    than ``limit + 1``."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    depth = deepest = 0
    for b in brackets:
        if b in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def decode_json(raw: bytes, where: str) -> Any:
    """Decode one JSON document within the limits (``MAX_JSON_BYTES``, ``MAX_JSON_DEPTH``).
    Raises ``SourceError`` (``LimitExceeded`` past a limit) with ``where`` in front."""
    from .errors import LimitExceeded, SourceError

    if len(raw) > MAX_JSON_BYTES:
        raise LimitExceeded(f"{where}: {len(raw)} bytes is more than the {MAX_JSON_BYTES >> 20} MiB "
                            "allowed for a JSON document")
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise LimitExceeded(f"{where}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise SourceError(f"{where}: malformed JSON: {e}") from e


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


class _Fields:
    """Typed reads of a config document's fields, as Go's ``encoding/json`` decodes them into
    the image-spec structs (docker and containerd refuse a config these reads refuse)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, what: str, want: str, got: Any) -> Exception:
        from .errors import SourceError

        return SourceError(f"{self.where}: {what} is {_json_type(got)}, not {want}")

    def obj(self, v: Any, what: str) -> dict:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.fail(what, "an object", v)
        return v

    def text(self, v: Any, what: str) -> str:
        if v is None:
            return ""
        if not isinstance(v, str):
            raise self.fail(what, "a string", v)
        return v

    def strs(self, v: Any, what: str, one: bool = False) -> tuple[str, ...]:
        """An array of strings (``one``: a single string is one element, as docker's StrSlice)."""
        if v is None:
            return ()
        if one and isinstance(v, str):
            return (v,)
        if not isinstance(v, list):
            raise self.fail(what, "an array of strings", v)
        for i, x in enumerate(v):
            if not isinstance(x, str):
                raise self.fail(f"{what}[{i}]", "a string", x)
        return tuple(v)

    def flag(self, v: Any, what: str) -> bool:
        if v is None:
            return False
        if not isinstance(v, bool):
            raise self.fail(what, "a boolean", v)
        return v


def parse_config(raw: bytes, where: str = "config") -> ImageConfig:
    """Parse an image config blob (OCI or Docker). Raises ``SourceError`` when it is not JSON,
    past a limit (size, depth), or when a field has the wrong JSON type."""
    from .errors import SourceError

    doc = decode_json(raw, where)
    if not isinstance(doc, dict):
        raise SourceError(f"{where}: not a JSON object")
    t = _Fields(where)
    cfg = t.obj(doc.get("config"), "config")
    old = t.obj(doc.get("container_config"), "container_config")
    if "config" not in doc or doc.get("config") is None:
        cfg = old
    for key in ("ExposedPorts", "Volumes"):
        t.obj(cfg.get(key), f"config.{key}")
    for key in ("StopSignal", "Hostname", "Domainname"):
        t.text(cfg.get(key), f"config.{key}")
    rootfs = t.obj(doc.get("rootfs"), "rootfs")
    diff_ids = []
    for i, d in enumerate(t.strs(rootfs.get("diff_ids"), "rootfs.diff_ids")):
        try:
            diff_ids.append(Digest.parse(d))
        except SourceError as e:  # the digest names the value; this names where it is
            raise SourceError(f"{where}: rootfs.diff_ids[{i}]: {e}") from None
    history = []
    hist = doc.get("history")
    if hist is not None and not isinstance(hist, list):
        raise t.fail("history", "an array", hist)
    for i, h in enumerate(hist or ()):
        h = t.obj(h, f"history[{i}]")
        history.append(HistoryEntry(
            created=t.text(h.get("created"), f"history[{i}].created"),
            created_by=t.text(h.get("created_by"), f"history[{i}].created_by"),
            comment=t.text(h.get("comment"), f"history[{i}].comment"),
            empty_layer=t.flag(h.get("empty_layer"), f"history[{i}].empty_layer"),
        ))
    labels = t.obj(cfg.get("Labels"), "config.Labels")
    for k, v in labels.items():
        t.text(v, f"config.Labels[{k!r}]")
    return ImageConfig(
        raw=raw,
        os=t.text(doc.get("os"), "os"),
        architecture=t.text(doc.get("architecture"), "architecture"),
        variant=t.text(doc.get("variant"), "variant"),
        created=t.text(doc.get("created"), "created"),
        author=t.text(doc.get("author"), "author"),
        entrypoint=t.strs(cfg.get("Entrypoint"), "config.Entrypoint", one=True),
        cmd=t.strs(cfg.get("Cmd"), "config.Cmd", one=True),
        working_dir=t.text(cfg.get("WorkingDir"), "config.WorkingDir"),
        env=t.strs(cfg.get("Env"), "config.Env"),
        user=t.text(cfg.get("User"), "config.User"),
        labels=tuple(sorted(labels.items())),
        diff_ids=tuple(diff_ids),
        history=tuple(history),
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
