"""Tell what a path holds and open the matching source.

``docker://`` is a registry (``registry.py``); ``docker-archive:``, ``oci:`` and
``oci-archive:`` name local forms explicitly (``:TAG`` after an OCI path keeps the images whose
``org.opencontainers.image.ref.name`` is TAG, as skopeo does); ``-``, a FIFO (``<(...)``,
``/dev/stdin`` on a pipe) or a character device is a stream, read once (``_stream.py``).

A directory is an OCI layout (``index.json``) or an unpacked ``docker save``
(``manifest.json``). A file is a tar archive, perhaps gzip- or zstd-compressed as a whole:
compression is told from its magic bytes (never its suffix) and it is decompressed once,
streaming, into a temporary file under ``tmpdir`` that the source's ``close()`` deletes. The tar
is then scanned once (headers only) and dispatched on its members: ``manifest.json`` means a
docker-save-style archive (which handles an ``index.json`` beside it too), ``index.json``
alone an oci-archive.
"""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from .. import compression
from ..errors import LimitExceeded, NoSpace, SourceError, is_disk_full
from ..model import Image
from . import SourceOptions
from ._files import DirFiles, Files, TarFiles
from .docker_archive import DockerArchiveSource
from .oci_layout import OciLayoutSource

_CHUNK = 1 << 20

Source = Any  # DockerArchiveSource | OciLayoutSource | RegistrySource | _Tagged
_PREFIXES = ("docker-archive:", "oci-archive:", "oci:")


def stream_kind(path: str) -> str | None:
    """"stdin" for ``-``, "stream" for a FIFO, socket or character device, else None."""
    if path == "-":
        return "stdin"
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return "stream"
    return None


def open_source(path: str, tmpdir: str, options: SourceOptions | None = None) -> Source:
    """Open ``path`` (see ``layerdb.sources.open_source``). Raises ``SourceError``."""
    opts = options or SourceOptions()
    if path.startswith("docker://"):
        from .registry import RegistrySource

        return RegistrySource(path, opts)
    for prefix in _PREFIXES:
        if path.startswith(prefix):
            return _open_prefixed(path, prefix, tmpdir, opts)
    return _open_path(path, tmpdir, opts)


def _open_path(path: str, tmpdir: str, opts: SourceOptions, display: str | None = None) -> Source:
    display = display or path
    kind = stream_kind(path)
    if kind is not None:
        return _open_stream(path, display, kind, tmpdir, opts)
    try:
        st = os.stat(path)
    except OSError as e:
        raise SourceError(f"{display}: cannot open: {(e.strerror or str(e)).lower()}") from e
    if stat.S_ISDIR(st.st_mode):
        return _dispatch(display, DirFiles(path, display), None)
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{display}: not an image archive or layout (not a regular file)")
    with open(path, "rb") as f:
        kind = compression.detect(f.read(4))
    temp = None if kind == compression.NONE else decompress_to_temp(path, kind, tmpdir)
    try:
        return _dispatch(display, TarFiles(temp or path, display), temp)
    except BaseException:
        if temp is not None:
            os.unlink(temp)
        raise


def _open_stream(path: str, display: str, kind: str, tmpdir: str, opts: SourceOptions) -> Source:
    """Read a stream once: members spooled under ``tmpdir`` except cached layers."""
    from ._stream import StreamFiles

    cached = opts.cached_blobs() if opts.cached_blobs is not None else frozenset()
    try:
        if kind == "stdin":
            if sys.stdin is None or sys.stdin.isatty():
                raise SourceError("-: standard input is a terminal; pipe an archive in "
                                  "(docker save IMAGE | layerdb ingest -)")
            f = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)  # noqa: SIM115
        else:
            f = open(path, "rb", buffering=0)  # noqa: SIM115
    except OSError as e:
        raise SourceError(f"{display}: cannot open: {(e.strerror or str(e)).lower()}") from e
    with f:
        if os.isatty(f.fileno()):
            raise SourceError(f"{display}: is a terminal; pipe an archive in")
        files = StreamFiles(f, display, tmpdir, cached)  # type: ignore[arg-type]
    try:
        return _dispatch(display, files, files.archive)
    except BaseException:
        os.unlink(files.archive)
        raise


def _open_prefixed(path: str, prefix: str, tmpdir: str, opts: SourceOptions) -> Source:
    rest = path[len(prefix):]
    tag = ""
    if prefix != "docker-archive:" and ":" in rest:
        rest, _, tag = rest.partition(":")
    if not rest:
        raise SourceError(f"{path}: no path after {prefix}")
    src = _open_path(rest, tmpdir, opts, display=path)
    want = {"docker-archive:": DockerArchiveSource, "oci-archive:": OciLayoutSource,
            "oci:": OciLayoutSource}[prefix]
    is_dir = os.path.isdir(rest)
    if not isinstance(src, want) or (prefix == "oci:") != is_dir:
        src.close()
        what = {"docker-archive:": "a docker archive", "oci-archive:": "an oci-archive",
                "oci:": "an OCI layout directory"}[prefix]
        raise SourceError(f"{path}: not {what}")
    return _Tagged(src, tag) if tag else src


class _Tagged:
    """The images of ``src`` whose refs include ``tag`` exactly (skopeo's ``oci:DIR:TAG``)."""

    def __init__(self, src: Any, tag: str) -> None:
        self.src = src
        self.tag = tag
        self.path = src.path

    def images(self) -> Iterator[Image]:
        from ._images import qualify_ref

        tags = {self.tag, qualify_ref(self.tag, self.path)}  # a bare tag is qualified by now
        found = [i for i in self.src.images() if tags & set(i.refs)]
        if not found:
            have = sorted({r for i in self.src.images() for r in i.refs})
            raise SourceError(f"{self.path}: no image tagged {self.tag!r}"
                              + (f" (tags: {', '.join(have[:10])})" if have else " (no tags)"))
        yield from found

    def close(self) -> None:
        self.src.close()


def _dispatch(path: str, files: Files, temp: str | None) -> Source:
    if files.has("manifest.json"):
        return DockerArchiveSource(path, files, temp)
    if files.has("index.json"):
        return OciLayoutSource(path, files, temp)
    if files.has("repositories"):
        raise SourceError(f"{path}: not an image archive or layout: a docker save archive "
                          "from docker < 1.10 (no manifest.json) is not supported")
    raise SourceError(f"{path}: not an image archive or layout "
                      "(no manifest.json or index.json)")


#: A whole-archive-compressed input (``x.tar.gz``) is decompressed to a temporary file of at
#: most ``MAX_ARCHIVE_RATIO`` times its size plus ``ARCHIVE_SLACK`` bytes; past that it is
#: refused as a likely compression bomb. A docker save archive compresses 2-5x; its layers
#: inside are usually compressed already. ``$LAYERDB_MAX_ARCHIVE_RATIO`` raises the ratio.
MAX_ARCHIVE_RATIO = 100
ARCHIVE_SLACK = 64 << 20


def archive_ratio() -> float:
    """``$LAYERDB_MAX_ARCHIVE_RATIO``, else ``MAX_ARCHIVE_RATIO``; ``UsageError`` when it is
    not a number above 0."""
    from ..settings import settings

    return settings().max_archive_ratio


def max_decompressed(compressed_size: int) -> int:
    """The most bytes a whole-archive-compressed file of ``compressed_size`` may inflate to."""
    return int(archive_ratio() * compressed_size) + ARCHIVE_SLACK


def decompress_to_temp(path: str, kind: str, tmpdir: str) -> str:
    """Decompress the whole file ``path`` (``kind``: gzip or zstd) into a new temporary file
    under ``tmpdir``, streaming in 1 MiB chunks, at most ``max_decompressed`` bytes. Returns
    its path; the caller deletes it. Raises ``LimitExceeded`` past the limit, ``NoSpace`` when
    the disk fills, ``SourceError`` for a corrupt stream."""
    os.makedirs(tmpdir, exist_ok=True)
    limit = max_decompressed(os.path.getsize(path))
    fd, temp = tempfile.mkstemp(prefix="layerdb-archive-", suffix=".tar", dir=tmpdir)
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb", buffering=0) as dst:
            stream = compression.decompressor(kind, src)
            written = 0
            while True:
                try:
                    chunk = stream.read(_CHUNK)
                except Exception as e:  # zlib/isal/zstd each raise their own error types
                    raise SourceError(f"{path}: truncated or corrupt archive: "
                                      f"{kind} stream: {e}") from e
                if not chunk:
                    break
                written += len(chunk)
                if written > limit:
                    raise LimitExceeded(
                        f"{path}: decompresses to more than {limit >> 20} MiB (the limit: "
                        f"{archive_ratio():g}x its size + {ARCHIVE_SLACK >> 20} MiB); refused as a "
                        "likely compression bomb (set LAYERDB_MAX_ARCHIVE_RATIO to allow more)")
                _write_all(dst, chunk, path, tmpdir)
        problem = zstd_frames_problem(path) if kind == compression.ZSTD else None
        if problem:  # the zstd reader ends quietly where a truncated stream ends
            raise SourceError(f"{path}: truncated or corrupt archive: zstd stream: {problem}")
    except BaseException:
        os.unlink(temp)
        raise
    return temp


def _write_all(dst: Any, chunk: bytes, path: str, tmpdir: str) -> None:
    view = memoryview(chunk)
    try:
        while view:
            view = view[dst.write(view):]
    except OSError as e:
        if is_disk_full(e):
            raise NoSpace(f"{path}: decompressing into {tmpdir}: no space left on device") from e
        raise SourceError(f"{path}: cannot write a decompressed copy into "
                          f"{tmpdir}: {(e.strerror or str(e)).lower()}") from e


_ZSTD_FRAME = 0xFD2FB528
_DICT_ID_BYTES = (0, 1, 2, 4)
_FCS_BYTES = (0, 2, 4, 8)  # for flag 0 the size is 1 byte when Single_Segment is set


def zstd_frames_problem(path: str) -> str | None:
    """Walk the frame and block headers of a zstd file (RFC 8878), reading a few bytes per
    block of up to 128 KiB. Returns None when every frame is complete, else what is wrong."""
    size = os.path.getsize(path)
    pos = 0
    with open(path, "rb") as f:

        def at(offset: int, n: int) -> bytes:
            f.seek(offset)
            return f.read(n)

        while pos < size:
            head = at(pos, 8)
            magic = int.from_bytes(head[:4], "little") if len(head) >= 4 else -1
            if 0x184D2A50 <= magic <= 0x184D2A5F and len(head) == 8:  # skippable frame
                pos += 8 + int.from_bytes(head[4:8], "little")
                continue
            if magic != _ZSTD_FRAME:
                return f"no frame magic at byte {pos}"
            if len(head) < 5:
                return f"ends inside the frame header at byte {pos}"
            desc = head[4]
            single = (desc >> 5) & 1
            fcs = _FCS_BYTES[desc >> 6] or single
            pos += 5 + (1 - single) + _DICT_ID_BYTES[desc & 3] + fcs
            while True:
                block = at(pos, 3)
                if len(block) < 3:
                    return f"ends inside a block header at byte {pos}"
                value = int.from_bytes(block, "little")
                kind = (value >> 1) & 3
                if kind == 3:
                    return f"reserved block type at byte {pos}"
                pos += 3 + (1 if kind == 1 else value >> 3)
                if value & 1:
                    break
            pos += 4 * ((desc >> 2) & 1)  # content checksum
    if pos > size:
        return f"ends at byte {size}, inside a frame that needs {pos}"
    return None
