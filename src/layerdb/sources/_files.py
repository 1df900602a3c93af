"""Named files inside an image archive (a tar, scanned once) or a layout directory.

A tar archive is never extracted: ``TarFiles`` reads every member header once with
``tarfile`` in ``"r:"`` mode (which seeks over member data instead of reading it) and keeps,
for each member, the byte offset of its data in the archive file and its size. Every member
is then reachable as a ``FileSegment`` that worker processes open with ``pread``.

Names are archive-relative POSIX paths, normalised: no leading ``./`` or ``/``, no trailing
``/`` (``./blobs/sha256/ab…`` and ``blobs/sha256/ab…`` are the same member).
"""
from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import SourceError
from ..model import MAX_JSON_BYTES, Blob  # JSON documents past MAX_JSON_BYTES are refused unread
from .file_segment import FileSegment

_BLOCK = 512
_MAX_LINK_HOPS = 16


def normalise(name: str) -> str:
    """``./a//b/`` -> ``a/b``; ``.`` or ``/`` -> ``""``."""
    norm = posixpath.normpath("/" + name).lstrip("/")
    return "" if norm == "." else norm


class Files(Protocol):
    """Read access to the named files of an archive or directory.

    ``display`` is the path the user gave; every error message starts with it.
    """

    display: str

    def segment(self, name: str) -> Blob | None:
        """Where the bytes of regular file ``name`` are (links followed), or None if absent."""
        ...

    def has(self, name: str) -> bool:
        """True when regular file ``name`` exists (links followed)."""
        ...


def read_small(files: Files, name: str, what: str) -> bytes:
    """The bytes of ``name`` (at most ``MAX_JSON_BYTES``); ``what`` names it in errors.

    Raises ``SourceError`` when too large; the caller checks presence first.
    """
    seg = files.segment(name)
    if seg is None:  # pragma: no cover - callers check
        raise SourceError(f"{files.display}: {what} is missing")
    size = seg.size()
    if size > MAX_JSON_BYTES:
        raise SourceError(f"{files.display}: {what}: {size} bytes is more than the "
                          f"{MAX_JSON_BYTES >> 20} MiB allowed for a JSON document")
    with seg.open() as f:
        data = f.read(size)
    if len(data) != size:
        raise SourceError(f"{files.display}: {what}: truncated or corrupt archive: "
                          f"read {len(data)} of {size} bytes")
    return data


# Directories ---------------------------------------------------------------------------------

class DirFiles:
    """Files of a directory (an OCI image layout, or an unpacked ``docker save``)."""

    def __init__(self, root: str, display: str) -> None:
        self.root = os.path.abspath(root)
        self.display = display

    def segment(self, name: str) -> FileSegment | None:
        norm = normalise(name)
        if not norm:
            return None
        # Names cannot climb out of the root (normalise drops ".."); symlinks are followed,
        # as skopeo's --dest-shared-blob-dir and hand-made layouts link blobs elsewhere.
        full = os.path.realpath(os.path.join(self.root, *norm.split("/")))
        try:
            st = os.stat(full)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return FileSegment(full, 0, st.st_size)

    def has(self, name: str) -> bool:
        return self.segment(name) is not None


# Tar archives --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    """One tar member. ``offset``: byte offset of its data in the archive file;
    ``size``: data length in bytes; ``kind``: file, dir, symlink, hardlink, sparse or other."""

    name: str
    offset: int
    size: int
    kind: str
    linkname: str = ""


def tar_kind(ti: tarfile.TarInfo) -> str:
    if ti.issparse():
        return "sparse"
    if ti.isreg():
        return "file"
    if ti.isdir():
        return "dir"
    if ti.issym():
        return "symlink"
    if ti.islnk():
        return "hardlink"
    return "other"


class TarFiles:
    """The members of an uncompressed tar archive, scanned once (headers only).

    Raises ``SourceError`` "not an image archive or layout" when the file is not a tar at all,
    and "truncated or corrupt archive" when a member's data runs past the end of the file, a
    header is damaged, or the end-of-archive marker is missing.
    """

    def __init__(self, archive: str, display: str) -> None:
        self.archive = os.path.abspath(archive)
        self.display = display
        self.members: dict[str, Member] = {}
        self._scan()

    def _corrupt(self, why: str) -> SourceError:
        return SourceError(f"{self.display}: truncated or corrupt archive: {why}")

    def _scan(self) -> None:
        file_size = os.path.getsize(self.archive)
        with open(self.archive, "rb") as f:
            try:
                tf = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 - closed below
            except tarfile.ReadError as e:
                raise SourceError(f"{self.display}: not an image archive or layout "
                                  f"(not a tar archive: {e})") from e
            with tf:
                try:
                    while True:
                        ti = tf.next()
                        if ti is None:
                            break
                        self._add(ti, file_size)
                except (tarfile.TarError, EOFError, OSError, ValueError) as e:
                    raise self._corrupt(str(e)) from e
                end = tf.offset  # where the header after the last member would start
            f.seek(end)
            trailer = f.read(_BLOCK)
        if len(trailer) < _BLOCK:
            raise self._corrupt(f"no end-of-archive marker at byte {end} (file has {file_size})")
        if trailer.count(0) != _BLOCK:
            raise self._corrupt(f"damaged tar header at byte {end}")

    def _add(self, ti: tarfile.TarInfo, file_size: int) -> None:
        kind = tar_kind(ti)
        if kind in ("file", "sparse") and ti.offset_data + ti.size > file_size:
            raise self._corrupt(
                f"member {ti.name!r} needs bytes {ti.offset_data}..{ti.offset_data + ti.size} "
                f"but the file has {file_size}")
        name = normalise(ti.name)
        if name:
            self.members[name] = Member(name, ti.offset_data, ti.size, kind, ti.linkname)

    def _resolve(self, name: str) -> Member | None:
        norm = normalise(name)
        for _ in range(_MAX_LINK_HOPS):
            m = self.members.get(norm)
            if m is None:
                return None
            if m.kind == "symlink":
                base = posixpath.dirname(norm)
                norm = normalise(posixpath.join(base, m.linkname))
            elif m.kind == "hardlink":
                norm = normalise(m.linkname)
            else:
                return m
        return None

    def segment(self, name: str) -> Blob | None:
        m = self._resolve(name)
        if m is None or m.kind == "dir" or m.kind == "other":
            return None
        if m.kind == "sparse":
            raise SourceError(f"{self.display}: member {m.name!r} is a sparse file; "
                              "image blobs must be stored contiguously")
        return FileSegment(self.archive, m.offset, m.size)

    def has(self, name: str) -> bool:
        return self.segment(name) is not None


_S = TypeVar("_S", bound="SourceBase")


class SourceBase:
    """What every source keeps: ``path`` (as the user gave it), ``files`` (its members) and
    ``temp`` (a decompressed copy of the archive, deleted by ``close()``)."""

    def __init__(self, path: str, files: Files, temp: str | None = None) -> None:
        self.path = path
        self.files = files
        self._temp = temp

    def close(self) -> None:
        """Delete the decompressed temporary copy, if any. Idempotent."""
        if self._temp is not None:
            try:
                os.unlink(self._temp)
            except FileNotFoundError:
                pass
            self._temp = None

    def __enter__(self: _S) -> _S:  # noqa: PYI019 - typing.Self needs 3.11; we support 3.10
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
