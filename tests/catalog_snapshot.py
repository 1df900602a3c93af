"""What "the catalog and cache exactly as before" means in tests: every cached and Parquet
file (name, size, sha256) and every metadata row."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from layerdb.catalog import Catalog

TABLES = ("image_meta", "image_refs", "image_layer_rows", "layer_meta", "layer_blobs")


def snapshot(root: str | Path) -> tuple[list, dict]:
    root = Path(root)
    files = []
    for d in ("blobs", "files", "members"):
        for p in sorted((root / d).rglob("*")) if (root / d).exists() else []:
            if p.is_file():
                files.append((str(p.relative_to(root)), p.stat().st_size,
                              hashlib.sha256(p.read_bytes()).hexdigest()))
    tables = {}
    if (root / "catalog.duckdb").exists():
        with Catalog(str(root)) as cat:
            for t in TABLES:
                cols = [r[0] for r in cat.con.execute(f"describe {t}").fetchall()]
                keep = [c for c in cols if c not in ("ingested_at", "seq")]
                rows = cat.con.execute(f"select {', '.join(chr(34) + c + chr(34) for c in keep)} from {t}").fetchall()
                tables[t] = sorted(map(repr, rows))
    return files, tables


def tmp_is_clean(root: str | Path) -> bool:
    tmp = Path(root) / "tmp"
    return not tmp.exists() or not any(os.scandir(tmp))
