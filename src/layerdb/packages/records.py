"""What a parser gets (``Blob``: a member's bytes, read on demand) and gives (``Package``)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

MAX_LINE = 1 << 20  # a longer line in a package database is skipped, not buffered


class Blob(Protocol):
    """One regular file of a layer: ``size`` bytes, read at an offset or streamed."""

    path: str
    size: int

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` of the file (fewer at its end)."""
        ...

    def chunks(self, limit: int = -1) -> Iterator[bytes]:
        """The file front to back (the first ``limit`` bytes if ``limit`` >= 0)."""
        ...


@dataclass(frozen=True)
class Package:
    """One installed package, as its record (``record_path``) states it."""

    ecosystem: str  # deb, apk, rpm, python, npm, go, maven; "os" for the os-release of a layer
    name: str
    version: str
    record_path: str  # a jar nested in another: /outer.jar!/BOOT-INF/lib/inner.jar
    source: str | None = None  # source package / origin / Go main module of a dep / Maven groupId
    arch: str | None = None
    purl: str | None = None


def lines(chunks: Iterator[bytes], max_line: int = MAX_LINE) -> Iterator[bytes]:
    """Lines (without the newline) of a byte stream; a line longer than ``max_line`` is
    dropped whole, so memory stays bounded whatever the input."""
    tail = b""
    skipping = False
    for chunk in chunks:
        parts = chunk.split(b"\n")
        if len(parts) == 1:  # no newline in this chunk
            if not skipping:
                tail += chunk
                if len(tail) > max_line:
                    tail, skipping = b"", True
            continue
        first = tail + parts[0]
        if not skipping and len(first) <= max_line:
            yield first.rstrip(b"\r")
        skipping = False
        for line in parts[1:-1]:
            if len(line) <= max_line:
                yield line.rstrip(b"\r")
        tail = parts[-1]
        if len(tail) > max_line:
            tail, skipping = b"", True
    if tail and not skipping:
        yield tail.rstrip(b"\r")


def text(b: bytes) -> str:
    return b.decode("utf-8", "replace").strip()
