"""A layer's members sorted by identity, in a file read with mmap and no heavy import.

``extract`` looks a few paths up in an image; importing duckdb or pyarrow costs more than the
whole lookup. So each layer also gets ``files/<diff_id hex>.idx``: its members' columns as
flat little-endian arrays (written vectorised from Arrow by ``write``), plus the order that
sorts them by raw path, so a path is a binary search and a subtree a range.

Layout: ``LDBIDX02`` magic, a u64 header length, a JSON header naming each section's offset
and length, then the sections. Numbers: int64 ``size mtime offset``, int32 ``mode uid gid
devmajor devminor`` (-1 for null), u8 ``type whiteout``; variable-length columns (``key``,
``linkname``, ``uname``, ``gname``, ``sha256``, ``sparse``) as int64 offsets + bytes.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator
from typing import Any

MAGIC = b"LDBIDX02"
TYPES = ("file", "dir", "symlink", "hardlink", "char", "block", "fifo")
WHITEOUTS = ("none", "whiteout", "opaque")
_FIXED = {"size": "q", "mtime": "q", "offset": "q", "mode": "i", "uid": "i", "gid": "i",
          "devmajor": "i", "devminor": "i", "type": "B", "whiteout": "B", "order": "i"}
_VAR = ("key", "linkname", "uname", "gname", "sha256", "sparse")


def write(parquet_path: str, out_path: str) -> None:
    """Write the index of the layer whose members are in ``parquet_path``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from .fate import identity

    pf = pq.ParquetFile(parquet_path)
    want = ["path", "raw_path", "type", "whiteout", "size", "mtime", "offset_data", "mode",
            "uid", "gid", "devmajor", "devminor", "linkname", "uname", "gname", "sha256"]
    has_sparse = "sparse" in pf.schema_arrow.names
    t = pf.read(columns=want + (["sparse"] if has_sparse else []))
    n = t.num_rows
    sections: dict[str, bytes] = {}

    def ints(name: str, col: Any, fmt: str) -> None:
        dt = {"q": np.int64, "i": np.int32, "B": np.uint8}[fmt]
        arr = pc.fill_null(col, -1 if fmt != "B" else 0) if col.null_count else col
        sections[name] = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=dt).tobytes() if n else b""

    def codes(name: str, col: Any, names: tuple[str, ...]) -> None:
        vals = col.to_numpy(zero_copy_only=False)
        out = np.full(n, 255, dtype=np.uint8)
        for i, v in enumerate(names):
            out[vals == v] = i
        sections[name] = out.tobytes()

    def var(name: str, col: Any) -> None:
        arr = pc.fill_null(pc.cast(col, pa.large_binary()), b"") if n else pa.array([], pa.large_binary())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        bufs = arr.buffers()
        offs = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset:arr.offset + n + 1] if n \
            else np.zeros(1, dtype=np.int64)
        start, end = int(offs[0]), int(offs[-1])
        sections[name + ".off"] = (offs - start).astype(np.int64).tobytes()
        sections[name] = bytes(memoryview(bufs[2])[start:end]) if n and end > start else b""

    key = identity(t.column("path"), t.column("raw_path"))
    key = key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key
    var("key", key)
    order = pc.sort_indices(key).to_numpy().astype(np.int32) if n else np.zeros(0, np.int32)
    sections["order"] = order.tobytes()
    codes("type", t.column("type"), TYPES)
    codes("whiteout", t.column("whiteout"), WHITEOUTS)
    for name, col, fmt in (("size", "size", "q"), ("mtime", "mtime", "q"),
                           ("offset", "offset_data", "q"), ("mode", "mode", "i"),
                           ("uid", "uid", "i"), ("gid", "gid", "i"),
                           ("devmajor", "devmajor", "i"), ("devminor", "devminor", "i")):
        ints(name, t.column(col), fmt)
    for name in ("linkname", "uname", "gname", "sha256"):
        var(name, t.column(name))
    if has_sparse:
        sp = [json.dumps(v, separators=(",", ":")).encode() if v else b""
              for v in (([(d["offset"], d["length"]) for d in x] if x else None)
                        for x in t.column("sparse").to_pylist())]
        var("sparse", pa.array(sp, pa.large_binary()))
    else:
        sections["sparse.off"] = bytes(8 * (n + 1))
        sections["sparse"] = b""
    header: dict[str, Any] = {"n": n, "sections": {}}
    offset = 0
    for name, data in sections.items():
        header["sections"][name] = [offset, len(data)]
        offset += len(data)
    head = json.dumps(header).encode()
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(head)) + head)
        for data in sections.values():
            f.write(data)
    os.replace(tmp, out_path)


class LayerIndex:
    """Read side: ``find(key)`` -> member numbers at that identity, ``below(key)`` -> member
    numbers strictly under it; ``row(i)`` -> the columns of member ``i``."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        mm = self._mm
        if mm[:8] != MAGIC:
            raise ValueError(f"{path}: not a layer index")
        (hlen,) = struct.unpack_from("<Q", mm, 8)
        header = json.loads(mm[16:16 + hlen])
        base = 16 + hlen
        self.n: int = header["n"]
        view = memoryview(mm)
        self._s: dict[str, Any] = {}
        for name, (off, length) in header["sections"].items():
            mv = view[base + off: base + off + length]
            fmt = _FIXED.get(name) or ("q" if name.endswith(".off") else None)
            self._s[name] = mv.cast(fmt) if fmt else mv  # type: ignore[call-overload]
        self._order = self._s["order"]
        self._koff = self._s["key.off"]
        self._kdata = self._s["key"]

    def close(self) -> None:
        self._s.clear()
        self._order = self._koff = self._kdata = None  # type: ignore[assignment]
        try:
            self._mm.close()
        except BufferError:  # a view still held by a caller; the map goes with the object
            pass

    def key(self, i: int) -> bytes:
        return bytes(self._kdata[self._koff[i]:self._koff[i + 1]])

    def _sorted_key(self, j: int) -> bytes:
        return self.key(self._order[j])

    def _bisect(self, k: bytes, right: bool = False) -> int:
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            mk = self._sorted_key(mid)
            if mk < k or (right and mk == k):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find(self, k: bytes) -> list[int]:
        """Member numbers whose identity is ``k``, in tar order."""
        lo = self._bisect(k)
        hi = self._bisect(k, right=True)
        return sorted(self._order[j] for j in range(lo, hi))

    def below(self, k: bytes) -> Iterator[int]:
        """Member numbers strictly below ``k`` (a directory), sorted by identity."""
        if k == b"/":
            lo, hi = self._bisect(b"/", right=True), self.n
        else:
            lo, hi = self._bisect(k + b"/"), self._bisect(k + b"0")  # '0' follows '/'
        for j in range(lo, hi):
            yield self._order[j]

    def _var(self, name: str, i: int) -> bytes:
        off = self._s[name + ".off"]
        return bytes(self._s[name][off[i]:off[i + 1]])

    def row(self, i: int) -> dict[str, Any]:
        """Member ``i`` as the columns an ``FsEntry`` takes (``raw`` is its identity)."""
        s = self._s

        def opt(v: int) -> int | None:
            return None if v == -1 else v

        link = self._var("linkname", i)
        sha = self._var("sha256", i)
        sparse = self._var("sparse", i)
        t = s["type"][i]
        return {
            "raw": self.key(i), "type": TYPES[t] if t < len(TYPES) else "file",
            "whiteout": WHITEOUTS[s["whiteout"][i]] if s["whiteout"][i] < 3 else "none",
            "size": max(s["size"][i], 0), "mtime": max(s["mtime"][i], 0),
            "offset": opt(s["offset"][i]), "mode": s["mode"][i], "uid": max(s["uid"][i], 0),
            "gid": max(s["gid"][i], 0), "devmajor": opt(s["devmajor"][i]),
            "devminor": opt(s["devminor"][i]),
            "linkname": link.decode("utf-8", "surrogateescape") if link else None,
            "uname": self._var("uname", i).decode("utf-8", "replace"),
            "gname": self._var("gname", i).decode("utf-8", "replace"),
            "sha256": sha.decode() if sha else None,
            "sparse": tuple(tuple(x) for x in json.loads(sparse)) if sparse else (),
        }
