"""An uncompressed layer stream in, Arrow record batches of its members out.

Pure and streaming: it reads its input once, front to back, and does no other I/O. Each row is
one tar member (see docs/catalog.md, table ``files``); regular files' contents are hashed as
they pass. Whiteout markers are recognised here (OCI image-spec, layer.md).

A layer means what the container runtime makes of it, and runtimes read layers with Go's
``archive/tar``; this reader follows it: several PAX headers in a row, only the last applies; a
GNU long name beats a PAX path; global PAX headers apply to nothing; a GNU-magic header has no
ustar prefix; GNU sparse members (old GNU ``S``, PAX 0.0, 0.1 and 1.0) are indexed under their
real name with their expanded size and content hash. Whatever Go refuses (a bad checksum, a
numeric field that does not parse, a negative size, a NUL in a PAX path, linkpath, user or
group name or in a record's key, a PAX header or GNU long name over 1 MiB, a broken sparse map)
is refused here with ``CorruptLayer``: ``layer L: member N: problem``.

Speed: most layers are many small members, so the hot path reads them a buffer at a time:
every 512-byte block of the buffer is read at once (numpy) as if it were a plain header, which
gives where the next header would be; following that chain from a real header costs one
lookup a member, and the files it passes are hashed in one comprehension. Names stay bytes
until a batch becomes Arrow columns, and the numeric header fields of a whole batch
(checksum, mode, ids, mtime, device numbers) are parsed and validated at once with numpy then.
Anything unusual (PAX and GNU extensions, prefixes, names needing normalisation, whiteouts,
files larger than the buffer) takes the general path, which handles every case one member at
a time.
"""
from __future__ import annotations

import binascii
import hashlib
import posixpath
import re
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import sparse as _sparse
from .errors import CorruptLayer

BATCH_ROWS = 16384
CHUNK = 4 << 20  # bytes read from the stream at a time
MAX_SPECIAL = 1 << 20  # Go's limit on a PAX header's or GNU long name's data (maxSpecialFileSize)
MAX_SPARSE_ENTRIES = 1 << 20  # regions in one sparse map
MAX_HOLE_BYTES = 1 << 36  # zeros hashed for the holes of sparse files, per layer (64 GiB)

SPARSE_TYPE = pa.list_(pa.struct([("offset", pa.int64()), ("length", pa.int64())]))

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
    ("sparse", SPARSE_TYPE),
])

_WH = b".wh."
_OPQ = b".wh..wh..opq"
_XATTR = b"SCHILY.xattr."
_BLOCK = 512
_ZERO = bytes(_BLOCK)

# member kinds, by code
KINDS = ("file", "hardlink", "symlink", "char", "block", "dir", "fifo")
_FILE, _HARDLINK, _SYMLINK, _CHAR, _BLOCKDEV, _DIR, _FIFO = range(7)
# typeflag byte -> kind code; any other typeflag is a file (its data is hashed, as tarfile does)
_KIND = {ord("1"): _HARDLINK, ord("2"): _SYMLINK, ord("3"): _CHAR, ord("4"): _BLOCKDEV,
         ord("5"): _DIR, ord("6"): _FIFO, ord("D"): _DIR}
_HEADER_ONLY = frozenset(b"123456")  # Go: these carry no data, whatever their size field says
# typeflags the hot loop takes: regular files, and header-only members
_FAST_DATA = frozenset(b"07")
_FAST = frozenset(b"07123456")
_T_PAX, _T_GLOBAL, _T_LONGNAME, _T_LONGLINK, _T_REGA, _T_SPARSE = (
    ord("x"), ord("g"), ord("L"), ord("K"), 0, ord("S"))

_DECIMAL = re.compile(rb"[+-]?[0-9]+\Z")  # Go's strconv.ParseInt(s, 10, 64)
_INT64 = 1 << 63

try:  # Python's own SHA-256 costs less than OpenSSL's per object: it hashes small files
    from _sha2 import sha256 as _small_sha256  # type: ignore[import-not-found]  # 3.12+
except ImportError:  # pragma: no cover
    try:
        from _sha256 import sha256 as _small_sha256  # type: ignore[import-not-found,no-redef]
    except ImportError:
        _small_sha256 = hashlib.sha256  # type: ignore[assignment]


def normalize(name: str) -> str:
    """A member name as an absolute, clean path: ``./a//b/`` -> ``/a/b``, ``.`` -> ``/``.
    ``..`` cannot climb above the root (``../../etc/x`` -> ``/etc/x``), as runtimes apply it."""
    return normalize_bytes(name.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


def normalize_bytes(name: bytes) -> bytes:
    """``normalize`` on the raw bytes of a name (path identity is bytes)."""
    p = posixpath.normpath(b"/" + name)
    if p.startswith(b"//"):
        p = b"/" + p.lstrip(b"/")
    return p


def _display(b: bytes) -> str:
    """Display text of raw bytes: UTF-8, undecodable bytes as ``\\xNN``."""
    return b.decode("utf-8", "backslashreplace")


@dataclass
class LayerStats:
    members: int = 0
    file_bytes: int = 0


# --------------------------------------------------------------------------------------------
# Numbers as Go's archive/tar reads them
# --------------------------------------------------------------------------------------------


def _go_numeric(b: bytes) -> int:
    """Go's parser.parseNumeric: base-256 when the high bit is set, else octal. Raises
    ``ValueError`` where Go sets ErrHeader."""
    if b and b[0] & 0x80:
        inv = 0xFF if b[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(b):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if x >> 56:
                raise ValueError("base-256 number overflows")
            x = x << 8 | c
        if x >> 63:
            raise ValueError("base-256 number overflows")
        return ~x if inv else x
    return _go_octal(b)


def _go_octal(b: bytes) -> int:
    b = b.strip(b" \0")
    if not b:
        return 0
    s = b.split(b"\0", 1)[0]
    if not s or s.strip(b"01234567"):
        raise ValueError("not an octal number")
    v = int(s, 8)
    if v >> 64:
        raise ValueError("octal number overflows")
    return v if v < _INT64 else v - (1 << 64)  # Go: int64(uint64)


def _go_int(s: bytes, what: str) -> int:
    """Go's strconv.ParseInt(s, 10, 64)."""
    if not _DECIMAL.match(s):
        raise ValueError(f"bad {what}: {s[:40]!r}")
    v = int(s)
    if not -_INT64 <= v < _INT64:
        raise ValueError(f"{what} out of range")
    return v


def _pax_time(s: bytes) -> int:
    """Go's parsePAXTime, as whole seconds (time.Unix(...).Unix())."""
    secs, _, frac = s.partition(b".")
    v = _go_int(secs, "pax time")
    if frac:
        if frac.strip(b"0123456789"):
            raise ValueError("bad pax time")
        if secs.startswith(b"-") and frac.strip(b"0"):
            v -= 1
    return v


def _cstr(b: bytes) -> bytes:
    """Go's parser.parseString: up to the first NUL."""
    i = b.find(0)
    return b if i < 0 else b[:i]


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    """PAX records (``"%d %s=%s\\n"``) as Go's parsePAX reads them; the GNU 0.0 sparse
    ``offset``/``numbytes`` pairs become one ``GNU.sparse.map``. Raises ``ValueError``."""
    out: dict[bytes, bytes] = {}
    smap: list[bytes] = []
    pos, n = 0, len(data)
    while pos < n:
        sp = data.find(b" ", pos)
        if sp < 0:
            raise ValueError("bad pax record")
        ln = data[pos:sp]
        if not _DECIMAL.match(ln):
            raise ValueError("bad pax record length")
        length = int(ln)
        if length < 5 or length > n - pos or sp + 1 >= pos + length:
            raise ValueError("bad pax record length")
        end = pos + length
        if data[end - 1] != 0x0A:
            raise ValueError("pax record without newline")
        k, eq, v = data[sp + 1:end - 1].partition(b"=")
        if not eq or not k:
            raise ValueError("bad pax record")
        if k in (b"path", b"linkpath", b"uname", b"gname"):
            if b"\0" in v:
                raise ValueError(f"NUL in pax {k.decode()}")
        elif b"\0" in k:
            raise ValueError("NUL in pax record key")
        if k in (b"GNU.sparse.offset", b"GNU.sparse.numbytes"):
            if (len(smap) % 2 == 0) != (k == b"GNU.sparse.offset") or b"," in v:
                raise ValueError("bad GNU sparse 0.0 record")
            smap.append(v)
        else:
            out[k] = v
        pos = end
    if smap:
        out[b"GNU.sparse.map"] = b",".join(smap)
    return out


# --------------------------------------------------------------------------------------------
# Whole batches of header fields at once (numpy)
# --------------------------------------------------------------------------------------------

_FORMAT_V7, _FORMAT_USTAR, _FORMAT_GNU, _FORMAT_STAR = range(4)


def _octal_fields(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Octal numbers of a (rows, width) uint8 field matrix: (values, simple) where ``simple``
    marks rows in the plain form (NUL/space padding around one run of octal digits) whose
    value is right; other rows need ``_go_numeric``."""
    w = F.shape[1]
    D = (F >= 48) & (F <= 55)
    if D[:, :w - 1].all() and ((F[:, w - 1] == 0) | (F[:, w - 1] == 32)).all():
        # what every common writer puts there: w-1 digits and a terminator
        v = (F[:, :w - 1].astype(np.int64) - 48) @ _POW8[w - 1]
        return v, np.ones(len(F), bool)
    ok = (D | (F == 0) | (F == 32)).all(axis=1)
    runs = D[:, 0].astype(np.int32) + (D[:, 1:] & ~D[:, :-1]).sum(axis=1)
    ok &= runs <= 1
    v = np.zeros(len(F), np.int64)
    dig = F.astype(np.int64) - 48
    for j in range(w):
        v = np.where(D[:, j], v * 8 + dig[:, j], v)
    return v, ok


_POW8 = {k: 8 ** np.arange(k - 1, -1, -1, dtype=np.int64) for k in range(1, 13)}
_KIND_OF = np.full(256, _FILE, np.int8)
for _t, _k in _KIND.items():
    _KIND_OF[_t] = _k


# numeric fields at 100:156 in their common layout: (name, start, end), digits then a terminator;
# the checksum field is 6 digits, NUL, space
_STD_FIELDS = (("mode", 100, 108), ("uid", 108, 116), ("gid", 116, 124), ("size", 124, 136),
               ("mtime", 136, 148), ("checksum", 148, 156))
_DEV_FIELDS = (("devmajor", 329, 337), ("devminor", 337, 345))


def _layout(fields: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """For fields packed from ``fields[0]``'s start: a mask and the value each 8-byte word
    must have under it when every field is octal digits then terminators (NUL or space)."""
    base = fields[0][1]
    mask, want = bytearray(fields[-1][2] - base), bytearray(fields[-1][2] - base)
    for _, lo, hi in fields:
        digits = hi - lo - (2 if lo == 148 else 1)
        for j in range(lo, hi):
            mask[j - base], want[j - base] = (0xF8, 0x30) if j < lo + digits else (0xDF, 0)
    return np.frombuffer(bytes(mask), np.uint64), np.frombuffer(bytes(want), np.uint64)


_STD_LAYOUT = _layout(_STD_FIELDS)
_DEV_LAYOUT = _layout(_DEV_FIELDS)


def _common(H: np.ndarray, fields: tuple[tuple[str, int, int], ...],
            layout: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray] | None:
    """Each field's values when every row has them in the common layout, else None."""
    base = fields[0][1]
    X = np.ascontiguousarray(H[:, base:fields[-1][2]])
    mask, want = layout
    if not ((X.view(np.uint64) & mask) == want).all():
        return None
    out = []
    for _, lo, hi in fields:
        a, digits = lo - base, hi - lo - (2 if lo == 148 else 1)
        v = (X[:, a] & np.uint8(7)).astype(np.int64)
        for j in range(a + 1, a + digits):
            v <<= 3
            v |= X[:, j] & np.uint8(7)
        out.append(v)
    return out


def _word(H: np.ndarray, lo: int, value: bytes) -> np.ndarray:
    """Rows whose bytes at ``lo`` are ``value`` (at most 8 bytes)."""
    k = len(value)
    F = np.zeros((len(H), 8), np.uint8)
    F[:, :k] = H[:, lo:lo + k]
    return F.view(np.uint64).ravel() == np.frombuffer(value.ljust(8, b"\0"), np.uint64)[0]


def _formats(H: np.ndarray) -> np.ndarray:
    magic = np.ascontiguousarray(H[:, 257:265]).view(np.uint64).ravel()
    ustar = (magic & np.uint64(0xFFFFFFFFFFFF)) == np.frombuffer(b"ustar\0\0\0", np.uint64)[0]
    gnu = magic == np.frombuffer(b"ustar  \0", np.uint64)[0]
    f = np.full(len(H), _FORMAT_V7, np.int8)
    f[ustar] = _FORMAT_USTAR
    if ustar.any():
        f[ustar & _word(H, 508, b"tar\0")] = _FORMAT_STAR
    f[gnu] = _FORMAT_GNU
    return f


class _Batch:
    """Columns of the members read so far, kept as cheaply as the hot loop can append them:
    per row the normalised raw path, the data offset, the sha256 and the member's own header
    block; everything else is parsed from the headers a batch at a time, or recorded by the
    general path in the dicts (row -> value) where it differs from the header."""

    def __init__(self, layer: str, first: int) -> None:
        self.layer = layer
        self.first = first  # idx of the first row
        self.rows = 0
        self.paths: list[bytes] = []  # normalised raw paths of the rows not yet in a chunk
        self.path_chunks: list[pa.Array] = []  # earlier rows' paths (binary), in order
        self.offsets = array("q")  # offset_data
        self.sha = bytearray()  # raw sha256 digests, 32 bytes a row (zeros where there is none)
        self.nosha: list[int] = []  # rows without a digest (all but regular files)
        self.hdrs: list[Any] = []  # each member's own 512-byte header, in runs (bytes-like)
        self.links: dict[int, bytes] = {}  # raw link targets (hardlinks: normalised)
        self.kind: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.hoff: dict[int, int] = {}  # header offsets not 512 before the data
        self.uid: dict[int, int] = {}
        self.gid: dict[int, int] = {}
        self.uname: dict[int, bytes] = {}
        self.gname: dict[int, bytes] = {}
        self.mtime: dict[int, int] = {}
        self.xattrs: dict[int, list[tuple[str, bytes]]] = {}
        self.sparse: dict[int, list[tuple[int, int]]] = {}

    def __len__(self) -> int:
        return self.rows

    def add_paths(self, chunk: pa.Array) -> None:
        """Append the paths of rows the hot loop took, as one binary array."""
        if self.paths:
            self.path_chunks.append(pa.array(self.paths, pa.binary()))
            self.paths = []
        self.path_chunks.append(chunk)

    def path_column(self) -> pa.Array:
        """Every row's normalised raw path, in order (binary)."""
        chunks = self.path_chunks + ([pa.array(self.paths, pa.binary())] if self.paths else [])
        if not chunks:
            return pa.array([], pa.binary())
        return chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)

    def _fail(self, row: int, problem: str) -> CorruptLayer:
        at = self.hoff.get(row, self.offsets[row] - _BLOCK)
        return CorruptLayer(f"layer {self.layer}: member {self.first + row}: {problem} (header at offset {at})")

    def _numbers(self, H: np.ndarray, lo: int, hi: int, what: str, rows: np.ndarray | None = None,
                 octal_only: bool = False) -> np.ndarray:
        """A numeric field of every row (``rows``: of these rows only, others 0), validated."""
        sel = H[:, lo:hi] if rows is None else H[rows, lo:hi]
        v, ok = _octal_fields(sel)
        if not ok.all():
            where = np.arange(len(H)) if rows is None else np.flatnonzero(rows)
            for i in np.flatnonzero(~ok):
                raw = sel[i].tobytes()
                try:
                    v[i] = _go_octal(raw) if octal_only else _go_numeric(raw)
                except ValueError:
                    raise self._fail(int(where[i]), f"bad {what} field {raw!r}") from None
        if rows is None:
            return v
        out = np.zeros(len(H), np.int64)
        out[rows] = v
        return out

    def validate(self) -> dict[str, np.ndarray]:
        """Check every row's header as Go does (checksum, numeric fields); return the header
        matrix and the parsed fields. Raises ``CorruptLayer`` for the first bad row."""
        n = len(self)
        if len(self.hdrs) != 1:
            self.hdrs = [b"".join(self.hdrs)]
        H = np.frombuffer(self.hdrs[0], np.uint8).reshape(n, _BLOCK)
        fmt = _formats(H)
        ext = fmt != _FORMAT_V7
        num = self._numbers
        out: dict[str, np.ndarray] = {"H": H, "ext": ext}
        # the common layout of every numeric field at once (one matrix product); else field by field
        std = _common(H, _STD_FIELDS, _STD_LAYOUT)
        if std is not None:
            for (what, _, _), v in zip(_STD_FIELDS, std):
                out[what] = v
        else:
            for what, lo, hi in _STD_FIELDS:
                out[what] = num(H, lo, hi, what, octal_only=what == "checksum")
        dev = _common(H, _DEV_FIELDS, _DEV_LAYOUT) if ext.all() else None
        if dev is not None:
            out["devmajor"], out["devminor"] = dev
        else:
            out["devmajor"] = num(H, 329, 337, "devmajor", ext)
            out["devminor"] = num(H, 337, 345, "devminor", ext)
        chk = out["checksum"]
        unsigned = (H.sum(axis=1, dtype=np.uint32).astype(np.int64)
                    - H[:, 148:156].sum(axis=1, dtype=np.int64) + 256)
        for r in np.flatnonzero(chk != unsigned):  # Go also takes the signed sum
            blk = H[r].tobytes()
            if chk[r] != _signed_sum(blk):
                raise self._fail(int(r), "bad tar header checksum")
        size = out["size"]
        if (size < 0).any():
            raise self._fail(int(np.flatnonzero(size < 0)[0]), "negative size")
        star = fmt == _FORMAT_STAR
        if star.any():
            num(H, 476, 488, "atime", star)
            num(H, 488, 500, "ctime", star)
        return out

    def to_batch(self) -> pa.RecordBatch:
        v = self.validate()
        H, ext = v["H"], v["ext"]
        n = len(self)
        kinds = _KIND_OF[H[:, 156]]
        _override(kinds, self.kind)
        sizes = np.where(kinds == _FILE, v["size"], 0)
        _override(sizes, self.size)
        mode = v["mode"] & 0o7777
        uid = self._ids(v["uid"], self.uid, "uid")
        gid = self._ids(v["gid"], self.gid, "gid")
        mtime = v["mtime"]
        _override(mtime, self.mtime)
        dev = (kinds == _CHAR) | (kinds == _BLOCKDEV)
        devcols = []
        for what in ("devmajor", "devminor"):
            d = v[what]
            d[~dev] = 0
            devcols.append(pa.array(self._ids(d, {}, what), pa.int32(), mask=~dev))

        binary = self.path_column()
        try:
            path = binary.cast(pa.string())
            raw = pa.nulls(n, pa.binary())
        except (pa.ArrowInvalid, UnicodeDecodeError):
            paths = binary.to_pylist()
            disp = [_display(p) for p in paths]
            path = pa.array(disp, pa.string())
            raw = pa.array([None if d.encode("utf-8", "surrogatepass") == p else p
                            for d, p in zip(disp, paths)], pa.binary())
        parent, name, whiteout, hides = _names(path)

        if self.links:
            links = pa.array([_display(self.links[i]) if i in self.links else None for i in range(n)],
                             pa.string())
        else:
            links = pa.nulls(n, pa.string())
        xtype = SCHEMA.field("xattrs").type
        cols = [
            pa.repeat(pa.scalar(self.layer, pa.string()), n),
            pa.array(np.arange(self.first, self.first + n, dtype=np.int32)),
            path, parent, name, raw,
            pa.array(KINDS, pa.string()).take(pa.array(kinds)),
            pa.array(sizes),
            pa.array(mode.astype(np.int32)),
            pa.array(uid, pa.int32()), pa.array(gid, pa.int32()),
            self._user_names(H, 265, 297, ext, self.uname),
            self._user_names(H, 297, 329, ext, self.gname),
            pa.array(mtime),
            links,
            pa.array(np.frombuffer(self.offsets, np.int64)),
            _hex_column(self.sha, self.nosha),
            whiteout, hides,
            pa.array([self.xattrs.get(i) for i in range(n)], xtype) if self.xattrs else pa.nulls(n, xtype),
            devcols[0], devcols[1],
            pa.array([self.sparse.get(i) for i in range(n)], SPARSE_TYPE)
            if self.sparse else pa.nulls(n, SPARSE_TYPE),
        ]
        return pa.RecordBatch.from_arrays(cols, schema=SCHEMA)

    def _ids(self, v: np.ndarray, over: dict[int, int], what: str) -> np.ndarray:
        _override(v, over)
        bad = (v < -(1 << 31)) | (v >= (1 << 31))
        if bad.any():
            raise self._fail(int(np.flatnonzero(bad)[0]), f"{what} out of range")
        return v.astype(np.int32)

    def _user_names(self, H: np.ndarray, lo: int, hi: int, ext: np.ndarray,
                    over: dict[int, bytes]) -> pa.Array:
        F = np.array(H[:, lo:hi])
        F[~ext] = 0  # Go reads no user names in a V7 header
        if (F == F[0]).all():
            v = _cstr(F[0].tobytes())
            col = pa.repeat(pa.scalar(_display(v) if v else None, pa.string()), len(F))
        else:
            uniq, inv = np.unique(F.view(f"V{hi - lo}").ravel(), return_inverse=True)
            vals = [_cstr(u.tobytes()) for u in uniq]
            col = pa.array([_display(x) if x else None for x in vals], pa.string()).take(
                pa.array(inv.astype(np.int32).ravel()))
        if over:
            py = col.to_pylist()
            for r, x in over.items():
                py[r] = _display(x) if x else None
            col = pa.array(py, pa.string())
        return col


def _hex_column(raw: bytes | bytearray, missing: list[int]) -> pa.Array:
    """Raw 32-byte digests, one a row, as a column of 64-character lowercase hex strings;
    the rows in ``missing`` are null."""
    n = len(raw) // 32
    offsets = np.arange(0, 64 * n + 1, 64, dtype=np.int32)
    valid = None
    if missing:
        mask = np.ones(n, bool)
        mask[missing] = False
        valid = pa.array(mask).buffers()[1]
    return pa.Array.from_buffers(pa.string(), n, [valid, pa.py_buffer(offsets), pa.py_buffer(binascii.hexlify(raw))],
                                 null_count=len(missing))


def _override(v: np.ndarray, over: dict[int, int]) -> None:
    if over:
        v[np.fromiter(over.keys(), np.int64, len(over))] = np.fromiter(over.values(), np.int64, len(over))


_NAME = 100


def _fast_names(H: np.ndarray) -> tuple[pa.Array, int]:
    """The hot loop's names, vectorised: ``/`` + the header's name field up to its first NUL,
    one trailing ``/`` dropped. Returns them as a binary array and the number of leading rows
    whose name is already normal (no ``//``, no ``/.``, not ending in ``/``): a row after that
    must be read the careful way."""
    rows = len(H)
    for width in (32, _NAME):  # most names are short: look for their NUL in a narrow slice first
        zero = H[:, :width] == 0
        has = zero.any(axis=1)
        if width == _NAME or has.all():
            break
    L = np.where(has, zero.argmax(axis=1), _NAME)  # name lengths (>= 1 here)
    w = int(L.max())
    N = H[:, :w]
    r = np.arange(rows)
    L = L - (N[r, L - 1] == 47)  # one trailing '/' dropped
    S = np.empty((rows, w + 1), np.uint8)
    S[:, 0] = 47
    S[:, 1:] = N
    keep = np.arange(w + 1) < (L + 1)[:, None]
    slash = S[:, :-1] == 47
    nxt = S[:, 1:]
    bad = (slash & ((nxt == 47) | (nxt == 46)) & keep[:, 1:]).any(axis=1)  # '//' or '/.'
    bad |= S[r, L] == 47  # ends in '/' (a name of '/' or ending in '//')
    good = int(bad.argmax()) if bad.any() else rows
    lengths = (L + 1).astype(np.int32)
    offsets = np.empty(rows + 1, np.int32)
    offsets[0] = 0
    np.cumsum(lengths, out=offsets[1:])
    data = S[keep]
    return pa.Array.from_buffers(pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]), good


def _signed_sum(blk: bytes) -> int:
    return sum(c - 256 if c & 0x80 else c for c in blk[:148] + blk[156:]) + 256


def _names(path: pa.Array) -> tuple[pa.Array, ...]:
    """parent, name, whiteout and hides of every (display) path."""
    import pyarrow.compute as pc

    n = len(path)
    sp = pc.split_pattern(path, "/", max_splits=1, reverse=True)
    parent = pc.list_element(sp, 0)
    name = pc.list_element(sp, 1)
    parent = pc.if_else(pc.equal(parent, ""), pa.scalar("/"), parent)
    is_root = pc.equal(path, "/")
    if pc.any(is_root).as_py():
        parent = pc.if_else(is_root, pa.scalar(None, pa.string()), parent)
        name = pc.if_else(is_root, pa.scalar("/"), name)
    wh = pc.starts_with(name, ".wh.")
    if not pc.any(wh).as_py():
        return parent, name, pa.repeat(pa.scalar("none"), n), pa.nulls(n, pa.string())
    kinds: list[str] = []
    hides: list[str | None] = []
    for par, nm, w in zip(parent.to_pylist(), name.to_pylist(), wh.to_pylist()):
        if not w:
            kinds.append("none")
            hides.append(None)
        elif nm == ".wh..wh..opq":
            kinds.append("opaque")
            hides.append(par)
        else:
            kinds.append("whiteout")
            hides.append(posixpath.join(par, nm[4:]))
    return parent, name, pa.array(kinds, pa.string()), pa.array(hides, pa.string())


# --------------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------------


class _Reader:
    """A forward-only buffer over the layer stream. ``buf[pos:]`` is unread; ``base`` is the
    absolute offset of ``buf[0]``."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.buf = b""
        self.pos = 0
        self.base = 0

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def need(self, k: int) -> bool:
        """Make at least ``k`` unread bytes available; False at EOF before that."""
        have = len(self.buf) - self.pos
        if have >= k:
            return True
        parts = [self.buf[self.pos:]] if have else []
        self.base += self.pos
        self.pos = 0
        while have < k:
            chunk = self.raw.read(max(CHUNK, k - have))
            if not chunk:
                self.buf = b"".join(parts)
                return False
            parts.append(chunk)
            have += len(chunk)
        self.buf = parts[0] if len(parts) == 1 else b"".join(parts)
        return True

    def take(self, k: int) -> bytes:
        if not self.need(k):
            raise EOFError(f"unexpected end of data at offset {self.base + len(self.buf)}")
        b = self.buf[self.pos:self.pos + k]
        self.pos += k
        return b

    def block(self) -> bytes | None:
        """The next 512-byte block; None at a clean end of the stream."""
        if not self.need(_BLOCK):
            if len(self.buf) == self.pos:
                return None
            raise EOFError(f"unexpected end of data at offset {self.base + len(self.buf)}")
        return self.take(_BLOCK)

    def chunks(self, k: int) -> Iterator[bytes]:
        """The next ``k`` bytes, as pieces of the buffer."""
        while k > 0:
            have = len(self.buf) - self.pos
            if have == 0:
                if not self.need(1):
                    raise EOFError(f"unexpected end of data at offset {self.offset}")
                have = len(self.buf) - self.pos
            n = min(k, have)
            yield memoryview(self.buf)[self.pos:self.pos + n]  # type: ignore[misc]
            self.pos += n
            k -= n

    def skip(self, k: int, h: Any = None) -> None:
        for c in self.chunks(k):
            if h is not None:
                h.update(c)

    def skip_padding(self, k: int) -> bool:
        """Consume up to ``k`` padding bytes; False when the stream ends first."""
        if self.need(k):
            self.pos += k
            return True
        self.pos = len(self.buf)
        return False


# --------------------------------------------------------------------------------------------
# The indexer
# --------------------------------------------------------------------------------------------


class _End(Exception):
    """The archive ended (end-of-archive marker, or a clean end of the stream)."""


def index_layer(stream: BinaryIO, layer: str, stats: LayerStats | None = None,
                batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Yield record batches (schema ``SCHEMA``) for every member of the tar read from
    ``stream``. ``layer`` is the diff_id string put in every row. Reads ustar, GNU, STAR and
    PAX (see the module docstring for how, and what is refused). Raises ``CorruptLayer`` on a
    truncated or malformed tar. Stops at the end-of-archive marker; the caller drains the rest
    (padding) if it hashes the stream."""
    for make in index_layer_deferred(stream, layer, stats, batch_rows):
        yield make()


def index_layer_deferred(stream: BinaryIO, layer: str, stats: LayerStats | None = None,
                         batch_rows: int = BATCH_ROWS) -> Iterator[Callable[[], pa.RecordBatch]]:
    """``index_layer`` in two halves: the stream is read and cut into members here, and each
    yielded callable then checks that batch's headers (raising ``CorruptLayer`` for the first
    bad one) and makes its record batch. The callables may run on another thread (most of
    their work is numpy and Arrow, without the GIL), one at a time and in order; a header
    problem they find lies before any problem this generator raises later."""
    ix = _Indexer(stream, layer, stats if stats is not None else LayerStats(), batch_rows)
    try:
        yield from ix.run()
    except EOFError as e:
        raise CorruptLayer(f"layer {layer}: truncated or corrupt tar: {e}") from e

_FAST_OF = np.zeros(256, bool)
_FAST_OF[list(_FAST)] = True
_DATA_OF = np.zeros(256, bool)
_DATA_OF[list(_FAST_DATA)] = True
_NO_SHA = bytes(32)


class _Plan:
    """Each 512-byte block of a buffer (from ``origin``) read as if it were a plain header:
    ``nxt[k]`` is the block of the next header when block ``k`` has a type in ``_FAST`` and
    a size of 11 octal digits, and its data and padding end inside the buffer, else -1;
    ``size`` its size field. The hot loop follows ``nxt`` from a real header (and checks the
    rest of a plain header, a name and no prefix, on the run it took); what the other blocks
    hold does not matter. Only bytes 124-160 of each block are read: one strided copy, as a
    buffer just filled on another thread is mostly not in this core's cache."""

    __slots__ = ("buf", "origin", "blocks", "nxt", "size")

    def __init__(self, buf: bytes, origin: int, m: int) -> None:
        A = np.frombuffer(buf, np.uint8, count=m << 9, offset=origin).reshape(m, _BLOCK)
        G = np.ascontiguousarray(A[:, 124:160])  # size, mtime, checksum, type
        t = G[:, 32]
        S = G[:, :11]
        ok = _FAST_OF[t] & ((G[:, 11] & 0xDF) == 0)
        ok &= ((S - np.uint8(48)) <= 7).all(axis=1)
        size = (S[:, 0] & np.uint8(7)).astype(np.int64)
        for j in range(1, 11):
            size <<= 3
            size |= S[:, j] & np.uint8(7)
        nxt = np.arange(1, m + 1, dtype=np.int64)
        nxt += np.where(_DATA_OF[t], (size + 511) >> 9, 0)
        ok &= nxt <= m
        nxt[~ok] = -1
        self.buf, self.origin, self.blocks, self.size = buf, origin, A, size
        self.nxt = memoryview(np.append(nxt, -1).data)  # block m: past the buffer


class _Indexer:
    def __init__(self, stream: BinaryIO, layer: str, stats: LayerStats, batch_rows: int) -> None:
        self.rd = _Reader(stream)
        self.layer = layer
        self.stats = stats
        self.batch_rows = batch_rows
        self.idx = 0
        self.holes = 0  # sparse hole bytes hashed so far
        self.b = _Batch(layer, 0)
        self._plan: _Plan | None = None

    def _flush(self) -> Callable[[], pa.RecordBatch]:
        b = self.b
        self.b = _Batch(self.layer, self.idx)
        stats = self.stats

        def make() -> pa.RecordBatch:
            batch = b.to_batch()
            stats.file_bytes += pc.sum(batch.column("size")).as_py() or 0
            return batch
        return make

    def run(self) -> Iterator[Callable[[], pa.RecordBatch]]:
        ended = False
        while not ended:
            self._fast()
            if len(self.b) >= self.batch_rows:
                yield self._flush()
                continue
            try:
                ended = not self._member()
            except (CorruptLayer, EOFError):
                if len(self.b):  # an earlier member may be what went wrong: report that one
                    self.b.validate()
                raise
        self.stats.members = self.idx
        if len(self.b):
            yield self._flush()

    def _fast(self) -> None:
        """The hot path: plain ustar/GNU members without extensions whose header, data and
        padding are all in the buffer. Where each block of the buffer would lead if it were
        such a header is worked out for the whole buffer at once (``_plan``); following that
        chain from the current position costs one lookup a member, and the files it
        passes are then hashed in one comprehension. The names, the other fields and the
        strict checks come vectorised afterwards (``_fast_names``, ``_Batch.validate``). A
        member whose name or hardlink target needs more than a leading ``/`` added and a
        trailing ``/`` dropped ends the run there; ``_member`` takes it."""
        rd, b = self.rd, self.b
        buf, p = rd.buf, rd.pos
        room = self.batch_rows - len(b)
        if room <= 0 or self.idx == 0:  # the first member goes the careful way ("not a tar")
            return
        plan = self._plan
        if plan is None or plan.buf is not buf or p < plan.origin or (p - plan.origin) & 511:
            m = (len(buf) - p) >> 9
            if m < 2:
                return
            plan = self._plan = _Plan(buf, p, m)
        nxt = plan.nxt
        i = (p - plan.origin) >> 9
        chain: list[int] = []
        put = chain.append
        for _ in range(room):
            j = nxt[i]
            if j < 0:
                break
            put(i)
            i = j
        count = len(chain)
        if not count:
            return
        I = np.array(chain, np.int64)  # noqa: E741 - block numbers of the headers, from origin
        H = plan.blocks[I]
        plain = (H[:, 0] != 0) & (H[:, 345] == 0)  # a name (not a zero block), no prefix
        if not plain[0]:
            return
        if not plain.all():
            count = int(plain.argmin())
            i = chain[count]
            I, H = I[:count], H[:count]
        names, good = _fast_names(H)
        t = H[:, 156]
        linked = np.flatnonzero((t == 49) | (t == 50))  # hardlinks, symlinks
        links: dict[int, bytes] = {}
        for r in linked.tolist():
            if r >= good:
                break
            row = H[r, 157:257].tobytes()
            e = row.find(0)
            link = row if e < 0 else row[:e]
            if t[r] == 49:
                ls = b"/" + link
                if not link or b"//" in ls or b"/." in ls or ls[-1] == 47:
                    good = r
                    break
                link = ls
            links[r] = link
        if good < count:  # end the run at the first member that needs the careful way
            count = good
            if not count:
                return
            i = chain[count]
            I, H, t, names = I[:count], H[:count], t[:count], names[:count]
        start = plan.origin + (I << 9) + _BLOCK  # where each member's data starts in buf
        data = _DATA_OF[t]
        rows = np.flatnonzero(data)
        digests = _NO_SHA * count
        if len(rows):
            lo = start[rows]
            hi = lo + plan.size[I[rows]]
            small = _small_sha256
            if int((hi - lo).max()) <= 4096:  # the common case: Python's own SHA-256 costs less
                raw = b"".join([small(buf[a:z]).digest() for a, z in zip(lo.tolist(), hi.tolist())])
            else:
                big, mv = hashlib.sha256, memoryview(buf)
                raw = b"".join([(small(buf[a:z]) if z - a <= 4096 else big(mv[a:z])).digest()
                                for a, z in zip(lo.tolist(), hi.tolist())])
            if len(rows) == count:
                digests = raw
            else:
                D = np.empty((count, 32), np.uint8)
                D[~data] = 0
                D[rows] = np.frombuffer(raw, np.uint8).reshape(-1, 32)
                digests = D.tobytes()
        row0 = len(b)
        for r, v in links.items():
            b.links[row0 + r] = v
        if len(rows) < count:
            b.nosha += (np.flatnonzero(~data) + row0).tolist()
        b.add_paths(names)
        b.sha += digests
        b.offsets.frombytes((start + rd.base).tobytes())
        b.hdrs.append(H)  # a copy already (fancy indexing)
        b.rows += count
        rd.pos = plan.origin + (i << 9)
        self.idx += count

    def _fail(self, problem: str, at: int) -> CorruptLayer:
        return CorruptLayer(f"layer {self.layer}: member {self.idx}: {problem} (header at offset {at})")

    def _special(self, size: int, at: int, what: str) -> bytes:
        """The data of a PAX header or GNU long name/link (Go's readSpecialFile), padding skipped."""
        if size > MAX_SPECIAL:
            raise self._fail(f"{what} larger than {MAX_SPECIAL} bytes", at)
        data = self.rd.take(size)
        self.rd.skip_padding(-size % _BLOCK)
        return data

    def _check(self, blk: bytes, at: int) -> int:
        """Verify one header's checksum and numeric fields as Go does; return its format."""
        try:
            chk = _go_octal(blk[148:156])
        except ValueError:
            chk = -1
        u = sum(blk) - sum(blk[148:156]) + 256
        s = u - 256 * sum(1 for c in blk[:148] + blk[156:] if c & 0x80)
        if chk not in (u, s):
            if self.idx == 0 and at == 0:
                raise CorruptLayer(f"layer {self.layer}: not a tar stream")
            raise self._fail("bad tar header checksum", at)
        if blk[257:263] == b"ustar\0":
            fmt = _FORMAT_STAR if blk[508:512] == b"tar\0" else _FORMAT_USTAR
        elif blk[257:265] == b"ustar  \0":
            fmt = _FORMAT_GNU
        else:
            fmt = _FORMAT_V7
        fields = [(124, 136, "size"), (100, 108, "mode"), (108, 116, "uid"), (116, 124, "gid"),
                  (136, 148, "mtime")]
        if fmt != _FORMAT_V7:
            fields += [(329, 337, "devmajor"), (337, 345, "devminor")]
        if fmt == _FORMAT_STAR:
            fields += [(476, 488, "atime"), (488, 500, "ctime")]
        for lo, hi, what in fields:
            try:
                _go_numeric(blk[lo:hi])
            except ValueError:
                raise self._fail(f"bad {what} field {blk[lo:hi]!r}", at) from None
        return fmt

    def _member(self) -> bool:
        """Read one member the general way and append its row; False at the end of the archive."""
        rd = self.rd
        pax: dict[bytes, bytes] | None = None
        longname = longlink = b""
        while True:
            at = rd.offset
            blk = rd.block()
            if blk is None:
                return False
            if blk == _ZERO:
                nxt = rd.block()  # Go: a zero block must be followed by another, or the end
                if nxt is not None and nxt != _ZERO:
                    raise self._fail("a zero block followed by data", at)
                return False
            fmt = self._check(blk, at)
            t = blk[156]
            size = _go_numeric(blk[124:136])
            if size < 0:
                raise self._fail("negative size", at)
            if t == _T_PAX or t == _T_GLOBAL:
                try:
                    recs = _parse_pax(self._special(size, at, "pax header"))
                except ValueError as e:
                    raise self._fail(str(e), at) from None
                if t == _T_PAX:
                    pax = recs  # several in a row: only the last applies
                else:  # a global header is a member of its own to Go, which runtimes skip
                    pax, longname, longlink = None, b"", b""
                continue
            if t == _T_LONGNAME:
                longname = _cstr(self._special(size, at, "GNU long name"))
                continue
            if t == _T_LONGLINK:
                longlink = _cstr(self._special(size, at, "GNU long link"))
                continue
            break
        return self._entry(blk, at, fmt, size, pax, longname, longlink)

    def _entry(self, blk: bytes, at: int, fmt: int, size: int, pax: dict[bytes, bytes] | None,
               longname: bytes, longlink: bytes) -> bool:
        rd, b = self.rd, self.b
        row = len(b)
        t = blk[156]
        name = _cstr(blk[0:100])
        if fmt in (_FORMAT_USTAR, _FORMAT_STAR):
            prefix = _cstr(blk[345:500] if fmt == _FORMAT_USTAR else blk[345:476])
            if prefix:
                name = prefix + b"/" + name
        elif fmt == _FORMAT_GNU:  # Go reads the prefix of a GNU header only when it was
            prefix = _cstr(blk[345:500])  # mangled by old Go writers (bad atime/ctime)
            if prefix and prefix.isascii() and not _gnu_times_ok(blk):
                name = prefix + b"/" + name
        link = _cstr(blk[157:257])
        xattrs: list[tuple[str, bytes]] = []
        try:
            if pax:
                for k, v in pax.items():
                    if not v:
                        continue  # Go keeps the header's value
                    if k == b"path":
                        name = v
                    elif k == b"linkpath":
                        link = v
                    elif k == b"uname":
                        b.uname[row] = v
                    elif k == b"gname":
                        b.gname[row] = v
                    elif k == b"uid":
                        b.uid[row] = _go_int(v, "pax uid")
                    elif k == b"gid":
                        b.gid[row] = _go_int(v, "pax gid")
                    elif k == b"mtime":
                        b.mtime[row] = _pax_time(v)
                    elif k in (b"atime", b"ctime"):
                        _pax_time(v)
                    elif k == b"size":
                        size = _go_int(v, "pax size")
                    elif k.startswith(_XATTR):
                        xattrs.append((k[len(_XATTR):].decode("utf-8", "surrogateescape"), v))
            if size < 0:
                raise ValueError("negative size")
            if longname:
                name = longname
            if longlink:
                link = longlink
            if t == _T_REGA and name.endswith(b"/"):
                t = ord("5")
            stored = 0 if t in _HEADER_ONLY else size  # the bytes that follow the header
            regions: list[tuple[int, int]] | None = None
            if t == _T_SPARSE:
                regions, size = self._old_gnu_sparse(blk, at, fmt)
            elif pax:
                sp = _pax_sparse(pax)
                if sp is not None:
                    if t in _HEADER_ONLY:
                        raise ValueError("sparse map on a member without data")
                    is1x0, sname, ssize = sp
                    if sname:
                        name = sname
                    if ssize is not None:
                        size = ssize
                    if is1x0:
                        regions, used = self._map_1x0(stored)
                        stored -= used
                    else:
                        regions = _map_0x1(pax)
            if regions is not None:
                if len(regions) > MAX_SPARSE_ENTRIES:
                    raise ValueError(f"sparse map over {MAX_SPARSE_ENTRIES} regions")
                if _sparse.check(regions, size) != stored:
                    raise ValueError("sparse map does not match the stored data")
        except ValueError as e:
            raise self._fail(str(e), at) from None

        kind = _KIND.get(t, _FILE)
        offset = rd.offset
        sha = None
        if kind == _FILE:
            h = hashlib.sha256()
            if regions is None:
                rd.skip(stored, h)
            else:
                holes = size - stored
                if self.holes + holes > MAX_HOLE_BYTES:
                    raise self._fail(f"sparse files expand past {MAX_HOLE_BYTES} bytes of holes", at)
                self.holes += holes
                for piece in _sparse.expand(rd.chunks(stored), regions, size):
                    h.update(piece)
                b.sparse[row] = regions
            sha = h.digest()
        else:
            rd.skip(stored)
        pad = -(rd.offset - offset) % _BLOCK if kind == _FILE or stored else 0
        # a stream may end right after the last member's data, without padding or an
        # end-of-archive marker (umoci insert writes such layers; Go's reader takes them)
        ended = bool(pad) and not rd.skip_padding(pad)

        if kind == _HARDLINK:
            b.links[row] = normalize_bytes(link)
        elif kind == _SYMLINK:
            b.links[row] = link
        b.paths.append(normalize_bytes(name))
        b.rows += 1
        b.kind[row] = kind
        b.size[row] = size if kind == _FILE else 0
        b.offsets.append(offset)
        if at != offset - _BLOCK:
            b.hoff[row] = at
        if sha is None:
            b.nosha.append(row)
            b.sha += _NO_SHA
        else:
            b.sha += sha
        b.hdrs.append(blk)
        if xattrs:
            b.xattrs[row] = xattrs
        self.idx += 1
        return not ended

    def _old_gnu_sparse(self, blk: bytes, at: int, fmt: int) -> tuple[list[tuple[int, int]], int]:
        """Go's readOldGNUSparseMap: the map in the header and its extension blocks."""
        if fmt != _FORMAT_GNU:
            raise ValueError("sparse member in a non-GNU header")
        size = _go_numeric(blk[483:495])
        regions: list[tuple[int, int]] = []
        area, entries = blk[386:483], 4
        while True:
            for i in range(entries):
                e = area[i * 24:(i + 1) * 24]
                if e[0] == 0:
                    break
                regions.append((_go_numeric(e[:12]), _go_numeric(e[12:])))
                if len(regions) > MAX_SPARSE_ENTRIES:
                    raise ValueError(f"sparse map over {MAX_SPARSE_ENTRIES} regions")
            if not area[entries * 24]:
                return regions, size
            ext = self.rd.block()
            if ext is None:
                raise EOFError("end of data in a sparse header")
            area, entries = ext, 21

    def _map_1x0(self, stored: int) -> tuple[list[tuple[int, int]], int]:
        """Go's readGNUSparseMap1x0: the map at the start of the data, in whole blocks."""
        parts: list[bytes] = []
        lines = 0
        used = 0

        def feed(want: int) -> None:
            nonlocal lines, used
            while lines < want:
                if used + _BLOCK > stored:
                    raise ValueError("sparse map runs past the member's data")
                blk = self.rd.take(_BLOCK)
                parts.append(blk)
                lines += blk.count(b"\n")
                used += _BLOCK

        feed(1)
        first, _, text = b"".join(parts).partition(b"\n")
        count = _go_int(first, "sparse map size")
        if count < 0 or count > MAX_SPARSE_ENTRIES:
            raise ValueError("bad sparse map size")
        feed(2 * count + 1)
        text = b"".join(parts).partition(b"\n")[2]
        toks = text.split(b"\n", 2 * count)[:2 * count]
        regions = [(_go_int(toks[i], "sparse offset"), _go_int(toks[i + 1], "sparse length"))
                   for i in range(0, 2 * count, 2)]
        return regions, used


def _gnu_times_ok(blk: bytes) -> bool:
    for lo, hi in ((345, 357), (357, 369)):
        if blk[lo]:
            try:
                _go_numeric(blk[lo:hi])
            except ValueError:
                return False
    return True


def _pax_sparse(pax: dict[bytes, bytes]) -> tuple[bool, bytes, int | None] | None:
    """Go's readGNUSparsePAXHeaders: (is 1.0, real name, real size), or None if not sparse."""
    major, minor = pax.get(b"GNU.sparse.major", b""), pax.get(b"GNU.sparse.minor", b"")
    if major == b"0" and minor in (b"0", b"1"):
        is1x0 = False
    elif major == b"1" and minor == b"0":
        is1x0 = True
    elif major or minor:
        return None  # an unknown version: not sparse to Go
    elif pax.get(b"GNU.sparse.map"):
        is1x0 = False
    else:
        return None
    size = pax.get(b"GNU.sparse.size") or pax.get(b"GNU.sparse.realsize")
    return is1x0, pax.get(b"GNU.sparse.name", b""), (
        _go_int(size, "sparse size") if size else None)


def _map_0x1(pax: dict[bytes, bytes]) -> list[tuple[int, int]]:
    count = _go_int(pax.get(b"GNU.sparse.numblocks", b""), "sparse numblocks")
    if count < 0 or count > MAX_SPARSE_ENTRIES:
        raise ValueError("bad sparse numblocks")
    m = pax.get(b"GNU.sparse.map", b"")
    toks = m.split(b",") if m else []
    if len(toks) != 2 * count:
        raise ValueError("sparse map does not match numblocks")
    return [(_go_int(toks[i], "sparse offset"), _go_int(toks[i + 1], "sparse length"))
            for i in range(0, len(toks), 2)]
