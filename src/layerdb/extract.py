"""Extract: look a path up in an image's merged view, then seek-and-read it from the cache.

Symlinks are followed inside the image (an absolute target is relative to the image root, never
the host); hardlinks give their target's bytes; every file's bytes are checked against the
catalog's sha256 before they are put in place. Nothing is written outside the output directory:
entries are created under it with ``O_NOFOLLOW`` checks, and an entry whose parent in the output
is not a real directory (a symlink the image made) is skipped with a warning.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .digest import Digest
from .errors import DigestMismatch, ImageNotFound, LayerdbError, PathNotFound, UnsafePath
from .selection import ImageRow
from .store import BlobStore

MAX_LINKS = 40
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class ExtractResult:
    image: ImageRow
    path: str  # the resolved path inside the image
    kind: str  # file, dir, ...
    files: int = 0
    bytes: int = 0
    output: str = "-"
    warnings: list[str] = field(default_factory=list)


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


class _Resolver:
    """Looks paths up in one image's merged view, following symlinks inside the image."""

    def __init__(self, cat: Any, image_id: str) -> None:
        # cat: the Catalog, or the LookupIndex (extract's fast path); both have lookup/subtree
        self.cat = cat
        self.image_id = image_id
        self._cache: dict[str, dict[str, Any] | None] = {}

    def get(self, path: str) -> dict[str, Any] | None:
        if path not in self._cache:
            # fetch this path and every path below it on the way, in one query
            want = [path]
            rows = self.cat.lookup(self.image_id, want)
            for p in want:
                self._cache[p] = rows.get(p)
        return self._cache[path]

    def prefetch(self, path: str) -> None:
        parts = _split(path)
        want = ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
        want = [p for p in want if p not in self._cache]
        if want:
            rows = self.cat.lookup(self.image_id, want)
            for p in want:
                self._cache[p] = rows.get(p)

    def resolve(self, path: str, follow_last: bool = True) -> dict[str, Any]:
        """The fs row that ``path`` names, symlinks followed (the last one only when
        ``follow_last``). Raises ``PathNotFound``."""
        self.prefetch(path)
        queue = _split(path)
        cur = "/"
        links = 0
        row: dict[str, Any] | None = self.get("/") or {"path": "/", "type": "dir"}
        while queue:
            comp = queue.pop(0)
            if comp == "..":
                cur = posixpath.dirname(cur) if cur != "/" else "/"
                row = self.get(cur) or {"path": cur, "type": "dir"}
                continue
            if row is not None and row["type"] != "dir":
                raise PathNotFound(f"{path}: {cur} is not a directory in the image")
            nxt = posixpath.join(cur, comp)
            row = self.get(nxt)
            if row is None and queue:
                # layers may omit directory entries; a runtime creates them implicitly
                row = {"path": nxt, "type": "dir"}
            if row is None:
                raise PathNotFound(self._missing_message(path, nxt))
            if row["type"] == "symlink" and (queue or follow_last):
                links += 1
                if links > MAX_LINKS:
                    raise PathNotFound(f"{path}: too many levels of symbolic links")
                target = row["linkname"] or ""
                if target.startswith("/"):
                    cur = "/"
                    row = self.get("/") or {"path": "/", "type": "dir"}
                else:
                    row = self.get(cur) or {"path": cur, "type": "dir"}
                queue = _split(target) + queue
                self.prefetch(posixpath.join(cur, *_split(target)) if _split(target) else cur)
                continue
            cur = nxt
        assert row is not None
        return row

    def _missing_message(self, asked: str, missing: str) -> str:
        view = getattr(self.cat, "view", None)
        if view is not None:
            fate_layers = len(view._fate(self.image_id).layers)
            for pos in range(fate_layers - 1, -1, -1):
                if view.member(self.image_id, pos, missing) is not None:
                    return (f"{asked}: {missing} was deleted in an upper layer (it exists in "
                            f"layer {pos} but a whiteout or opaque directory hides it; "
                            f"extract --layer {pos} reads it as stored)")
        return f"{asked}: no such file or directory in the image"


def find_image(cat: Any, image: str | None, platform: str | None,
               path: str | None) -> ImageRow:
    """``--image`` if given; otherwise the only image, or the only image that has ``path``."""
    if image:
        return cat.resolve_image(image, platform)
    try:
        return cat.resolve_image(None, platform)
    except ImageNotFound:
        if not path:
            raise
    names, rows = cat.query(
        "select distinct image_id, image from fs where path = $p order by image", {"p": path})
    if len(rows) == 1:
        return cat.resolve_image(rows[0][0], platform)
    if not rows:
        raise PathNotFound(f"{path}: not found in any ingested image")
    cands = ", ".join(f"{r[1]} ({r[0][:19]})" for r in rows[:10])
    raise ImageNotFound(f"{path} is in {len(rows)} images: {cands}; choose one with --image")


def entrypoint_path(res: _Resolver, img: ImageRow) -> str:
    """The executable the image runs: Entrypoint[0], else Cmd[0], resolved against WorkingDir
    and the config's PATH (as a runtime does)."""
    argv = (img.entrypoint or []) + (img.cmd or [])
    if not argv:
        raise PathNotFound(f"image {img.name} has no Entrypoint or Cmd")
    exe = argv[0]
    if "/" in exe:
        return posixpath.normpath(posixpath.join(img.working_dir or "/", exe))
    path_var = DEFAULT_PATH
    for e in img.env:
        if e.startswith("PATH="):
            path_var = e[5:]
    tried = []
    for d in path_var.split(":"):
        if not d:
            continue
        cand = posixpath.join(d if d.startswith("/") else posixpath.join(img.working_dir or "/", d), exe)
        tried.append(cand)
        try:
            row = res.resolve(cand)
        except PathNotFound:
            continue
        if row["type"] in ("file", "hardlink"):
            return cand
    raise PathNotFound(f"image {img.name}: {exe} is not in its PATH ({', '.join(tried)})")


def extract(path: str | None = None, image: str | None = None, output: str | None = None,
            catalog_root: str | None = None, platform: str | None = None,
            entrypoint: bool = False, keep_setuid: bool = False,
            stdout: BinaryIO | None = None) -> ExtractResult:
    """Extract ``path`` (or the entrypoint) of an image to ``output`` (a file or directory
    path; ``None`` or ``-`` for stdout: a file's bytes, or a tar stream for a directory)."""
    if not path and not entrypoint:
        raise LayerdbError("give --path or --entrypoint")
    from .catalog.layout import Layout
    from .merged import open_view

    root = Layout.at(catalog_root).root
    found = None
    with _Rows(open_view(root)) as view:
        try:
            found = _locate(view, view.resolve_image(image, platform) if image else
                            view.resolve_image(None, platform), path, entrypoint)
        except ImageNotFound:
            if image or entrypoint:
                raise
    if found is None:
        from .catalog import Catalog

        with Catalog(root) as cat, _Rows(open_view(root)) as view:
            img = find_image(cat, image, platform, path)
            found = _locate(view, img, path, entrypoint)
    img, row, rows = found
    store = BlobStore(os.path.join(root, "blobs"))
    result = ExtractResult(img, row["path"], row["type"])
    out = stdout or sys.stdout.buffer
    if row["type"] == "dir":
        if output in (None, "-"):
            _tar_to(out, rows, row["path"], store, result)
        else:
            _write_tree(output, rows, row["path"], store, keep_setuid, result)
    else:
        if output in (None, "-"):
            for chunk in _content(store, row):
                out.write(chunk)
                result.bytes += len(chunk)
            out.flush()
            result.files = 1
        else:
            dest = output
            if os.path.isdir(output) or output.endswith("/"):
                os.makedirs(output, exist_ok=True)
                dest = os.path.join(output, _name(row))
            result.output = dest
            _write_file(dest, row, store, keep_setuid, result)
    if output not in (None, "-") and result.output == "-":
        result.output = output
    return result


def _locate(cat: Any, img: ImageRow, path: str | None, entrypoint: bool
            ) -> tuple[ImageRow, dict[str, Any], list[dict[str, Any]]]:
    """The row ``path`` names in ``img`` (or its entrypoint), and for a directory its subtree."""
    res = _Resolver(cat, img.id)
    if entrypoint:
        path = entrypoint_path(res, img)
    assert path is not None
    if not path.startswith("/"):
        path = posixpath.join(img.working_dir or "/", path)
    row = res.resolve(path)
    if row["type"] == "dir":
        return img, row, cat.subtree(img.id, row["path"])
    if row["type"] not in ("file", "hardlink"):
        raise LayerdbError(f"{path}: is a {row['type']}, not a file or directory")
    return img, row, []


def _name(row: dict[str, Any]) -> str:
    raw = row.get("raw_path")
    if raw:
        return os.fsdecode(posixpath.basename(bytes(raw)))
    return posixpath.basename(row["path"]) or "root"


def _content(store: BlobStore, row: dict[str, Any]) -> Iterator[bytes]:
    """The bytes of a regular file (or of a hardlink's target), verified against sha256."""
    size = row["size"] or 0
    layer = row["content_layer"]
    h = hashlib.sha256()
    if size:
        with store.open(Digest(layer)) as stored:
            for chunk in stored.iter_range(row["content_offset"], size):
                h.update(chunk)
                yield chunk
    want = row["sha256"]
    if want is None:
        raise LayerdbError(f"{row['path']}: hardlink to {row['linkname']}, which has no content")
    if h.hexdigest() != want:
        raise DigestMismatch(f"{row['path']}: cached bytes hash to {h.hexdigest()}, "
                             f"catalog says {want}")


def _mode(row: dict[str, Any], keep_setuid: bool) -> int:
    mode = int(row["mode"] or 0) & 0o7777
    if not keep_setuid:
        mode &= ~(stat.S_ISUID | stat.S_ISGID)
    return mode


def _write_file(dest: str, row: dict[str, Any], store: BlobStore, keep_setuid: bool,
                result: ExtractResult, dir_fd: int | None = None) -> None:
    """Write one regular file atomically (temp name, verify, rename), never through a link."""
    tmp = f".{os.path.basename(dest)}.layerdb-{os.getpid()}.tmp"
    parent = os.path.dirname(dest) or "."
    pfd = dir_fd if dir_fd is not None else os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    name = os.path.basename(dest)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=pfd)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                for chunk in _content(store, row):
                    f.write(chunk)
                    result.bytes += len(chunk)
                f.flush()  # before utime: a later flush would move the mtime again
                os.chmod(f.fileno(), _mode(row, keep_setuid))
                mt = row["mtime"] or 0
                os.utime(f.fileno(), (mt, mt))
        except BaseException:
            os.unlink(tmp, dir_fd=pfd)
            raise
        try:
            st = os.lstat(name, dir_fd=pfd)
            if stat.S_ISDIR(st.st_mode):
                os.unlink(tmp, dir_fd=pfd)
                raise UnsafePath(f"{dest}: a directory is in the way")
        except FileNotFoundError:
            pass
        os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        result.files += 1
    finally:
        if dir_fd is None:
            os.close(pfd)


def _rel(row: dict[str, Any], base: str) -> bytes | None:
    """The entry's path relative to ``base``, as bytes; None for ``base`` itself."""
    raw = row.get("raw_path")
    p = bytes(raw) if raw else os.fsencode(row["path"])
    b = os.fsencode(base)
    if p == b:
        return None
    prefix = b if b.endswith(b"/") else b + b"/"
    if not p.startswith(prefix):
        return None
    rel = p[len(prefix):]
    parts = rel.split(b"/")
    if not rel or rel.startswith(b"/") or any(x in (b"", b".", b"..") for x in parts):
        raise UnsafePath(f"refusing entry {row['path']!r}")
    return rel


def _write_tree(output: str, rows: list[dict[str, Any]], base: str, store: BlobStore,
                keep_setuid: bool, result: ExtractResult) -> None:
    """Write the subtree ``rows`` (sorted by path) into ``output``, like ``cp -r SRC/. DIR``."""
    os.makedirs(output, exist_ok=True)
    root_fd = os.open(output, os.O_RDONLY | os.O_DIRECTORY)
    dirs: dict[bytes, int] = {b"": root_fd}  # verified real directories -> open fds
    dir_meta: list[tuple[bytes, dict[str, Any]]] = []
    try:
        for row in rows:
            rel = _rel(row, base)
            if rel is None:
                if row["type"] == "dir":
                    dir_meta.append((b"", row))
                continue
            parent, _, name = rel.rpartition(b"/")
            pfd = _open_dir(dirs, parent)
            if pfd is None:
                result.warnings.append(
                    f"skipped {row['path']}: its parent is not a directory in the output")
                continue
            kind = row["type"]
            try:
                st: os.stat_result | None = os.lstat(name, dir_fd=pfd)
            except FileNotFoundError:
                st = None
            if kind == "dir":
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    os.unlink(name, dir_fd=pfd)
                    st = None
                if st is None:
                    os.mkdir(name, 0o700, dir_fd=pfd)
                dir_meta.append((rel, row))
                continue
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    result.warnings.append(f"skipped {row['path']}: a directory is in the way")
                    continue
                os.unlink(name, dir_fd=pfd)
            if kind in ("file", "hardlink"):
                _write_file(os.fsdecode(name), row, store, keep_setuid, result, dir_fd=pfd)
            elif kind == "symlink":
                os.symlink(row["linkname"] or "", name, dir_fd=pfd)
                mt = row["mtime"] or 0
                os.utime(name, (mt, mt), dir_fd=pfd, follow_symlinks=False)
                result.files += 1
            elif kind == "fifo":
                os.mkfifo(name, _mode(row, keep_setuid), dir_fd=pfd)
                result.files += 1
            else:
                result.warnings.append(f"skipped {row['path']}: {kind} device")
        for rel, row in reversed(dir_meta):  # children first, so mtimes stick
            fd = _open_dir(dirs, rel)
            if fd is None:
                continue
            os.chmod(fd, _mode(row, keep_setuid))
            mt = row["mtime"] or 0
            os.utime(fd, (mt, mt))
    finally:
        for fd in dirs.values():
            os.close(fd)


def _open_dir(dirs: dict[bytes, int], rel: bytes) -> int | None:
    """An fd for directory ``rel`` under the output root, refusing symlinks on the way
    (creating missing directories)."""
    if rel in dirs:
        return dirs[rel]
    parent, _, name = rel.rpartition(b"/")
    pfd = _open_dir(dirs, parent)
    if pfd is None:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
    except FileNotFoundError:
        os.mkdir(name, 0o700, dir_fd=pfd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
    except (NotADirectoryError, OSError):
        return None
    dirs[rel] = fd
    return fd


class _ChunkReader:
    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _tar_to(out: BinaryIO, rows: list[dict[str, Any]], base: str, store: BlobStore,
            result: ExtractResult) -> None:
    """Write the subtree as a tar stream (like ``docker cp CONTAINER:DIR -``)."""
    top = posixpath.basename(base.rstrip("/")) or "."
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for row in rows:
            rel = _rel(row, base)
            name = top if rel is None else posixpath.join(top, os.fsdecode(rel))
            ti = tarfile.TarInfo(name)
            ti.mode = int(row["mode"] or 0) & 0o7777
            ti.mtime = row["mtime"] or 0
            ti.uid, ti.gid = row["uid"] or 0, row["gid"] or 0
            ti.uname, ti.gname = row["uname"] or "", row["gname"] or ""
            kind = row["type"]
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind in ("file", "hardlink"):
                ti.size = row["size"] or 0
                tf.addfile(ti, _ChunkReader(_content(store, row)))  # type: ignore[arg-type]
                result.bytes += ti.size
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = row["linkname"] or ""
                tf.addfile(ti)
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
                tf.addfile(ti)
            else:
                ti.type = tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = row["devmajor"] or 0, row["devminor"] or 0
                tf.addfile(ti)
            result.files += 1


class _Rows:
    """A MergedView whose entries come back as the dict rows this module reads."""

    def __init__(self, view: Any) -> None:
        self.view = view

    def __enter__(self) -> _Rows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.view.close()

    def resolve_image(self, ref: str | None, platform: str | None = None) -> ImageRow:
        return self.view.resolve_image(ref, platform)

    @staticmethod
    def _row(e: Any) -> dict[str, Any]:
        return {"path": e.path, "raw_path": e.raw if e.raw != e.path.encode("utf-8", "surrogateescape") else None,
                "type": e.type, "size": e.size, "mode": e.mode, "uid": e.uid, "gid": e.gid,
                "uname": e.uname, "gname": e.gname, "mtime": e.mtime, "linkname": e.linkname,
                "content_layer": e.content_layer, "content_offset": e.content_offset,
                "sha256": e.sha256, "devmajor": e.devmajor, "devminor": e.devminor}

    def lookup(self, image_id: str, paths: list[str]) -> dict[str, dict[str, Any]]:
        return {p: self._row(e) for p, e in self.view.lookup(image_id, paths).items()}

    def subtree(self, image_id: str, path: str) -> list[dict[str, Any]]:
        return [self._row(e) for e in self.view.subtree(image_id, path)]
