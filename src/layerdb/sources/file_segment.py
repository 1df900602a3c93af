"""A blob that is a byte range of a local file (``FileSegment``), read with ``pread``.

The local fast path of ``model.Blob``: a layer or JSON document inside an image archive
(``_files.TarFiles``) or a layout directory, or a spooled copy of a stream. Picklable, so
worker processes open it themselves without re-reading the archive's index.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, BinaryIO


@dataclass(frozen=True)
class FileSegment:
    """Where a blob's bytes are: ``length`` bytes of file ``path`` from ``offset``.

    Picklable, so worker processes can open a blob without re-reading the archive index.
    ``length`` is -1 for "to the end of the file". The local fast path of ``Blob``.
    """

    path: str
    offset: int = 0
    length: int = -1

    def open(self) -> BinaryIO:
        f = open(self.path, "rb", buffering=0)
        if self.offset or self.length >= 0:
            return _Window(f, self.offset, self.length)  # type: ignore[return-value]
        return io.BufferedReader(f, 1 << 20)  # type: ignore[return-value]

    def size(self) -> int:
        if self.length >= 0:
            return self.length
        return os.path.getsize(self.path) - self.offset


class _Window(io.RawIOBase):
    """A read-only view of ``length`` bytes of a file from ``offset``."""

    def __init__(self, f: Any, offset: int, length: int) -> None:
        self._f = f
        self._start = offset
        self._end = offset + length if length >= 0 else os.fstat(f.fileno()).st_size
        self._pos = offset

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: self._start, 1: self._pos, 2: self._end}[whence]
        self._pos = max(self._start, base + pos)
        return self._pos - self._start

    def tell(self) -> int:
        return self._pos - self._start

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._end - self._pos)
        if n <= 0:
            return 0
        got = os.preadv(self._f.fileno(), [memoryview(b)[:n]], self._pos)
        self._pos += got
        return got

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._end - self._pos
        n = min(n, self._end - self._pos)
        if n <= 0:
            return b""
        data = os.pread(self._f.fileno(), n, self._pos)
        self._pos += len(data)
        return data

    def close(self) -> None:
        self._f.close()
        super().close()
