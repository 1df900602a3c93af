"""Package databases captured at ingest, per layer, and the ``packages`` view over them.

- ``scan.scan_layer``: in the ingest worker, a layer's package records -> a staged Parquet;
- ``adopt``: the catalog's commit moves it to ``packages/<diff_id hex>.parquet``;
- ``catalog_sql``: the view SQL and the DuckDB functions (``version_lt`` ...);
- ``versions``: each ecosystem's version order as a byte-sortable key.

Formats: dpkg, apk, rpm (SQLite), Python dist-info/egg-info, npm, Go build info, Java
archives (pom.properties, MANIFEST.MF), os-release; one module each. ``LAYERDB_PACKAGES=0``
turns capture off (for measuring its cost).
"""
from __future__ import annotations

import os

DIR_NAME = "packages"


def packages_path(root: str, diff_id: str) -> str:
    """Where a layer's package rows live in the catalog at ``root``."""
    return os.path.join(root, DIR_NAME, str(diff_id).split(":")[-1] + ".parquet")


def adopt(tmp: str | None, root: str, diff_id: str) -> None:
    """Move a layer's staged package Parquet (``scan_layer``'s result) into the catalog;
    nothing when the layer has none. Like the member Parquet, the file is invisible until
    the catalog commits a row for its layer."""
    if tmp is None:
        return
    dest = packages_path(root, diff_id)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.replace(tmp, dest)


def committed_files(root: str, layer_ids: list[str]) -> list[str]:
    """The package Parquet files of these (committed) layers that have one."""
    try:
        have = set(os.listdir(os.path.join(root, DIR_NAME)))
    except FileNotFoundError:
        return []
    return [packages_path(root, d) for d in layer_ids if str(d).split(":")[-1] + ".parquet" in have]
