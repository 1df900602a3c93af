"""The content-addressed layer cache.

Each layer is kept once, named by its diff_id (the digest of the uncompressed tar), however many
blob digests it arrived under. The file is the uncompressed tar cut into independent zstd frames
of ``FRAME_SIZE`` bytes, followed by a seek table in a skippable frame (the zstd "seekable"
format: ``zstd -d`` reads it as a plain zstd file). Reading a member decodes only the frames that
hold it, so the cost of a read is bounded wherever the member sits in the layer.

Writes are atomic: ``LayerWriter`` writes a temporary file, hashes the uncompressed bytes as they
pass, and ``finish(diff_id)`` refuses a mismatch; ``BlobStore.adopt`` renames the verified file
into place.
"""
from __future__ import annotations

import bisect
import hashlib
import os
import struct
import tempfile
import threading
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .digest import Digest
from .errors import DigestMismatch, StoreError

FRAME_SIZE = 1 << 20  # uncompressed bytes per zstd frame

_SKIPPABLE_MAGIC = 0x184D2A5E
_SEEKABLE_MAGIC = 0x8F92EAB1
_FOOTER = struct.Struct("<IBI")  # number of frames, descriptor, seekable magic
_RECENT_FRAMES = 4  # decoded frames a StoredLayer keeps for the next small read


class LayerWriter:
    """Receives the uncompressed tar of one layer (``write``), keeps it as seekable zstd in a
    temporary file in ``tmpdir``, and hashes it. ``finish(expected)`` verifies and closes;
    ``abort()`` deletes the temporary file."""

    def __init__(self, tmpdir: str, level: int | None = None, frame_size: int = FRAME_SIZE,
                 threaded: bool = True) -> None:
        import zstandard

        if level is None:  # $LAYERDB_ZSTD_LEVEL, default 1 (see settings)
            from .settings import settings

            level = settings().zstd_level

        os.makedirs(tmpdir, exist_ok=True)
        fd, self.tmp_path = tempfile.mkstemp(dir=tmpdir, suffix=".zst.tmp")
        self._f = os.fdopen(fd, "wb", buffering=1 << 20)
        self._cctx = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._frame_size = frame_size
        self._buf = bytearray()
        self._table: list[tuple[int, int]] = []  # (compressed, decompressed) per frame
        self._hash = hashlib.sha256()
        self.size = 0  # uncompressed bytes
        self.stored_size = 0
        # Frames are compressed on a helper thread (zstd releases the GIL), so compressing
        # overlaps with the reader's decompressing, hashing and indexing. In-flight frames
        # are bounded, so memory stays a few frames.
        self._level = level
        self._pool: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=1) if threaded else None)
        self._pending: deque[tuple[Future, int]] = deque()
        self._local = threading.local()

    def write(self, data: bytes) -> None:
        """Append ``data`` (bytes: frames of it may be compressed later, on the helper thread)."""
        self.size += len(data)
        fs = self._frame_size
        if not self._buf and len(data) % fs == 0:  # the common case: whole frames, no copy
            if len(data) == fs:
                self._emit(data)
            else:
                mv = memoryview(data)
                for i in range(0, len(data), fs):
                    self._emit(mv[i:i + fs])
            return
        buf = self._buf
        buf += data
        if len(buf) >= fs:
            mv = memoryview(buf)
            n = (len(buf) // fs) * fs
            for i in range(0, n, fs):
                self._emit(bytes(mv[i : i + fs]))
            mv.release()
            del buf[:n]

    def _compress(self, chunk: bytes | memoryview) -> bytes:
        # runs on the helper thread, one frame at a time and in order, so hashing here
        # keeps the stream's order
        self._hash.update(chunk)
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            import zstandard

            cctx = self._local.cctx = zstandard.ZstdCompressor(
                level=self._level, write_content_size=True)
        return cctx.compress(chunk)

    def _emit(self, chunk: bytes | memoryview) -> None:
        if self._pool is None:
            self._hash.update(chunk)
            comp = self._cctx.compress(chunk)
            self._f.write(comp)
            self._table.append((len(comp), len(chunk)))
            return
        self._pending.append((self._pool.submit(self._compress, chunk), len(chunk)))
        while len(self._pending) > 2:
            self._write_one()

    def _write_one(self) -> None:
        fut, n = self._pending.popleft()
        comp = fut.result()
        self._f.write(comp)
        self._table.append((len(comp), n))

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def finish(self, expected: Digest | None = None) -> Digest:
        """Flush, write the seek table, close. Return the diff_id; raise ``DigestMismatch``
        (and delete the file) when it differs from ``expected``."""
        if self._buf:
            self._emit(bytes(self._buf))
            self._buf = bytearray()
        while self._pending:
            self._write_one()
        self._shutdown()
        entries = b"".join(struct.pack("<II", c, d) for c, d in self._table)
        footer = _FOOTER.pack(len(self._table), 0, _SEEKABLE_MAGIC)
        body = entries + footer
        self._f.write(struct.pack("<II", _SKIPPABLE_MAGIC, len(body)) + body)
        self._f.flush()
        self._f.close()
        self.stored_size = os.path.getsize(self.tmp_path)
        got = Digest.from_hex(self._hash.hexdigest())
        if expected is not None and got != expected:
            self.abort()
            raise DigestMismatch(f"layer {expected}: uncompressed content hashes to {got}")
        return got

    def abort(self) -> None:
        self._pending.clear()
        self._shutdown()
        try:
            self._f.close()
        except Exception:
            pass
        try:
            os.unlink(self.tmp_path)
        except FileNotFoundError:
            pass


class StoredLayer:
    """Random access to one cached layer's uncompressed tar."""

    def __init__(self, path: str, diff_id: Digest) -> None:
        self.diff_id = diff_id
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as e:
            raise StoreError(f"layer {diff_id} is not in the cache") from e
        try:
            self._load_table()
        except Exception:
            os.close(self._fd)
            raise

    def _load_table(self) -> None:
        end = os.fstat(self._fd).st_size
        if end < _FOOTER.size + 8:
            raise StoreError(f"cached layer {self.diff_id} is damaged (too short)")
        n, _desc, magic = _FOOTER.unpack(os.pread(self._fd, _FOOTER.size, end - _FOOTER.size))
        if magic != _SEEKABLE_MAGIC:
            raise StoreError(f"cached layer {self.diff_id} is damaged (no seek table)")
        raw = os.pread(self._fd, 8 * n, end - _FOOTER.size - 8 * n)
        comp_off = [0]
        dec_off = [0]
        for i in range(n):
            c, d = struct.unpack_from("<II", raw, 8 * i)
            comp_off.append(comp_off[-1] + c)
            dec_off.append(dec_off[-1] + d)
        self._comp_off = comp_off
        self._dec_off = dec_off
        self.size = dec_off[-1]
        self._recent: dict[int, bytes] = {}

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> StoredLayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _frame(self, i: int) -> bytes:
        """Frame ``i`` decoded; the last few are kept, so reading many small members that
        share a frame (a tar stream of a tree, in path order) decodes it once."""
        cache = self._recent
        got = cache.get(i)
        if got is not None:
            return got
        out = self._decode(i)
        cache[i] = out
        if len(cache) > _RECENT_FRAMES:
            del cache[next(iter(cache))]
        return out

    def _decode(self, i: int) -> bytes:
        import zstandard

        start, end = self._comp_off[i], self._comp_off[i + 1]
        data = os.pread(self._fd, end - start, start)
        try:
            out = zstandard.ZstdDecompressor().decompress(data)
        except zstandard.ZstdError as e:
            raise StoreError(f"cached layer {self.diff_id} is damaged (frame {i}): {e}") from e
        if len(out) != self._dec_off[i + 1] - self._dec_off[i]:
            raise StoreError(f"cached layer {self.diff_id} is damaged (frame {i} size)")
        return out

    def iter_range(self, offset: int, size: int) -> Iterator[bytes]:
        """Yield the bytes ``[offset, offset+size)`` of the uncompressed tar, frame by frame.
        Only the frames that overlap the range are read and decoded. A range of more than a
        few frames is decoded one frame ahead on a helper thread (zstd releases the GIL), so
        the caller's hashing and writing overlap with decoding."""
        if size <= 0:
            return
        if offset < 0 or offset + size > self.size:
            raise StoreError(
                f"cached layer {self.diff_id}: range {offset}+{size} is past its end {self.size}")
        i = bisect.bisect_right(self._dec_off, offset) - 1
        last = bisect.bisect_right(self._dec_off, offset + size - 1) - 1
        frames: Iterator[bytes]
        if last - i >= 3:
            frames = self._frames_ahead(i, last)
        else:
            frames = (self._frame(k) for k in range(i, last + 1))
        pos, end = offset, offset + size
        for frame in frames:
            base = self._dec_off[i]
            lo, hi = pos - base, min(end - base, len(frame))
            yield frame[lo:hi] if (lo or hi != len(frame)) else frame
            pos = base + hi
            i += 1

    def _frames_ahead(self, first: int, last: int) -> Iterator[bytes]:
        """Frames ``first..last`` in order, each decoded while the previous one is used."""
        for _, frame in self._decode_ahead(range(first, last + 1)):
            yield frame

    def _decode_ahead(self, frames: Sequence[int], depth: int = 2
                      ) -> Generator[tuple[int, bytes], None, None]:
        """``(i, frame i decoded)`` for each ``i`` of ``frames`` in order, decoded ``depth``
        frames ahead on a helper thread (zstd releases the GIL)."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending: deque[tuple[int, Future]] = deque()
            k = 0
            while k < len(frames) or pending:
                while k < len(frames) and len(pending) < depth:
                    pending.append((frames[k], pool.submit(self._decode, frames[k])))
                    k += 1
                i, fut = pending.popleft()
                yield i, fut.result()

    def iter_ranges(self, ranges: Sequence[tuple[int, int]]) -> Iterator[tuple[int, memoryview]]:
        """Read many ``(offset, size)`` ranges of the uncompressed tar in one sequential pass:
        yield ``(k, piece)`` where ``k`` indexes ``ranges`` and the pieces of range ``k`` come
        one after the other, in order, ranges in offset order (ties: order given). Each frame
        any range needs is read and decoded once (ahead, on a helper thread), whatever the
        number of ranges in it; a range that overlaps an earlier one re-decodes the frames it
        shares. Ranges of size 0 yield nothing. A piece is a view into a frame: use (write,
        hash) it before asking for the next one."""
        order = sorted((k for k, r in enumerate(ranges) if r[1] > 0), key=lambda k: ranges[k][0])
        dec = self._dec_off
        needed: list[int] = []
        for k in order:
            off, size = ranges[k]
            if off < 0 or off + size > self.size:
                raise StoreError(f"cached layer {self.diff_id}: range {off}+{size} is past its "
                                 f"end {self.size}")
            first = bisect.bisect_right(dec, off) - 1
            last = bisect.bisect_right(dec, off + size - 1) - 1
            if needed and first <= needed[-1]:
                first = needed[-1] + 1
            needed.extend(range(first, last + 1))
        ahead = self._decode_ahead(needed, depth=3)
        cur_i, cur = -1, memoryview(b"")
        for k in order:
            off, size = ranges[k]
            pos, end = off, off + size
            while pos < end:
                i = bisect.bisect_right(dec, pos) - 1
                if i == cur_i:
                    frame = cur
                elif i > cur_i:
                    while cur_i < i:  # the next frames of ``needed`` are exactly these
                        cur_i, data = next(ahead)
                    cur = frame = memoryview(data)
                else:  # an overlap reaches back before the current frame
                    frame = memoryview(self._decode(i))
                base = dec[i]
                lo, hi = pos - base, min(end - base, len(frame))
                yield k, frame[lo:hi]
                pos = base + hi
        ahead.close()

    def read_at(self, offset: int, size: int) -> bytes:
        return b"".join(self.iter_range(offset, size))


@dataclass(frozen=True)
class BlobStore:
    """``root/sha256/<hex>.zst`` per layer. ``has / adopt / open / verify``."""

    root: str

    def path(self, diff_id: Digest) -> str:
        return os.path.join(self.root, "sha256", diff_id.hex + ".zst")

    def has(self, diff_id: Digest) -> bool:
        return os.path.exists(self.path(diff_id))

    def adopt(self, tmp_path: str, diff_id: Digest) -> None:
        """Move a file made by ``LayerWriter`` (already verified) into place, atomically."""
        dest = self.path(diff_id)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.exists(dest):
            os.unlink(tmp_path)
            return
        os.replace(tmp_path, dest)

    def open(self, diff_id: Digest) -> StoredLayer:
        return StoredLayer(self.path(diff_id), diff_id)

    def verify(self, diff_id: Digest) -> None:
        """Decode the whole layer and check it still hashes to its diff_id."""
        h = hashlib.sha256()
        with self.open(diff_id) as layer:
            for chunk in layer.iter_range(0, layer.size):
                h.update(chunk)
        got = Digest.from_hex(h.hexdigest())
        if got != diff_id:
            raise DigestMismatch(f"cached layer {diff_id} hashes to {got}")
