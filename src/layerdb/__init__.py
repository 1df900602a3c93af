"""layerdb: container images as a queryable database.

The public API. Heavy modules load on first use, so importing layerdb is cheap.
"""
from __future__ import annotations

from typing import Any

from .digest import Digest
from .errors import (
    BlobNotFound,
    CatalogError,
    CorruptLayer,
    DigestMismatch,
    ImageNotFound,
    LayerdbError,
    PathNotFound,
    ReportError,
    SourceError,
    StoreError,
    UnsafePath,
    UnsupportedMediaType,
    UsageError,
)

__all__ = [
    "open_source", "Catalog", "BlobStore", "ingest", "extract", "run_report", "Digest",
    "LayerdbError", "SourceError", "UnsupportedMediaType", "BlobNotFound", "DigestMismatch",
    "CorruptLayer", "StoreError", "CatalogError", "ImageNotFound", "PathNotFound", "UnsafePath",
    "ReportError", "UsageError",
]

_LAZY = {
    "open_source": ("layerdb.sources", "open_source"),
    "Catalog": ("layerdb.catalog", "Catalog"),
    "BlobStore": ("layerdb.store", "BlobStore"),
    "ingest": ("layerdb.ingest", "ingest"),
    "extract": ("layerdb.extract", "extract"),
    "run_report": ("layerdb.reports", "run_report"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(name)
