"""The catalog: the only owner of its directory (see ``docs/catalog.md``).

- ``layout``: every path in the directory;
- ``db``: the DuckDB metadata, the views, read connections (``Catalog``);
- ``writer``: the lock, the placement of staged files and the one commit per archive;
- ``fate``: each member's fate in each image (the only place that knows whiteout rules);
- ``members``: an image's member table and its lookup files, written from the fates;
- ``layerindex`` and ``fastview``: the DuckDB-free lookup ``extract`` uses.

``Catalog`` is loaded lazily so that the DuckDB-free parts import without duckdb.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Catalog"]


def __getattr__(name: str) -> Any:
    if name in ("Catalog", "BlobRecord", "LayerRecord", "FILE_COLUMNS"):
        from . import db

        return getattr(db, name)
    raise AttributeError(name)
