"""An image's members with their fate: the Parquet behind the ``members`` and ``fs`` views,
and the compact fate file behind the DuckDB-free lookup. Written at ingest, in a worker, once
per image (``materialize``); read by the catalog's views and by ``fastview``.

The Parquet holds every member of every layer of the image, layer by layer in tar order, with
the layer's columns (``files``) and: ``image_id``, ``position``, ``visible``,
``hidden_by_position``, ``hidden_by_kind``, ``hidden_by_path``, ``hidden_by_markers``,
``deletes_from_position`` (fate.py says what they mean), and for a visible hardlink the member
whose bytes it has (``content_layer``, ``content_offset``, ``content_size``,
``content_sha256``). Then one row per implied directory (a directory no layer has an entry
for; ``idx`` -1).

The fate file (``members/<image hex>.fate``): ``LDBFATE1``, a u64 header length, a JSON
header (the layers' diff_ids by position, the hardlink targets, the implied directories), then
the sorted int64 ``position << 32 | idx`` of every member that is not visible.
"""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fate import ImageFate

MAGIC = b"LDBFATE1"
ROW_GROUP = 65536


@dataclass(frozen=True)
class MaterializeJob:
    """One image to materialise: (position, diff_id, files Parquet) of each layer."""

    image_id: str
    layers: tuple[tuple[int, str, str], ...]
    members_out: str
    fate_out: str


@dataclass(frozen=True)
class MaterializeResult:
    image_id: str
    members: int
    visible: int


def materialize(job: MaterializeJob) -> MaterializeResult:
    """Compute the image's member fates and write its members Parquet and fate file."""
    from .. import memory
    from .fate import compute

    memory.use_system_allocator()
    try:
        fate = compute(job.layers)
        memory.release()  # what computing the fates freed, before the writing allocates
        _write_members(job, fate)
        write_fate(job.fate_out, fate)
    finally:
        memory.release()
    return MaterializeResult(job.image_id, sum(len(lf.visible) for lf in fate.layers),
                             sum(int(lf.visible.sum()) for lf in fate.layers) + len(fate.implied))


def _write_members(job: MaterializeJob, fate: ImageFate) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .. import memory
    from . import parquet
    from .fate import KINDS

    kinds = pa.array([None, *KINDS], pa.string())
    names = pa.array(fate.paths, pa.string())
    schema = None
    writer = None
    tmp = job.members_out + ".tmp"
    try:
        for (position, _diff_id, path), lf in zip(job.layers, fate.layers):
            pf = pq.ParquetFile(path)
            layer_names = pf.schema_arrow.names
            if schema is None:
                schema = _schema(pf.schema_arrow)
                # encoded on a thread of its own while the next batch is read and decoded
                writer = parquet.BackgroundWriter(tmp, schema, depth=1)
            start = 0
            links = {i: t for (p, i), t in fate.links.items() if p == position}
            image_id = pa.scalar(job.image_id, pa.string())
            for batch in pf.iter_batches(batch_size=ROW_GROUP, use_threads=False):
                n = batch.num_rows
                sl = slice(start, start + n)
                hb = lf.hidden_by_position[sl]
                df = lf.deletes_from_position[sl]
                extra = [
                    pa.repeat(image_id, n),
                    pa.array(np.full(n, position, dtype=np.int32)),
                    pa.array(lf.visible[sl]),
                    pa.array(hb, mask=hb < 0, type=pa.int32()),
                    kinds.take(pa.array(lf.hidden_by_kind[sl].astype(np.int32))),
                    _hidden_by_path(lf.hidden_by_path[sl], names, batch.column("path")),
                    _markers(lf.marker_offsets[start:start + n + 1], lf.marker_idx),
                    pa.array(df, mask=df < 0, type=pa.int32()),
                    *_content(links, start, n),
                ]
                cols = extra + [batch.column(name) for name in layer_names]
                assert writer is not None
                writer.put(pa.RecordBatch.from_arrays(cols, schema=schema))
                del cols, extra, batch
                # what the last batch freed, back to the system: malloc's threshold for
                # mapping large blocks has risen by now, so they stay in its arenas and the
                # process grew by ~185 MB over a 1M-member image without this
                memory.release()
                start += n
        if schema is None:  # an image without layers
            from ..tarindex import SCHEMA

            schema = _schema(SCHEMA)
            writer = parquet.BackgroundWriter(tmp, schema)
        if fate.implied:
            writer.put(_implied_batch(job, fate, schema))  # type: ignore[union-attr]
        done, writer = writer, None
        done.close()  # type: ignore[union-attr]
        os.replace(tmp, job.members_out)
    finally:
        if writer is not None:  # something went wrong: what the thread says matters less
            try:
                writer.close()
            except Exception:  # noqa: BLE001, S110
                pass
        if os.path.exists(tmp):
            os.unlink(tmp)


def _content(links, start, n):  # type: ignore[no-untyped-def]
    """content_layer, content_offset, content_size, content_sha256 of rows start..start+n-1:
    for a visible hardlink, the member whose bytes it has (``links``: idx -> fate.LinkTarget)."""
    import pyarrow as pa

    types = (pa.string(), pa.int64(), pa.int64(), pa.string())
    mine = {i - start: t for i, t in links.items() if start <= i < start + n}
    if not mine:
        return [pa.nulls(n, ty) for ty in types]
    cols: list[list] = [[None] * n for _ in types]
    for r, t in mine.items():
        cols[0][r], cols[1][r], cols[2][r], cols[3][r] = t.layer, t.offset, t.size, t.sha256
    return [pa.array(c, ty) for c, ty in zip(cols, types)]


def _hidden_by_path(code, names, path):  # type: ignore[no-untyped-def]
    """The display paths of ``code`` (fate.LayerFate.hidden_by_path): -1 null, -2 ``path``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (code != -1).any():
        return pa.nulls(len(code), pa.string())
    named = names.take(pa.array(np.where(code >= 0, code, 0), mask=code < 0))
    return pc.if_else(pa.array(code == -2), path.cast(pa.string()), named)


def _markers(offsets, values):  # type: ignore[no-untyped-def]
    """A list of marker numbers per member, null where there is none."""
    import pyarrow as pa

    empty = offsets[1:] == offsets[:-1]
    if empty.all():
        return pa.nulls(len(empty), pa.list_(pa.int32()))
    lo = int(offsets[0])
    return pa.ListArray.from_arrays(pa.array(offsets - lo, pa.int32()),
                                    pa.array(values[lo:int(offsets[-1])], pa.int32()),
                                    mask=pa.array(empty))


MEMBER_EXTRA = (
    ("image_id", "string"), ("position", "int32"), ("visible", "bool_"),
    ("hidden_by_position", "int32"), ("hidden_by_kind", "string"), ("hidden_by_path", "string"),
    ("hidden_by_markers", "list<int32>"), ("deletes_from_position", "int32"),
    ("content_layer", "string"), ("content_offset", "int64"), ("content_size", "int64"),
    ("content_sha256", "string"),
)


def _schema(files_schema):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    fields = [pa.field(n, pa.list_(pa.int32()) if t == "list<int32>" else getattr(pa, t)())
              for n, t in MEMBER_EXTRA]
    return pa.schema(fields + list(files_schema))


def _implied_batch(job: MaterializeJob, fate: ImageFate, schema):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    keys = sorted(fate.implied)
    n = len(keys)
    by_pos = {p: d for p, d, _ in job.layers}
    values = {
        "image_id": [job.image_id] * n, "position": [fate.implied[k] for k in keys],
        "visible": [True] * n, "layer": [by_pos.get(fate.implied[k]) for k in keys],
        "idx": [-1] * n, "path": [_display(k) for k in keys],
        "parent": [None if k == b"/" else _display(k.rsplit(b"/", 1)[0] or b"/") for k in keys],
        "name": [_display(k.rsplit(b"/", 1)[-1]) for k in keys],
        "raw_path": [None if _is_utf8(k) else k for k in keys],
        "type": ["dir"] * n, "size": [0] * n, "mode": [0o755] * n, "uid": [0] * n,
        "gid": [0] * n, "uname": [""] * n, "gname": [""] * n, "mtime": [0] * n,
        "whiteout": ["none"] * n,
    }
    cols = [pa.array(values[f.name], f.type) if f.name in values else pa.nulls(n, f.type)
            for f in schema]
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _display(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def write_fate(path: str, fate: ImageFate) -> None:
    header = {
        "layers": [lf.diff_id for lf in fate.layers],
        "links": [[p, i, t.layer, t.offset, t.size, t.sha256] for (p, i), t in sorted(fate.links.items())],
        "implied": [[k.hex(), p] for k, p in sorted(fate.implied.items())],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(head)) + head)
        f.write(fate.hidden_keys().astype("<i8").tobytes())
    os.replace(tmp, path)


class FateFile:
    """Read side of a fate file (no heavy import): ``hidden(position, idx)``, ``links``,
    ``implied``, ``layers``."""

    def __init__(self, path: str) -> None:
        import bisect

        with open(path, "rb") as f:
            data = f.read()
        if data[:8] != MAGIC:
            raise ValueError(f"{path}: not a fate file")
        (hlen,) = struct.unpack_from("<Q", data, 8)
        header = json.loads(data[16:16 + hlen])
        self.layers: list[str] = header["layers"]
        self.links: dict[tuple[int, int], tuple[str, int, int, str | None]] = {
            (p, i): (layer, off, size, sha) for p, i, layer, off, size, sha in header["links"]}
        self.implied: dict[bytes, int] = {bytes.fromhex(k): p for k, p in header["implied"]}
        self._hidden = memoryview(data[16 + hlen:]).cast("q")
        self._bisect = bisect.bisect_left

    def hidden(self, position: int, idx: int) -> bool:
        k = (position << 32) | idx
        i = self._bisect(self._hidden, k)  # type: ignore[call-overload]
        return i < len(self._hidden) and self._hidden[i] == k


def materialize_all(jobs: Sequence[MaterializeJob]) -> list[MaterializeResult]:
    return [materialize(j) for j in jobs]
