"""A layer's members sorted by identity, in a file read with mmap and no heavy import.

``extract`` looks a few paths up in an image; importing duckdb or pyarrow costs more than the
whole lookup. So each layer also gets ``files/<diff_id hex>.idx``: its members' columns as
flat little-endian arrays (built from the indexer's Arrow batches by ``Builder``), plus the
order that sorts them by raw path, so a path is a binary search and a subtree a range.

Layout: ``LDBIDX03`` magic, a u64 header length, a JSON header naming each section's offset
and length, then the sections. Numbers: int64 ``size mtime offset``, int32 ``mode uid gid
devmajor devminor`` (-1 for null), u8 ``type whiteout``; ``sha256`` as 32 raw bytes a member
(all zero: none); variable-length columns (``key``, ``linkname``, ``uname``, ``gname``,
``sparse``) as int64 offsets + bytes. A section the header does not name holds its default
for every member: ``devmajor`` and ``devminor`` -1, ``linkname uname gname sparse`` empty
(most layers have no devices, no sparse files, often no owner names). Readers also take the
previous format, ``LDBIDX02`` (every section present; ``sha256`` as hex, variable-length),
written before 2026-12-03: 181 bytes a member against ~100 on a layer of small files.
"""
from __future__ import annotations

import json
import mmap
import os
import shutil
import struct
from collections.abc import Iterator
from typing import Any

MAGIC = b"LDBIDX03"
MAGIC_V2 = b"LDBIDX02"  # read, no longer written
TYPES = ("file", "dir", "symlink", "hardlink", "char", "block", "fifo")
WHITEOUTS = ("none", "whiteout", "opaque")
_FIXED = {"size": "q", "mtime": "q", "offset": "q", "mode": "i", "uid": "i", "gid": "i",
          "devmajor": "i", "devminor": "i", "type": "B", "whiteout": "B", "order": "i"}
_VAR = ("key", "linkname", "uname", "gname", "sparse")
_SHA = 32  # bytes of a digest

_SECTIONS = ("key.off", "key", "order", "type", "whiteout", "size", "mtime", "offset", "mode",
             "uid", "gid", "devmajor", "devminor", "linkname.off", "linkname", "uname.off", "uname",
             "gname.off", "gname", "sha256", "sparse.off", "sparse")
# left out of the file when every member has the default (-1, or empty)
_OPTIONAL_INTS = ("devmajor", "devminor")
_OPTIONAL_VAR = ("linkname", "uname", "gname", "sparse")
_INTS = (("size", "size", "q"), ("mtime", "mtime", "q"), ("offset", "offset_data", "q"),
         ("mode", "mode", "i"), ("uid", "uid", "i"), ("gid", "gid", "i"),
         ("devmajor", "devmajor", "i"), ("devminor", "devminor", "i"))


class Builder:
    """Builds a layer's index from its member batches as the indexer yields them (``add``),
    then writes it (``finish``). Each section is spilled to its own file as batches arrive, so
    memory is one batch, not the layer; at the end the identity column is read back (mapped)
    once to sort it, and the sections are joined into the index file."""

    def __init__(self, out_path: str) -> None:
        self.out_path = out_path
        self.tmp = out_path + ".tmp"
        self.n = 0
        self._files: dict[str, Any] = {}
        self._ends: dict[str, int] = {name: 0 for name in _VAR}  # bytes so far, per var section
        self._set: set[str] = set()  # optional int sections with a value other than -1
        for name in _SECTIONS:
            if name != "order":
                self._files[name] = open(f"{self.tmp}.{name}", "w+b")
        for name in _VAR:
            self._files[name + ".off"].write(bytes(8))  # the first offset, 0

    def add(self, batch: Any) -> None:
        """Append one record batch of the layer's members (``tarindex.SCHEMA``), in order."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from .fate import identity

        n = batch.num_rows
        if not n:
            return
        f = self._files

        def var(name: str, arr: Any) -> None:
            if arr.null_count == n:
                f[name + ".off"].write(np.full(n, self._ends[name], np.int64).tobytes())
                return
            if not pa.types.is_large_binary(arr.type):
                arr = pc.cast(arr, pa.large_binary())
            offs = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + n + 1]
            lens = np.diff(offs)
            if arr.null_count:
                valid = np.asarray(arr.is_valid())
                if lens[~valid].any():  # a null slot with bytes behind it: copy the clean way
                    arr = pc.fill_null(arr, b"")
                    offs = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + n + 1]
                    lens = np.diff(offs)
            f[name].write(memoryview(arr.buffers()[2])[int(offs[0]):int(offs[-1])])
            f[name + ".off"].write((np.cumsum(lens) + self._ends[name]).astype(np.int64).tobytes())
            self._ends[name] += int(offs[-1] - offs[0])

        def codes(name: str, arr: Any, values: tuple[str, ...]) -> None:
            code = pc.fill_null(pc.index_in(arr, value_set=pa.array(values, pa.string())), 255)
            f[name].write(code.to_numpy(zero_copy_only=False).astype(np.uint8).tobytes())

        col = batch.column
        var("key", identity(col("path"), col("raw_path")))
        codes("type", col("type"), TYPES)
        codes("whiteout", col("whiteout"), WHITEOUTS)
        for name, c, fmt in _INTS:
            a = col(c)
            a = pc.fill_null(a, -1) if a.null_count else a
            dt = {"q": np.int64, "i": np.int32}[fmt]
            v = np.asarray(a.to_numpy(zero_copy_only=False), dtype=dt)
            if name in _OPTIONAL_INTS and name not in self._set and (v != -1).any():
                self._set.add(name)
            f[name].write(v.tobytes())
        for name in ("linkname", "uname", "gname"):
            var(name, col(name))
        f["sha256"].write(_raw_digests(col("sha256")))
        sp = col("sparse") if "sparse" in batch.schema.names else pa.nulls(n, pa.null())
        if sp.null_count < n:  # only the sparse members are encoded (few, if any)
            text: list[bytes | None] = [None] * n
            for i in np.flatnonzero(np.asarray(sp.is_valid())):
                v = sp[int(i)].as_py()
                text[i] = json.dumps([(d["offset"], d["length"]) for d in v],
                                     separators=(",", ":")).encode() if v else None
            var("sparse", pa.array(text, pa.large_binary()))
        else:
            var("sparse", sp)
        self.n += n

    def finish(self) -> None:
        """Sort the identities and write the index file (atomically, at ``out_path``)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        try:
            for fh in self._files.values():
                fh.flush()
            n = self.n
            if n:
                koff = np.fromfile(self._files["key.off"].name, np.int64)
                kdata = np.fromfile(self._files["key"].name, np.uint8)
                keys = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(koff),
                                                                     pa.py_buffer(kdata)])
                order = pc.sort_indices(keys).to_numpy().astype(np.int32).tobytes()
                del keys, koff, kdata
            else:
                order = b""
            omit = {name for name in _OPTIONAL_INTS if name not in self._set}
            omit |= {k for name in _OPTIONAL_VAR if not self._ends[name] for k in (name, name + ".off")}
            sections = [name for name in _SECTIONS if name not in omit]
            header: dict[str, Any] = {"n": n, "sections": {}}
            offset = 0
            for name in sections:
                length = len(order) if name == "order" else self._files[name].tell()
                header["sections"][name] = [offset, length]
                offset += length
            head = json.dumps(header).encode()
            with open(self.tmp, "wb", buffering=0) as out:
                out.write(MAGIC + struct.pack("<Q", len(head)) + head)
                for name in sections:
                    if name == "order":
                        out.write(order)
                        continue
                    _append(out, self._files[name])
            os.replace(self.tmp, self.out_path)
        finally:
            self.abort()

    def abort(self) -> None:
        """Remove the spill files (and an unfinished index)."""
        for fh in self._files.values():
            fh.close()
            if os.path.exists(fh.name):
                os.unlink(fh.name)
        self._files.clear()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def _raw_digests(col: Any) -> bytes:
    """A column of 64-character hex digests (null: none) as 32 raw bytes a row (none: zeros)."""
    import binascii

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(col)
    out = np.zeros((n, _SHA), np.uint8)
    if col.null_count == n:
        return out.tobytes()
    valid = np.ones(n, bool) if not col.null_count else np.asarray(col.is_valid())
    if not pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.large_string())
    offs = np.frombuffer(col.buffers()[1], np.int64)[col.offset:col.offset + n + 1]
    if not (np.diff(offs)[valid] == 2 * _SHA).all():
        raise ValueError("a sha256 that is not 64 hex digits")
    text: bytes | memoryview = memoryview(col.buffers()[2])[int(offs[0]):int(offs[-1])]
    if col.null_count and np.diff(offs)[~valid].any():  # bytes behind a null slot: the slow way
        text = "".join(x for x in col.to_pylist() if x is not None).encode()
    out[valid] = np.frombuffer(binascii.unhexlify(text), np.uint8).reshape(-1, _SHA)
    return out.tobytes()


def _append(out: Any, fh: Any) -> None:
    """Copy the whole of ``fh`` to the end of ``out`` (unbuffered), in the kernel where it can."""
    fh.seek(0)
    left = os.fstat(fh.fileno()).st_size
    try:
        while left > 0:
            done = os.copy_file_range(fh.fileno(), out.fileno(), left)
            if done <= 0:
                break
            left -= done
    except OSError:  # not on this system or filesystem: what is left, the plain way
        pass
    if left > 0:
        fh.seek(-left, os.SEEK_END)
        out.seek(0, os.SEEK_END)
        shutil.copyfileobj(fh, out, 1 << 20)


def count(path: str) -> int:
    """The number of members in the layer index at ``path`` (its header only)."""
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:8] != MAGIC:
            raise ValueError(f"{path}: not a layer index")
        (hlen,) = struct.unpack_from("<Q", head, 8)
        return int(json.loads(f.read(hlen))["n"])


class LayerIndex:
    """Read side: ``find(key)`` -> member numbers at that identity, ``below(key)`` -> member
    numbers strictly under it; ``row(i)`` -> the columns of member ``i``."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        mm = self._mm
        if mm[:8] not in (MAGIC, MAGIC_V2):
            raise ValueError(f"{path}: not a layer index")
        self._v2 = mm[:8] == MAGIC_V2
        (hlen,) = struct.unpack_from("<Q", mm, 8)
        header = json.loads(mm[16:16 + hlen])
        base = 16 + hlen
        self.n: int = header["n"]
        view = memoryview(mm)
        self._s: dict[str, Any] = {}
        for name, (off, length) in header["sections"].items():
            mv = view[base + off: base + off + length]
            fmt = _FIXED.get(name) or ("q" if name.endswith(".off") else None)
            if self._v2 and name == "sha256":
                fmt = None
            self._s[name] = mv.cast(fmt) if fmt else mv  # type: ignore[call-overload]
        self._check(path)
        self._order = self._s["order"]
        self._koff = self._s["key.off"]
        self._kdata = self._s["key"]

    def _check(self, path: str) -> None:
        """Every section the format needs is there with one entry a member (so a damaged file
        is refused here, not read past its end later)."""
        n, s = self.n, self._s
        need = {"key.off": n + 1, "order": n, "type": n, "whiteout": n, "size": n, "mtime": n,
                "offset": n, "mode": n, "uid": n, "gid": n,
                **({"sha256.off": n + 1} if self._v2 else {"sha256": n * _SHA})}
        need.update({k: n for k in _OPTIONAL_INTS if k in s or self._v2})
        need.update({k + ".off": n + 1 for k in _OPTIONAL_VAR if k + ".off" in s or self._v2})
        for name, count in need.items():
            if name not in s or len(s[name]) != count:
                raise ValueError(f"{path}: damaged layer index (section {name})")

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
        off = self._s.get(name + ".off")
        return b"" if off is None else bytes(self._s[name][off[i]:off[i + 1]])

    def _int(self, name: str, i: int) -> int:
        v = self._s.get(name)
        return -1 if v is None else v[i]

    def sha256(self, i: int) -> str | None:
        """Member ``i``'s content digest (hex), if it has one."""
        if self._v2:
            return self._var("sha256", i).decode() or None
        raw = bytes(self._s["sha256"][i * _SHA:(i + 1) * _SHA])
        return raw.hex() if any(raw) else None

    def row(self, i: int) -> dict[str, Any]:
        """Member ``i`` as the columns an ``FsEntry`` takes (``raw`` is its identity)."""
        s = self._s

        def opt(v: int) -> int | None:
            return None if v == -1 else v

        link = self._var("linkname", i)
        sparse = self._var("sparse", i)
        t = s["type"][i]
        return {
            "raw": self.key(i), "type": TYPES[t] if t < len(TYPES) else "file",
            "whiteout": WHITEOUTS[s["whiteout"][i]] if s["whiteout"][i] < 3 else "none",
            "size": max(s["size"][i], 0), "mtime": max(s["mtime"][i], 0),
            "offset": opt(s["offset"][i]), "mode": s["mode"][i], "uid": max(s["uid"][i], 0),
            "gid": max(s["gid"][i], 0), "devmajor": opt(self._int("devmajor", i)),
            "devminor": opt(self._int("devminor", i)),
            "linkname": link.decode("utf-8", "surrogateescape") if link else None,
            "uname": self._var("uname", i).decode("utf-8", "replace"),
            "gname": self._var("gname", i).decode("utf-8", "replace"),
            "sha256": self.sha256(i),
            "sparse": tuple(tuple(x) for x in json.loads(sparse)) if sparse else (),
        }
