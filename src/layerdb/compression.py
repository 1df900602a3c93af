"""Compression is told from magic bytes, never from a suffix or by trial decoding.

``open_decompressed`` turns a raw blob stream into its uncompressed stream, using
``isal``'s igzip for gzip (about 2.4x zlib's speed here) and ``zstandard`` for zstd.
"""
from __future__ import annotations

import io
from typing import BinaryIO

GZIP = "gzip"
ZSTD = "zstd"
NONE = "none"

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def detect(head: bytes) -> str:
    """The compression of a stream that starts with ``head`` (at least 4 bytes if any)."""
    if head.startswith(_GZIP_MAGIC):
        return GZIP
    if head.startswith(_ZSTD_MAGIC):
        return ZSTD
    return NONE


class _Peek(io.RawIOBase):
    """Replays ``head`` then continues with ``raw``."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        readinto = getattr(self._raw, "readinto", None)
        if readinto is not None:  # straight into the caller's buffer: no copy
            return readinto(b) or 0
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def sniff(raw: BinaryIO) -> tuple[str, BinaryIO]:
    """Read the first bytes of ``raw``; return its compression and a stream from byte 0."""
    head = b""
    while len(head) < 4:
        chunk = raw.read(4 - len(head))
        if not chunk:
            break
        head += chunk
    return detect(head), io.BufferedReader(_Peek(head, raw), 1 << 20)  # type: ignore[arg-type]


def decompressor(kind: str, raw: BinaryIO) -> BinaryIO:
    """A readable stream of the decompressed bytes of ``raw``."""
    if kind == GZIP:
        try:
            from isal import igzip  # fast path

            return igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        except ImportError:  # pragma: no cover - isal is a dependency
            import gzip

            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(  # type: ignore[return-value]
            raw, read_across_frames=True, read_size=1 << 20
        )
    return raw


def open_decompressed(raw: BinaryIO) -> tuple[str, BinaryIO]:
    """Detect the compression of ``raw`` and return (kind, uncompressed stream)."""
    kind, stream = sniff(raw)
    return kind, decompressor(kind, stream)
