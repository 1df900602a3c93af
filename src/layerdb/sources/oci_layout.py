"""OCI image layouts: a directory or an ``oci-archive`` tar holding ``oci-layout``,
``index.json`` and ``blobs/sha256/<hex>``.

Refs come from the ``index.json`` annotations ``org.opencontainers.image.ref.name`` (a full
ref as written: skopeo writes ``example.com/app:v1``; a bare tag, as umoci's ``latest`` or
skopeo's ``oci-archive:app.tar:v1``, qualified with the archive's name: ``app:v1``) and
``io.containerd.image.name``. Layer blobs are ``FileSegment``s: the whole blob file of a
directory, or the member's byte range inside an archive.
"""
from __future__ import annotations

from collections.abc import Iterator

from ..model import Image
from ._files import SourceBase
from ._oci import walk_layout


class OciLayoutSource(SourceBase):
    """An OCI layout directory or oci-archive (see ``SourceBase`` for the attributes)."""

    def images(self) -> Iterator[Image]:
        """Every image ``index.json`` reaches, in index order: one per manifest (one per
        platform of an index), layers base first. ``Image.id`` is the manifest blob digest
        (verified); ``LayerRef.digest`` the layer blob digest, ``diff_id`` from the config."""
        yield from walk_layout(self.files, self.path)
