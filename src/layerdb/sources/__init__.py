"""Where images come from. One module per container format; nothing outside this package
knows a format. Every source yields the same thing: ``Image`` values (see ``layerdb.model``)
whose layers carry a ``Blob`` that opens the raw (maybe compressed) blob bytes: a
``FileSegment`` of a local archive, a spooled copy of a stream, or a registry stream.

A source is named the way skopeo names transports: a plain path (a file, a directory, ``-``
for stdin, a FIFO), ``docker-archive:PATH``, ``oci:DIR[:TAG]``, ``oci-archive:PATH[:TAG]``
or ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import LayerdbError
from ..model import Image, Platform
from .credhelpers import HelperCache
from .file_segment import FileSegment as FileSegment  # re-exported: the local Blob


class ImageSource(Protocol):
    """An opened archive, layout or registry reference.

    ``images()`` yields every image it holds: every tag, every platform of an index (nested
    indexes followed, attestation manifests skipped), each with layers base first.
    It validates all JSON (manifests, configs, indexes) and the presence of every blob it
    names, raising ``SourceError`` subclasses naming the file and the problem. It does not
    read layer bytes: blob digests and diff_ids are checked by whoever reads the layers.
    ``close()`` removes any temporary file the source made (e.g. a decompressed archive).
    """

    path: str

    def images(self) -> Iterator[Image]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceOptions:
    """How to open sources; read once (``from_env``) and handed to ``open_source``.

    Registry references only: ``platform`` picks one platform of an index (None: the
    host's), ``all_platforms`` keeps every one; ``all_tags`` expands ``docker://HOST/REPO``
    to every tag, ``all_repositories`` expands ``docker://HOST`` to every tag of every
    repository; ``creds`` is ``USER:PASS`` (never printed: not in the repr); ``auth_file`` a
    containers ``auth.json`` or docker ``config.json`` (None: ``$REGISTRY_AUTH_FILE``, then the
    usual places); ``tls_verify`` False allows plain HTTP and unverified certificates;
    ``cache_dir`` keeps verified manifests and configs by digest (None: no cache), so a re-scan
    costs only the requests for tags; ``retries`` attempts per request with exponential
    ``backoff`` seconds (doubling, ``Retry-After`` honoured), ``timeout`` seconds per socket
    operation, ``page_size`` entries per tags/catalog page; ``helpers`` holds the answers of
    credential helpers (``docker-credential-NAME``) run for these options, so each runs once
    per registry (in memory only: not compared, printed or pickled).

    Streams (stdin, FIFOs): ``cached_blobs`` returns the blob digests whose layers the cache
    holds; such members of a stream are hashed as they pass but not spooled to disk.
    """

    platform: Platform | None = None
    all_platforms: bool = False
    all_tags: bool = False
    all_repositories: bool = False
    creds: str | None = field(default=None, repr=False)
    auth_file: str | None = None
    tls_verify: bool = True
    cache_dir: str | None = None
    retries: int = 5
    backoff: float = 0.5
    timeout: float = 60.0
    page_size: int = 100
    helpers: HelperCache = field(default_factory=HelperCache, compare=False, repr=False)
    cached_blobs: Callable[[], Collection[str]] | None = field(default=None, compare=False)

    @classmethod
    def from_env(cls, **kw: object) -> SourceOptions:
        """Options from the environment, overridden by ``kw``: ``LAYERDB_CACHE_DIR`` (else
        ``$XDG_CACHE_HOME/layerdb``, else ``~/.cache/layerdb``), ``LAYERDB_REGISTRY_RETRIES``,
        ``LAYERDB_REGISTRY_BACKOFF``, ``LAYERDB_REGISTRY_TIMEOUT``, ``LAYERDB_REGISTRY_PAGE``."""
        from ..settings import settings

        s = settings()
        base: dict[str, object] = {
            "cache_dir": os.path.join(s.cache_dir, "registry"), "retries": s.registry_retries,
            "backoff": s.registry_backoff, "timeout": s.registry_timeout,
            "page_size": s.registry_page}
        base.update(kw)
        return cls(**base)  # type: ignore[arg-type]


def open_source(path: str, tmpdir: str, options: SourceOptions | None = None) -> ImageSource:
    """Open ``path``: a docker/podman/skopeo archive (either layout), an OCI layout directory,
    an oci-archive, a kaniko tarball, or any of those archives gzip/zstd-compressed as a whole
    (decompressed once into ``tmpdir``); ``-``, a FIFO or a character device is read as a
    stream (spooled into ``tmpdir`` as needed); ``docker://...`` is a registry reference;
    ``docker-archive:``, ``oci:`` and ``oci-archive:`` prefixes name local forms. Raises
    ``SourceError`` for anything else."""
    from ._open import open_source as _open

    return _open(path, tmpdir, options or SourceOptions())


def expand(paths: Collection[str], options: SourceOptions | None = None
           ) -> list[tuple[str, LayerdbError | None]]:
    """``paths`` with registry references expanded per ``options`` (``--all-tags``: one
    ``docker://HOST/REPO:TAG`` per tag; ``--all-repositories``: per tag of every repository).
    Each entry is (path, None), or (path as given, the error that stopped its expansion)."""
    opts = options or SourceOptions()
    out: list[tuple[str, LayerdbError | None]] = []
    for i, p in enumerate(paths):
        if p == "-" and "-" in list(paths)[:i]:
            from ..errors import SourceError

            out.append((p, SourceError("-: standard input can be read only once")))
        elif p.startswith("docker://") and (opts.all_tags or opts.all_repositories):
            from .registry import expand_reference

            try:
                out.extend((t, None) for t in expand_reference(p, opts))
            except LayerdbError as e:
                out.append((p, e))
        else:
            out.append((p, None))
    return out


def recorded_source(path: str, images: Collection[Image] = ()) -> str:
    """What the catalog records as an image's source: the pinned ``docker://REPO@DIGEST`` a
    registry source resolved, ``-`` for stdin, else the absolute path (prefix kept)."""
    if path.startswith("docker://"):
        pinned = {i.source for i in images if i.source.startswith("docker://")}
        return min(pinned) if pinned else path
    if path == "-":
        return "-"
    for prefix in ("docker-archive:", "oci-archive:", "oci:"):
        if path.startswith(prefix):
            return prefix + os.path.abspath(path[len(prefix):])
    return os.path.abspath(path)


def is_stream(path: str) -> bool:
    """Whether ``path`` names a stream read once (stdin, a FIFO, ``/dev/fd/N``)."""
    from ._open import stream_kind

    return stream_kind(path) is not None
