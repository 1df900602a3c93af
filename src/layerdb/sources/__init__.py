"""Where images come from. One module per container format; nothing outside this package
knows a format. Every source yields the same thing: ``Image`` values (see ``layerdb.model``)
whose layers carry a ``FileSegment`` that opens the raw (maybe compressed) blob bytes.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ..model import Image


class ImageSource(Protocol):
    """An opened archive or layout.

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


def open_source(path: str, tmpdir: str) -> ImageSource:
    """Open ``path``: a docker/podman/skopeo archive (either layout), an OCI layout directory,
    an oci-archive, a kaniko tarball, or any of those archives gzip/zstd-compressed as a whole
    (decompressed once into ``tmpdir``). Raises ``SourceError`` for anything else."""
    from ._open import open_source as _open

    return _open(path, tmpdir)
