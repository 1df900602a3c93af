"""An image archive read once from a stream (stdin, a FIFO, ``<(...)``), spooled only as needed.

A stream cannot be seeked, and a ``docker save`` stream may put ``manifest.json`` (which says
what every member is) last, so the members are read in order and their data kept in one spool
file under the ingest's temporary directory (no tar headers: each member's bytes at a known
offset), except for members named by a digest the cache already holds (``blobs/sha256/<hex>``,
``<hex>.tar``, ``<hex>.tar.gz``): those are hashed as they pass, to prove the name, and cost no
disk. The result is a ``Files`` like ``TarFiles``, so every archive format works unchanged.
Memory stays bounded: data moves in 1 MiB chunks. The whole stream may be gzip- or
zstd-compressed (told from its magic bytes), decompressed as it is read.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from typing import BinaryIO

from .. import compression
from ..digest import Digest
from ..errors import BlobNotFound, DigestMismatch, LayerdbError, SourceError
from ._files import Member, TarFiles, normalise, tar_kind

_CHUNK = 1 << 20
_BLOCK = 512


@dataclass(frozen=True)
class SkippedBlob:
    """A member of a stream that was not kept because the cache holds its layer: a ``Blob``
    whose ``size()`` and first bytes (``head``) are known but which cannot be opened."""

    display: str
    name: str
    digest: str
    length: int
    head: bytes = b""

    def size(self) -> int:
        return self.length

    def open(self) -> BinaryIO:
        raise BlobNotFound(f"{self.display}: {self.name}: not kept from the stream (the cache "
                           "held its layer); ingest the archive from a file instead")


def named_digest(name: str) -> str | None:
    """``sha256:<hex>`` when a member name carries its content digest, else None."""
    base = name
    if base.startswith("blobs/sha256/"):
        base = base[len("blobs/sha256/"):]
    elif "/" in base:
        return None
    else:
        for suffix in (".tar.gz", ".tar"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        else:
            return None
    if len(base) == 64 and all(c in "0123456789abcdef" for c in base):
        return "sha256:" + base
    return None


class _Recorder:
    """Hands ``raw``'s bytes to tarfile, remembering the last two chunks and the count, so the
    block after the last member (the end-of-archive marker, or not) can be checked."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.total = 0
        self.prev = b""
        self.last = b""

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self.prev, self.last = self.last, data
            self.total += len(data)
        return data

    def block_at(self, offset: int) -> bytes:
        tail = self.prev + self.last
        start = len(tail) - (self.total - offset)
        return tail[start : start + _BLOCK] if start >= 0 else b""


class StreamFiles(TarFiles):
    """The members of a tar stream, spooled into ``spool_dir`` (see the module doc).
    ``archive`` is the spool file; the caller deletes it (``SourceBase.close``)."""

    def __init__(self, stream: BinaryIO, display: str, spool_dir: str,
                 cached: Collection[str] = ()) -> None:
        self.display = display
        self.members: dict[str, Member] = {}
        self.skipped: dict[str, SkippedBlob] = {}
        self.spooled = 0  # bytes written to the spool
        os.makedirs(spool_dir, exist_ok=True)
        fd, self.archive = tempfile.mkstemp(prefix="layerdb-stream-", suffix=".spool",
                                            dir=spool_dir)
        try:
            with os.fdopen(fd, "wb") as spool:
                self._read(stream, spool, cached)
        except BaseException:
            os.unlink(self.archive)
            raise

    def _read(self, stream: BinaryIO, spool: BinaryIO, cached: Collection[str]) -> None:
        kind, raw = compression.sniff(stream)
        source = compression.decompressor(kind, raw)
        rec = _Recorder(source)
        try:
            tf = tarfile.open(fileobj=rec, mode="r|", bufsize=_CHUNK)  # type: ignore[call-overload]  # noqa: SIM115
        except tarfile.ReadError as e:
            raise SourceError(f"{self.display}: not an image archive or layout "
                              f"(not a tar archive: {e})") from e
        except Exception as e:  # zlib/isal/zstd errors
            raise self._corrupt(f"{kind} stream: {e}") from e
        with tf:
            try:
                while True:
                    ti = tf.next()
                    if ti is None:
                        break
                    self._member(tf, ti, spool, cached)
            except (tarfile.TarError, EOFError, OSError, ValueError) as e:
                raise self._corrupt(str(e)) from e
            except LayerdbError:
                raise
            except Exception as e:  # zstd's and isal's own error types
                raise self._corrupt(f"{kind} stream: {e}") from e
            end = tf.offset
            pos = tf.fileobj.pos  # type: ignore[attr-defined]
        if pos < end + _BLOCK:
            raise self._corrupt(f"no end-of-archive marker at byte {end}")
        if rec.block_at(end).count(0) != _BLOCK:
            raise self._corrupt(f"damaged tar header at byte {end}")

    def _member(self, tf: tarfile.TarFile, ti: tarfile.TarInfo, spool: BinaryIO,
                cached: Collection[str]) -> None:
        name = normalise(ti.name)
        kind = tar_kind(ti)
        if not name:
            return
        if kind == "sparse":
            raise SourceError(f"{self.display}: member {ti.name!r} is a sparse file; "
                              "image blobs must be stored contiguously")
        if kind != "file":
            self.members[name] = Member(name, 0, 0, kind, ti.linkname)
            return
        f = tf.extractfile(ti)
        assert f is not None
        digest = named_digest(name)
        if digest is not None and digest in cached:
            h, head, got = hashlib.sha256(), b"", 0
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                head = head or chunk[:4]
                got += len(chunk)
            self._check_length(ti, got)
            if "sha256:" + h.hexdigest() != digest:
                raise DigestMismatch(f"{self.display}: {ti.name}: digest mismatch: named "
                                     f"{digest}, got sha256:{h.hexdigest()}")
            self.skipped[name] = SkippedBlob(self.display, name, str(Digest(digest)), got, head)
            self.members[name] = Member(name, 0, got, "skipped")
            return
        offset = self.spooled
        got = 0
        while chunk := f.read(_CHUNK):
            spool.write(chunk)
            got += len(chunk)
        self._check_length(ti, got)
        self.spooled += got
        self.members[name] = Member(name, offset, got, "file")

    def _check_length(self, ti: tarfile.TarInfo, got: int) -> None:
        if got != ti.size:
            raise self._corrupt(f"member {ti.name!r} ends after {got} of {ti.size} bytes")

    def segment(self, name: str):  # type: ignore[no-untyped-def]
        m = self._resolve(name)
        if m is not None and m.kind == "skipped":
            return self.skipped[m.name]
        return super().segment(name)
