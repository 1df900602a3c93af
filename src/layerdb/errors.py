"""Typed errors. Library code raises these (``raise ... from e``); only the CLI prints them.

Messages are lowercase and carry their context, e.g.
``reading layer sha256:ab12...: truncated tar``.
"""
from __future__ import annotations


class LayerdbError(Exception):
    """Base of every error layerdb raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class SourceError(LayerdbError):
    """An image archive or layout is unreadable, malformed or not an image at all."""


class UnsupportedMediaType(SourceError):
    """A manifest names a media type layerdb does not understand."""


class BlobNotFound(SourceError):
    """A blob the manifest names is not in the archive, or not in the cache."""


class RegistryError(SourceError):
    """A registry refused, failed or cannot be reached (after retries), or sent nonsense."""


class DigestMismatch(LayerdbError):
    """Bytes do not hash to the digest that names them (blob digest or diff_id)."""


class CorruptLayer(LayerdbError):
    """A layer's compression stream or tar stream is broken or truncated."""


class StoreError(LayerdbError):
    """The blob cache is missing something it should have, or is damaged."""


class CatalogError(LayerdbError):
    """The catalog cannot be opened, is locked, or a query against it failed."""


class ImageNotFound(LayerdbError):
    """No ingested image matches the reference, or several do and the choice is ambiguous."""

    exit_code = 2


class PathNotFound(LayerdbError):
    """A path is absent from an image's merged filesystem (or deleted by a whiteout)."""

    exit_code = 2


class UnsafePath(LayerdbError):
    """Writing an entry would leave the output directory."""


class ReportError(LayerdbError):
    """A report file is malformed, or its parameters are wrong."""


class UsageError(LayerdbError):
    """The request itself is wrong (bad option values)."""

    exit_code = 2
