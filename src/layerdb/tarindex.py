"""An uncompressed layer stream in, Arrow record batches of its members out.

Pure and streaming: it reads its input once, front to back, and does no other I/O. Each row is
one tar member (see docs/catalog.md, table ``files``); regular files' contents are hashed as
they pass. Whiteout markers are recognised here (OCI image-spec, layer.md).
"""
from __future__ import annotations

import hashlib
import posixpath
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import pyarrow as pa

from .errors import CorruptLayer

BATCH_ROWS = 32768

SCHEMA = pa.schema([
    ("layer", pa.string()),
    ("idx", pa.int32()),
    ("path", pa.string()),
    ("parent", pa.string()),
    ("name", pa.string()),
    ("raw_path", pa.binary()),
    ("type", pa.string()),
    ("size", pa.int64()),
    ("mode", pa.int32()),
    ("uid", pa.int32()),
    ("gid", pa.int32()),
    ("uname", pa.string()),
    ("gname", pa.string()),
    ("mtime", pa.int64()),
    ("linkname", pa.string()),
    ("offset", pa.int64()),
    ("sha256", pa.string()),
    ("whiteout", pa.string()),
    ("hides", pa.string()),
    ("xattrs", pa.map_(pa.string(), pa.binary())),
    ("devmajor", pa.int32()),
    ("devminor", pa.int32()),
])

_TYPES = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.GNUTYPE_SPARSE: "file",
    tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}
_WH = ".wh."
_OPQ = ".wh..wh..opq"
_XATTR = "SCHILY.xattr."


def normalize(name: str) -> str:
    """A member name as an absolute, clean path: ``./a//b/`` -> ``/a/b``, ``.`` -> ``/``.
    ``..`` cannot climb above the root (``../../etc/x`` -> ``/etc/x``), as runtimes apply it."""
    p = posixpath.normpath("/" + name)
    if p.startswith("//"):
        p = "/" + p.lstrip("/")
    return p


def _text(s: str) -> tuple[str, bytes | None]:
    """Display text for a name decoded with surrogateescape, and its raw bytes if not UTF-8."""
    try:
        s.encode("utf-8")
        return s, None
    except UnicodeEncodeError:
        raw = s.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace"), raw


@dataclass
class LayerStats:
    members: int = 0
    file_bytes: int = 0


class _Columns:
    def __init__(self) -> None:
        self.cols: dict[str, list] = {f.name: [] for f in SCHEMA}

    def __len__(self) -> int:
        return len(self.cols["idx"])

    def batch(self) -> pa.RecordBatch:
        b = pa.RecordBatch.from_arrays(
            [pa.array(self.cols[f.name], type=f.type) for f in SCHEMA], schema=SCHEMA)
        self.cols = {f.name: [] for f in SCHEMA}
        return b


def index_layer(stream: BinaryIO, layer: str, stats: LayerStats | None = None,
                batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Yield record batches (schema ``SCHEMA``) for every member of the tar read from
    ``stream``. ``layer`` is the diff_id string put in every row. Raises ``CorruptLayer`` on a
    truncated or malformed tar. Stops at the end-of-archive marker; the caller drains the rest
    (padding) if it hashes the stream."""
    stats = stats if stats is not None else LayerStats()
    cols = _Columns()
    c = cols.cols
    try:
        tf = tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 20,
                          encoding="utf-8", errors="surrogateescape")
    except tarfile.ReadError as e:
        if _empty(e):
            return
        raise CorruptLayer(f"layer {layer}: not a tar stream: {e}") from e
    idx = 0
    try:
        for m in tf:
            kind = _TYPES.get(m.type, "file")
            path, raw = _text(normalize(m.name))
            if path == "/":
                parent, name = None, "/"
            else:
                parent, name = posixpath.split(path)
            whiteout, hides = "none", None
            if name.startswith(_WH):
                if name == _OPQ:
                    whiteout, hides = "opaque", parent
                else:
                    whiteout = "whiteout"
                    hides = posixpath.join(parent or "/", name[len(_WH):])
            sha = None
            size = m.size
            if kind == "file":
                h = hashlib.sha256()
                f = tf.extractfile(m)
                if f is not None:
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        h.update(chunk)
                sha = h.hexdigest()
                stats.file_bytes += size
            if kind == "hardlink":
                link = _text(normalize(m.linkname))[0]
                size = 0
            elif kind == "symlink":
                link = _text(m.linkname)[0]
            else:
                link = None
            xattrs = None
            pax = m.pax_headers
            if pax:
                xs = [(k[len(_XATTR):], v.encode("utf-8", "surrogateescape"))
                      for k, v in pax.items() if k.startswith(_XATTR)]
                xattrs = xs or None
            c["layer"].append(layer)
            c["idx"].append(idx)
            c["path"].append(path)
            c["parent"].append(parent)
            c["name"].append(name)
            c["raw_path"].append(raw)
            c["type"].append(kind)
            c["size"].append(size)
            c["mode"].append(m.mode & 0o7777)
            c["uid"].append(m.uid)
            c["gid"].append(m.gid)
            c["uname"].append(_text(m.uname)[0] if m.uname else None)
            c["gname"].append(_text(m.gname)[0] if m.gname else None)
            c["mtime"].append(int(m.mtime))
            c["linkname"].append(link)
            c["offset"].append(m.offset_data)
            c["sha256"].append(sha)
            c["whiteout"].append(whiteout)
            c["hides"].append(hides)
            c["xattrs"].append(xattrs)
            c["devmajor"].append(m.devmajor if kind in ("char", "block") else None)
            c["devminor"].append(m.devminor if kind in ("char", "block") else None)
            idx += 1
            if len(cols) >= batch_rows:
                yield cols.batch()
    except (tarfile.TarError, EOFError) as e:
        raise CorruptLayer(f"layer {layer}: truncated or corrupt tar: {e}") from e
    stats.members = idx
    if len(cols):
        yield cols.batch()


def _empty(e: Exception) -> bool:
    return "empty file" in str(e)
