"""``Digest``: a validated ``sha256:<64 hex>``, parsed once at the edge; and hashing readers."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import BinaryIO

from .errors import DigestMismatch, SourceError

_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, order=True)
class Digest:
    """A content digest. Only sha256 is accepted (all images in the wild use it)."""

    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.value, str) or not _RE.match(self.value):
            v = self.value
            shown = repr(v[:80]) + f"... ({len(v)} characters)" if isinstance(v, str) and len(v) > 80 else repr(v)
            raise SourceError(f"invalid digest {shown}")

    @classmethod
    def parse(cls, text: str) -> Digest:
        return cls(text.strip() if isinstance(text, str) else text)

    @classmethod
    def from_hex(cls, hexdigest: str) -> Digest:
        return cls("sha256:" + hexdigest)

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @property
    def hex(self) -> str:
        return self.value[7:]

    @property
    def short(self) -> str:
        return self.value[7:19]

    def __str__(self) -> str:
        return self.value


class HashingReader:
    """Wraps a binary stream; hashes and counts every byte read through it (only counts,
    with ``hashing=False``: for a caller that hashes the same bytes elsewhere).

    ``verify(expected)`` raises ``DigestMismatch`` naming ``what`` when the bytes differ.
    """

    def __init__(self, raw: BinaryIO, what: str = "blob", hashing: bool = True) -> None:
        self._raw = raw
        self._h = hashlib.sha256() if hashing else None
        self.bytes_read = 0
        self.what = what

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            if self._h is not None:
                self._h.update(data)
            self.bytes_read += len(data)
        return data

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = self._raw.readinto(b)  # type: ignore[attr-defined]
        if n:
            if self._h is not None:
                self._h.update(memoryview(b)[:n])
            self.bytes_read += n
        return n

    def readable(self) -> bool:
        return True

    def drain(self, bufsize: int = 1 << 20) -> None:
        while self.read(bufsize):
            pass

    def digest(self) -> Digest:
        if self._h is None:
            raise ValueError("a HashingReader made with hashing=False has no digest")
        return Digest.from_hex(self._h.hexdigest())

    def verify(self, expected: Digest) -> None:
        got = self.digest()
        if got != expected:
            raise DigestMismatch(f"{self.what}: digest mismatch: expected {expected}, got {got}")

    def close(self) -> None:
        self._raw.close()
