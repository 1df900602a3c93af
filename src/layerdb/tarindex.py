"""An uncompressed layer stream in, Arrow record batches of its members out.

Pure and streaming: it reads its input once, front to back, and does no other I/O. Each row is
one tar member (see docs/catalog.md, table ``files``); regular files' contents are hashed as
they pass. Whiteout markers are recognised here (OCI image-spec, layer.md).
"""
from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa

from .errors import CorruptLayer

BATCH_ROWS = 8192

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
    ("offset_data", pa.int64()),
    ("sha256", pa.string()),
    ("whiteout", pa.string()),
    ("hides", pa.string()),
    ("xattrs", pa.map_(pa.string(), pa.binary())),
    ("devmajor", pa.int32()),
    ("devminor", pa.int32()),
])

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


class _Stream:
    """A forward-only reader over the layer stream that knows its absolute offset."""

    CHUNK = 1 << 20

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._buf = b""
        self._pos = 0  # position in _buf
        self.offset = 0  # absolute offset of _buf[_pos]

    def _fill(self, n: int) -> bool:
        """Make at least ``n`` bytes available; False at EOF before that."""
        have = len(self._buf) - self._pos
        if have >= n:
            return True
        parts = [self._buf[self._pos:]] if have else []
        while have < n:
            chunk = self._raw.read(max(self.CHUNK, n - have))
            if not chunk:
                self._buf, self._pos = b"".join(parts), 0
                return False
            parts.append(chunk)
            have += len(chunk)
        self._buf, self._pos = (parts[0] if len(parts) == 1 else b"".join(parts)), 0
        return True

    def take(self, n: int) -> bytes:
        if not self._fill(n):
            raise EOFError(f"unexpected end of data at offset {self.offset + len(self._buf) - self._pos}")
        b = self._buf[self._pos:self._pos + n]
        self._pos += n
        self.offset += n
        return b

    def take_block(self) -> bytes | None:
        """The next 512-byte block, or None at a clean EOF."""
        if not self._fill(512):
            if len(self._buf) - self._pos == 0:
                return None
            raise EOFError(f"unexpected end of data at offset {self.offset}")
        return self.take(512)

    def skip_padding(self, n: int) -> bool:
        """Consume up to ``n`` padding bytes; False when the stream ends first."""
        if self._fill(n):
            self._pos += n
            self.offset += n
            return True
        self.offset += len(self._buf) - self._pos
        self._pos = len(self._buf)
        return False

    def skip(self, n: int, h: Any = None) -> None:
        """Consume ``n`` bytes, feeding them to hash ``h`` if given."""
        while n > 0:
            have = len(self._buf) - self._pos
            if have == 0:
                if not self._fill(1):
                    raise EOFError(f"unexpected end of data at offset {self.offset}")
                have = len(self._buf) - self._pos
            k = min(n, have)
            if h is not None:
                h.update(memoryview(self._buf)[self._pos:self._pos + k])
            self._pos += k
            self.offset += k
            n -= k


def _num(b: bytes) -> int:
    if b and b[0] & 0x80:  # GNU base-256
        v = int.from_bytes(b[1:], "big")
        if b[0] == 0xFF:  # negative
            return v - (1 << (8 * (len(b) - 1)))
        return ((b[0] & 0x7F) << (8 * (len(b) - 1))) | v
    s = b.split(b"\0", 1)[0].strip(b" \0")
    return int(s, 8) if s else 0


def _nts(b: bytes) -> bytes:
    return b.split(b"\0", 1)[0]


def _pax(data: bytes, where: int) -> dict[str, bytes]:
    """Parse PAX extended header records (``"%d %s=%s\\n"``)."""
    out: dict[str, bytes] = {}
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0:
            break
        sp = data.find(b" ", pos)
        if sp < 0:
            raise CorruptLayer(f"bad pax header at offset {where}")
        length = int(data[pos:sp])
        rec = data[sp + 1:pos + length - 1]
        if length <= 0 or data[pos + length - 1:pos + length] != b"\n":
            raise CorruptLayer(f"bad pax header at offset {where}")
        k, _, v = rec.partition(b"=")
        out[k.decode("utf-8", "surrogateescape")] = v
        pos += length
    return out


_TYPE = {
    b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink",
    b"3": "char", b"4": "block", b"5": "dir", b"6": "fifo", b"D": "dir", b"S": "file",
}
_BLOCK = 512


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def index_layer(stream: BinaryIO, layer: str, stats: LayerStats | None = None,
                batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Yield record batches (schema ``SCHEMA``) for every member of the tar read from
    ``stream``. ``layer`` is the diff_id string put in every row. Handles ustar, GNU (long
    names and links, base-256 numbers) and PAX (local and global headers, xattrs). Raises
    ``CorruptLayer`` on a truncated or malformed tar. Stops at the end-of-archive marker; the
    caller drains the rest (padding) if it hashes the stream."""
    stats = stats if stats is not None else LayerStats()
    cols = _Columns()
    rd = _Stream(stream)
    idx = 0
    glob: dict[str, bytes] = {}
    sha256 = hashlib.sha256
    try:
        while True:
            pax: dict[str, bytes] = dict(glob)
            longname = longlink = None
            while True:
                hdr_at = rd.offset
                blk = rd.take_block()
                if blk is None or blk == _ZERO:
                    blk = None
                    break
                try:
                    chk = _num(blk[148:156])
                except ValueError:
                    chk = -1
                if chk != sum(blk) - sum(blk[148:156]) + 256:
                    if idx == 0 and hdr_at == 0:
                        raise CorruptLayer(f"layer {layer}: not a tar stream")
                    raise CorruptLayer(f"layer {layer}: bad tar header checksum at offset {hdr_at}")
                t = blk[156:157]
                size = _num(blk[124:136])
                if t in (b"x", b"X", b"g", b"L", b"K"):
                    data = rd.take(size)
                    rd.skip(-size % _BLOCK)
                    if t == b"g":
                        glob.update(_pax(data, hdr_at))
                        pax.update(_pax(data, hdr_at))
                    elif t in (b"x", b"X"):
                        pax.update(_pax(data, hdr_at))
                    elif t == b"L":
                        longname = _nts(data)
                    else:
                        longlink = _nts(data)
                    continue
                break
            if blk is None:
                break
            name = longname if longname is not None else _nts(blk[0:100])
            magic = blk[257:265]
            if magic[:6] == b"ustar\0" and longname is None:
                prefix = _nts(blk[345:500])
                if prefix:
                    name = prefix + b"/" + name
            link = longlink if longlink is not None else _nts(blk[157:257])
            mtime: float = _num(blk[136:148])
            uid, gid = _num(blk[108:116]), _num(blk[116:124])
            uname, gname = _nts(blk[265:297]), _nts(blk[297:329])
            xattrs = None
            if pax:
                if "size" in pax:
                    size = int(pax["size"])
                if "path" in pax:
                    name = pax["path"]
                if "linkpath" in pax:
                    link = pax["linkpath"]
                if "uid" in pax:
                    uid = int(pax["uid"])
                if "gid" in pax:
                    gid = int(pax["gid"])
                if "uname" in pax:
                    uname = pax["uname"]
                if "gname" in pax:
                    gname = pax["gname"]
                if "mtime" in pax:
                    mtime = float(pax["mtime"])
                xs = [(k[len(_XATTR):], v) for k, v in pax.items() if k.startswith(_XATTR)]
                xattrs = xs or None
            t = blk[156:157]
            kind = _TYPE.get(t)
            if kind is None:
                kind = "file"
            if kind == "file" and t in (b"0", b"\0") and name.endswith(b"/"):
                kind = "dir"
            offset = rd.offset
            sha = None
            if kind == "file":  # as tarfile: only regular (and unknown) members carry data
                h = sha256()
                rd.skip(size, h)
                sha = h.hexdigest()
                stats.file_bytes += size
            elif t == b"D":  # GNU dumpdir: a listing we do not need
                rd.skip(size)
            pad = -rd.offset % _BLOCK
            # a stream may end right after the last member's data, without padding or an
            # end-of-archive marker (umoci insert writes such layers; Go's reader takes them)
            ended = bool(pad) and not rd.skip_padding(pad)
            _append(cols.cols, layer, idx, _dec(name), kind, size if kind == "file" else 0,
                    _num(blk[100:108]) & 0o7777, uid, gid, uname, gname, int(mtime),
                    _dec(link), offset, sha, xattrs, blk)
            idx += 1
            if ended:
                break
            if len(cols) >= batch_rows:
                yield cols.batch()
    except EOFError as e:
        raise CorruptLayer(f"layer {layer}: truncated or corrupt tar: {e}") from e
    except ValueError as e:
        raise CorruptLayer(f"layer {layer}: truncated or corrupt tar: malformed header: {e}") from e
    stats.members = idx
    if len(cols):
        yield cols.batch()


_ZERO = bytes(_BLOCK)


def _append(c: dict[str, list], layer: str, idx: int, name: str, kind: str, size: int,
            mode: int, uid: int, gid: int, uname: bytes, gname: bytes, mtime: int,
            link: str, offset: int, sha: str | None, xattrs: Any, blk: bytes) -> None:
    path, raw = _text(normalize(name))
    if path == "/":
        parent, base = None, "/"
    else:
        parent, base = posixpath.split(path)
    whiteout, hides = "none", None
    if base.startswith(_WH):
        if base == _OPQ:
            whiteout, hides = "opaque", parent
        else:
            whiteout = "whiteout"
            hides = posixpath.join(parent or "/", base[len(_WH):])
    if kind == "hardlink":
        linkname: str | None = _text(normalize(link))[0]
    elif kind == "symlink":
        linkname = _text(link)[0]
    else:
        linkname = None
    dev = kind in ("char", "block")
    c["layer"].append(layer)
    c["idx"].append(idx)
    c["path"].append(path)
    c["parent"].append(parent)
    c["name"].append(base)
    c["raw_path"].append(raw)
    c["type"].append(kind)
    c["size"].append(size)
    c["mode"].append(mode)
    c["uid"].append(uid)
    c["gid"].append(gid)
    c["uname"].append(_text(_dec(uname))[0] if uname else None)
    c["gname"].append(_text(_dec(gname))[0] if gname else None)
    c["mtime"].append(mtime)
    c["linkname"].append(linkname)
    c["offset_data"].append(offset)
    c["sha256"].append(sha)
    c["whiteout"].append(whiteout)
    c["hides"].append(hides)
    c["xattrs"].append(xattrs)
    c["devmajor"].append(_num(blk[329:337]) if dev else None)
    c["devminor"].append(_num(blk[337:345]) if dev else None)


