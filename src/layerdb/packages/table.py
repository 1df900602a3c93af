"""The ``packages/<diff_id hex>.parquet`` file of a layer: one row per package record."""
from __future__ import annotations

from collections.abc import Sequence

from .records import Package
from .versions import version_key

# column, DuckDB type (the view and the docs use these; pyarrow's schema follows)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("layer", "VARCHAR"), ("ecosystem", "VARCHAR"), ("name", "VARCHAR"), ("version", "VARCHAR"),
    ("version_key", "BLOB"), ("source", "VARCHAR"), ("arch", "VARCHAR"),
    ("record_path", "VARCHAR"), ("purl", "VARCHAR"),
)


def schema():  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.schema([(n, pa.binary() if t == "BLOB" else pa.string()) for n, t in COLUMNS])


def write_parquet(path: str, layer: str, pkgs: Sequence[Package]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {
        "layer": [layer] * len(pkgs),
        "ecosystem": [p.ecosystem for p in pkgs],
        "name": [p.name for p in pkgs],
        "version": [p.version for p in pkgs],
        "version_key": [version_key(p.ecosystem, p.version) for p in pkgs],
        "source": [p.source for p in pkgs],
        "arch": [p.arch for p in pkgs],
        "record_path": [p.record_path for p in pkgs],
        "purl": [p.purl for p in pkgs],
    }
    sch = schema()
    table = pa.Table.from_pydict(cols, schema=sch)
    pq.write_table(table, path, compression="zstd")
