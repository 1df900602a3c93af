"""Extract: look a path up in an image's merged view (``merged.MergedView``), then read it from
the cache.

Symlinks are followed inside the image (an absolute target is relative to the image root, never
the host); hardlinks give their target's bytes; every file's bytes are checked against the
catalog's sha256 before the file is complete.

A tree is first turned into a plan (``_plan``): what the output will hold, entry by entry, with
the same containment and mode rules whatever the output is. Nothing is planned below an entry
that is not a real directory in the output (a symlink the image made), nothing outside the
output, no devices, no hardlink whose target has no bytes, no name a filesystem cannot hold; a
hardlink becomes a copy of its bytes, and setuid/setgid bits are dropped unless asked for. The
plan is written to a directory (``-o DIR``) or as a tar stream (stdout), so a tar stream holds
exactly what ``-o DIR`` writes and any naive tar reader is safe with it.

Writing a directory reads each stored layer once, front to back: files are grouped by the layer
that holds their bytes and written in offset order (``StoredLayer.iter_ranges``), so no frame
is decoded twice however many files it holds. Imports neither duckdb (on the fast path) nor
pyarrow.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import posixpath
import stat
import sys
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

from .digest import Digest
from .errors import DigestMismatch, ImageNotFound, LayerdbError, PathNotFound, UnsafePath, UsageError
from .merged import FsEntry, MergedView, open_view
from .selection import ImageRow, choose_image, group_twins
from .store import BlobStore, StoredLayer

MAX_LINKS = 40
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME_MAX = 255  # bytes in one path component (Linux)
TERMINAL_MAX = 1 << 20  # a file printed to a terminal must be text, and at most this long
_LOOKUP_BATCH = 500  # paths per lookup (SQLite binds at most 32766 variables)

#: progress callback: (bytes written so far, bytes to write in all)
Progress = Callable[[int, int], None]


@dataclass
class ExtractResult:
    image: ImageRow
    path: str  # the resolved path inside the image
    kind: str  # file, dir, ...
    files: int = 0
    bytes: int = 0
    output: str = "-"
    warnings: list[str] = field(default_factory=list)
    layer: int | None = None  # --layer: the layer the member was read from


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _display(path: str) -> str:
    """A path as the catalog displays it: bytes that are not UTF-8 (click hands them over as
    surrogate escapes) shown as ``\\xNN``."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class PathResolver:
    """Looks paths up in one image's merged view, following symlinks inside the image."""

    def __init__(self, view: MergedView, image_id: str) -> None:
        self.view = view
        self.image_id = image_id
        self._cache: dict[str, FsEntry | None] = {}

    def _fetch(self, paths: list[str]) -> None:
        want = [p for p in dict.fromkeys(paths) if p not in self._cache]
        for i in range(0, len(want), _LOOKUP_BATCH):
            part = want[i:i + _LOOKUP_BATCH]
            rows = self.view.lookup(self.image_id, part)
            for p in part:
                self._cache[p] = rows.get(p)

    def get(self, path: str) -> FsEntry | None:
        if path not in self._cache:
            self._fetch([path])
        return self._cache[path]

    def prefetch(self, path: str) -> None:
        """Every ancestor of ``path`` and ``path`` itself, in one lookup."""
        parts = _split(path)
        acc, want = "", ["/"]
        for p in parts:
            acc += "/" + p
            want.append(acc)
        self._fetch(want)

    def _dir(self, path: str) -> FsEntry:
        return self.get(path) or FsEntry.implied_dir(path)

    def resolve(self, path: str, follow_last: bool = True) -> FsEntry:
        """The entry ``path`` names, symlinks followed (the last one only when
        ``follow_last``). Raises ``PathNotFound``."""
        self.prefetch(path)
        queue = _split(path)
        queue.reverse()  # a stack: pop() takes the next component
        cur = "/"
        links = 0
        entry: FsEntry = self._dir("/")
        while queue:
            comp = queue.pop()
            if comp == "..":
                cur = posixpath.dirname(cur) if cur != "/" else "/"
                entry = self._dir(cur)
                continue
            if entry.type != "dir":
                raise PathNotFound(f"{path}: {cur} is not a directory in the image")
            nxt = cur + comp if cur == "/" else cur + "/" + comp
            got = self.get(nxt)
            if got is None and queue:
                # layers may omit directory entries; a runtime creates them implicitly
                got = FsEntry.implied_dir(nxt)
            if got is None:
                err = PathNotFound(f"{path}: no such file or directory in the image")
                err.missing = nxt  # type: ignore[attr-defined]
                raise err
            if got.type == "symlink" and (queue or follow_last):
                links += 1
                if links > MAX_LINKS:
                    raise PathNotFound(f"{path}: too many levels of symbolic links")
                target = got.linkname or ""
                if target.startswith("/"):
                    cur = "/"
                entry = self._dir(cur)
                parts = _split(target)
                queue.extend(reversed(parts))
                self.prefetch(posixpath.join(cur, *parts) if parts else cur)
                continue
            cur, entry = nxt, got
        return entry


def _missing_message(view: MergedView, img: ImageRow, asked: str, missing: str) -> str:
    """Say whether ``missing`` was deleted by an upper layer (it is in a lower one)."""
    found = None
    pos = 0
    try:
        while pos < 1000:
            if view.member(img.id, pos, missing) is not None:
                found = pos
            pos += 1
    except UsageError:  # past the top layer
        pass
    except LayerdbError:  # no catalog to ask: the plain message
        pass
    if found is not None:
        return (f"{asked}: {missing} was deleted in an upper layer (it exists in layer {found} "
                "but a whiteout or opaque directory hides it; --layer "
                f"{found} reads it as stored there)")
    return f"{asked}: no such file or directory in the image"


def find_image(view: MergedView, image: str | None, platform: str | None,
               path: str | None) -> ImageRow:
    """``--image`` if given; otherwise the only image, or the only image that has ``path``."""
    if image:
        return view.resolve_image(image, platform)
    try:
        return view.resolve_image(None, platform)
    except ImageNotFound:
        if not path:
            raise
    hits = [img for img in view.images() if view.lookup(img.id, [path])]
    if not hits:
        raise PathNotFound(f"{path}: not found in any ingested image")
    if len(hits) > 1 and platform:
        return choose_image(hits, None, platform)
    if len(group_twins(hits)) == 1:  # one image, or twins of one (the same config and layers)
        return group_twins(hits)[0][0]
    hits.sort(key=lambda r: (r.name, r.id))
    cands = ", ".join(f"{r.name} ({r.id[:19]})" for r in hits[:10])
    raise ImageNotFound(f"{path} is in {len(hits)} images: {cands}; choose one with --image")


def entrypoint_path(res: PathResolver, img: ImageRow) -> str:
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
            entry = res.resolve(cand)
        except PathNotFound:
            continue
        if entry.type in ("file", "hardlink"):
            return cand
    raise PathNotFound(f"image {img.name}: {exe} is not in its PATH ({', '.join(tried)})")


def extract(path: str | None = None, image: str | None = None, output: str | None = None,
            catalog_root: str | None = None, platform: str | None = None,
            entrypoint: bool = False, keep_setuid: bool = False, layer: int | None = None,
            stdout: BinaryIO | None = None, progress: Progress | None = None) -> ExtractResult:
    """Extract ``path`` (or the entrypoint) of an image to ``output`` (a file or directory
    path; ``None`` or ``-`` for stdout: a file's bytes, or a tar stream for a directory).
    ``layer``: read the member as stored in that layer (0 = base), even when an upper layer
    hides or deletes it. A tar stream or binary content is never written to a terminal."""
    if not path and not entrypoint:
        raise UsageError("give --path or --entrypoint")
    if layer is not None and (entrypoint or not path):
        raise UsageError("--layer reads one member: give it with --path")
    from .catalog.layout import Layout

    root = Layout.at(catalog_root).root
    out = stdout or sys.stdout.buffer
    to_stdout = output in (None, "-")
    # a path that is not UTF-8 arrives with surrogate escapes: the view looks it up by its
    # bytes (identity is bytes), the display form only as a fallback alias
    view = open_view(root, image)
    try:
        img = find_image(view, image, platform, None if entrypoint else path)
        res = PathResolver(view, img.id)
        if entrypoint:
            path = entrypoint_path(res, img)
        assert path is not None
        if not path.startswith("/"):
            path = posixpath.join(img.working_dir or "/", path)
        if layer is not None:
            entry = _layer_member(view, img, layer, path)
        else:
            try:
                entry = res.resolve(path)
            except PathNotFound as e:
                missing = getattr(e, "missing", None)
                if missing is not None:
                    raise PathNotFound(_missing_message(view, img, _display(path), missing)) from None
                raise
        result = ExtractResult(img, entry.path, entry.type, layer=layer)
        store = BlobStore(os.path.join(root, "blobs"))
        if entry.type == "dir":
            if to_stdout and _isatty(out):
                raise UsageError("refusing to write a tar stream to a terminal: give -o DIR, "
                                 "or redirect stdout to a file or a pipe")
            plan = _plan(view.subtree(img.id, entry.path), entry.raw, keep_setuid, result)
            if to_stdout:
                _tar_to(out, plan, entry, store, result, progress)
            else:
                assert output is not None
                _write_tree(output, plan, store, result, progress)
                result.output = output
            return result
        if entry.type not in ("file", "hardlink"):
            raise LayerdbError(f"{path}: is a {entry.type}"
                               + (f" to {entry.linkname}" if entry.type == "symlink" else "")
                               + ", not a file or directory")
        if entry.sha256 is None:
            raise LayerdbError(f"{path}: hardlink to {entry.linkname}, which has no content "
                               "in the image")
        with _Layers(store) as layers:
            if to_stdout:
                _file_to(out, entry, layers, result)
            else:
                assert output is not None
                dest = output
                if os.path.isdir(output) or output.endswith("/"):
                    name = entry.name
                    if b"\0" in name or b"/" in name or len(name) > NAME_MAX:
                        raise UnsafePath(f"{path}: its name cannot be a file name here; "
                                         "give -o FILE")
                    os.makedirs(output, exist_ok=True)
                    dest = os.path.join(output, os.fsdecode(name))
                result.output = dest
                _write_file(dest, entry, layers, keep_setuid, result)
    finally:
        view.close()
    return result


def _isatty(out: BinaryIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _layer_member(view: MergedView, img: ImageRow, layer: int, path: str) -> FsEntry:
    """``--layer``: the member at ``path`` as stored in layer ``layer``; a hardlink gets the
    bytes of its target as the layers up to it hold them."""
    norm = posixpath.normpath("/" + path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    entry = view.member(img.id, layer, norm)
    if entry is None:
        raise PathNotFound(f"{path}: not in layer {layer} of {img.name}")
    if entry.type == "hardlink":
        target = entry.linkname or ""
        for pos in range(layer, -1, -1):
            t = view.member(img.id, pos, target)
            if t is not None and t.type == "file":
                return FsEntry(**{**entry.__dict__, "size": t.size, "sha256": t.sha256,
                                  "content_layer": t.content_layer,
                                  "content_offset": t.content_offset, "sparse": t.sparse})
        raise LayerdbError(f"{path}: hardlink to {target}, which no layer up to {layer} holds")
    if entry.type == "dir":
        raise UsageError(f"{path}: is a directory in layer {layer}; --layer reads one member")
    return entry


# Reading bytes ---------------------------------------------------------------------------------

class _Layers:
    """Stored layers opened once each, for many reads."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._open: dict[str, StoredLayer] = {}

    def get(self, diff_id: str) -> StoredLayer:
        got = self._open.get(diff_id)
        if got is None:
            got = self._open[diff_id] = self.store.open(Digest(diff_id))
        return got

    def close(self) -> None:
        for s in self._open.values():
            s.close()
        self._open.clear()

    def __enter__(self) -> _Layers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stored_size(e: FsEntry) -> int:
    """Bytes the entry's content takes in its layer's tar (a sparse file keeps only data)."""
    return sum(n for _, n in e.sparse) if e.sparse else e.size


def _content(layers: _Layers, e: FsEntry) -> Iterator[bytes]:
    """The bytes of a regular file (or of a hardlink's target), verified against sha256."""
    h = hashlib.sha256()
    stored = _stored_size(e)
    if stored:
        if e.content_layer is None or e.content_offset is None:
            raise LayerdbError(f"{e.path}: the catalog does not say where its bytes are")
        chunks: Iterable[bytes] = layers.get(e.content_layer).iter_range(e.content_offset, stored)
        if e.sparse:
            # sparse.expand(stored chunks, regions, size) -> the file's bytes, holes as zeros
            # (layerdb.sparse is being written alongside; the lead wires it in)
            expand = importlib.import_module(".sparse", __package__).expand
            chunks = expand(chunks, e.sparse, e.size)
        for chunk in chunks:
            h.update(chunk)
            yield chunk
    _check(e, h)


def _check(e: FsEntry, h: hashlib._Hash) -> None:
    if e.sha256 is None:
        raise LayerdbError(f"{e.path}: hardlink to {e.linkname}, which has no content")
    if h.hexdigest() != e.sha256:
        raise DigestMismatch(f"{e.path}: cached bytes hash to {h.hexdigest()}, "
                             f"catalog says {e.sha256}")


def _is_text(data: bytes) -> bool:
    """UTF-8 with no control character a terminal would act on (tab and newline aside; CR
    only before LF), and no bidirectional override."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    from .output import has_controls

    return not has_controls(text.replace("\r\n", "\n"), allow="\t\n")


def _file_to(out: BinaryIO, e: FsEntry, layers: _Layers, result: ExtractResult) -> None:
    if _isatty(out):
        data = b""
        if e.size <= TERMINAL_MAX:
            data = b"".join(_content(layers, e))
        if e.size > TERMINAL_MAX or not _is_text(data):
            raise UsageError(f"{e.path}: refusing to write binary content to a terminal: "
                             "give -o FILE, or redirect stdout to a file or a pipe")
        out.write(data)
        result.bytes += len(data)
    else:
        for chunk in _content(layers, e):
            out.write(chunk)
            result.bytes += len(chunk)
    out.flush()
    result.files = 1


def _mode(e: FsEntry, keep_setuid: bool) -> int:
    mode = int(e.mode) & 0o7777
    if not keep_setuid:
        mode &= ~(stat.S_ISUID | stat.S_ISGID)
    return mode


_tmp_seq = 0


def _tmp_name() -> str:
    """A temporary name in the destination directory; short, whatever the final name's
    length (names may be 255 bytes)."""
    global _tmp_seq
    _tmp_seq += 1
    return f".layerdb-{os.getpid()}-{_tmp_seq}.tmp"


def _write_file(dest: str, e: FsEntry, layers: _Layers, keep_setuid: bool,
                result: ExtractResult) -> None:
    """Write one regular file atomically (temp name, verify, rename), never through a link."""
    parent = os.path.dirname(dest) or "."
    name = os.path.basename(dest)
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    tmp = _tmp_name()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            with os.fdopen(fd, "wb", buffering=1 << 20) as f:
                for chunk in _content(layers, e):
                    f.write(chunk)
                    result.bytes += len(chunk)
                f.flush()  # before utime: a later flush would move the mtime again
                os.chmod(f.fileno(), _mode(e, keep_setuid))
                os.utime(f.fileno(), (e.mtime, e.mtime))
            try:
                if stat.S_ISDIR(os.lstat(name, dir_fd=pfd).st_mode):
                    raise UnsafePath(f"{dest}: a directory is in the way")
            except FileNotFoundError:
                pass
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=pfd)
            except FileNotFoundError:
                pass
            raise
        result.files += 1
    finally:
        os.close(pfd)


# The plan of a tree ----------------------------------------------------------------------------

class _Item(NamedTuple):
    """One entry of the output: ``rel`` is its path under the output root (``b""`` for the
    root itself), ``kind`` what is written (dir, file, symlink, fifo), ``mode`` the bits."""

    rel: bytes
    kind: str
    mode: int
    entry: FsEntry


def _plan(entries: Iterable[FsEntry], base: bytes, keep_setuid: bool,
          result: ExtractResult) -> Iterator[_Item]:
    """What a tree extract writes, in path order (parents before children): each entry of
    the subtree at ``base`` that can be written safely, plus the directories a runtime would
    create for entries whose parent has no entry of its own. Everything else is skipped with
    one warning in ``result.warnings``."""
    prefix = base.rstrip(b"/") + b"/"
    dirs: set[bytes] = {b""}
    taken: set[bytes] = set()  # non-directories written
    warn = result.warnings.append
    root_done = False
    for e in entries:
        if e.raw == base or e.raw == base.rstrip(b"/"):
            if e.type == "dir" and not root_done:
                root_done = True
                yield _Item(b"", "dir", _mode(e, keep_setuid), e)
            continue
        if not root_done:  # the directory itself has no entry (a layer need not have "./")
            root_done = True
            yield _Item(b"", "dir", 0o755, FsEntry(path=base.decode("utf-8", "backslashreplace"),
                                                   raw=base, type="dir"))
        if not e.raw.startswith(prefix):
            continue
        rel = e.raw[len(prefix):]
        shown = e.path
        framed = b"/" + rel + b"/"
        if b"//" in framed or b"/./" in framed or b"/../" in framed:
            warn(f"skipped {shown}: not a clean path")
            continue
        if b"\0" in rel:
            warn(f"skipped {shown}: a NUL byte in its name")
            continue
        if len(rel) > NAME_MAX and any(len(p) > NAME_MAX for p in rel.split(b"/")):
            warn(f"skipped {shown}: a name longer than {NAME_MAX} bytes")
            continue
        if rel in dirs or rel in taken:
            warn(f"skipped {shown}: the path appears twice")
            continue
        # the parent must be a directory in the output; create missing ones as a runtime does
        missing = []
        parent = rel
        while True:
            parent = parent.rpartition(b"/")[0]
            if parent in dirs:
                break
            if parent in taken:
                break
            missing.append(parent)
        if parent in taken:
            warn(f"skipped {shown}: its parent is not a directory in the output")
            continue
        for d in reversed(missing):
            dirs.add(d)
            raw = prefix + d
            yield _Item(d, "dir", 0o755, FsEntry(
                path=raw.decode("utf-8", "backslashreplace"), raw=raw, type="dir"))
        kind = e.type
        if kind == "dir":
            dirs.add(rel)
            yield _Item(rel, "dir", _mode(e, keep_setuid), e)
        elif kind in ("file", "hardlink"):
            if e.sha256 is None:
                warn(f"skipped {shown}: hardlink to {e.linkname}, which has no content in the image")
                continue
            taken.add(rel)
            yield _Item(rel, "file", _mode(e, keep_setuid), e)
        elif kind == "symlink":
            taken.add(rel)
            yield _Item(rel, "symlink", 0o777, e)
        elif kind == "fifo":
            taken.add(rel)
            yield _Item(rel, "fifo", _mode(e, keep_setuid), e)
        else:
            warn(f"skipped {shown}: {kind} device")


# Writing a tree to a directory -----------------------------------------------------------------

class _Dirs:
    """File descriptors of directories under the output root, opened component by component
    with ``O_NOFOLLOW`` (so never through a symlink); the most recently used are kept open."""

    KEEP = 128

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._fds: OrderedDict[bytes, int] = OrderedDict()

    def get(self, rel: bytes) -> int | None:
        """An fd for directory ``rel`` (``b""``: the root); None if it is not a real
        directory."""
        if not rel:
            return self.root_fd
        fd = self._fds.get(rel)
        if fd is not None:
            self._fds.move_to_end(rel)
            return fd
        # the nearest open ancestor, then down one component at a time (no recursion: paths
        # may be thousands of levels deep)
        parts = rel.split(b"/")
        i = len(parts) - 1
        while i > 0 and b"/".join(parts[:i]) not in self._fds:
            i -= 1
        cur = self._fds[b"/".join(parts[:i])] if i else self.root_fd
        for j in range(i, len(parts)):
            try:
                nfd = os.open(parts[j], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=cur)
            except OSError:
                return None
            cur = self._put(b"/".join(parts[:j + 1]), nfd)
        return cur

    def _put(self, rel: bytes, fd: int) -> int:
        self._fds[rel] = fd
        while len(self._fds) > self.KEEP:
            # never evict the one just opened: it is what the caller walks from
            old_rel, old = self._fds.popitem(last=False)
            if old_rel == rel:
                self._fds[rel] = old
                continue
            os.close(old)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_tree(output: str, plan: Iterable[_Item], store: BlobStore, result: ExtractResult,
                progress: Progress | None) -> None:
    """Write the plan into ``output`` (like ``cp -r SRC/. DIR``): directories, links and fifos
    first, in path order; then the files, layer by layer in the order their bytes are stored;
    then each directory's mode and mtime, children first."""
    os.makedirs(output, exist_ok=True)
    _learn_umask()
    root_fd = os.open(output, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    dirs = _Dirs(root_fd)
    dir_items: list[_Item] = []
    by_layer: dict[str, dict[tuple[int, int], list[_Item]]] = {}
    others: list[_Item] = []  # files read one by one: empty, sparse
    try:
        for it in plan:
            parent, _, name = it.rel.rpartition(b"/")
            if it.kind == "dir":
                dir_items.append(it)
                if not it.rel:
                    continue
            if it.kind == "file":  # written below; _create checks the parent
                e = it.entry
                if e.size and not e.sparse and e.content_layer and e.content_offset is not None:
                    by_layer.setdefault(e.content_layer, {}).setdefault(
                        (e.content_offset, e.size), []).append(it)
                else:
                    others.append(it)
                continue
            pfd = dirs.get(parent)
            if pfd is None:
                result.warnings.append(
                    f"skipped {it.entry.path}: its parent is not a directory in the output")
                continue
            _make_node(pfd, name, it, result)
        total = sum(size for g in by_layer.values() for _, size in g)
        tick = _Ticker(progress, total + sum(it.entry.size for it in others))
        _write_files(output, root_fd, by_layer, store, result, tick)
        with _Layers(store) as layers:
            for it in others:
                _write_one(dirs, it, _content(layers, it.entry), result)
                tick(it.entry.size)
        for it in reversed(dir_items):  # children first, so mtimes stick
            fd = dirs.get(it.rel)
            if fd is None:
                continue
            os.chmod(fd, it.mode)
            os.utime(fd, (it.entry.mtime, it.entry.mtime))
    finally:
        dirs.close()
        os.close(root_fd)


def _make_node(pfd: int, name: bytes, it: _Item, result: ExtractResult) -> None:
    """A directory, symlink or fifo ``name`` in the directory ``pfd``, replacing what is
    there (a directory in the way of a non-directory is kept, with a warning). Into an empty
    output the first attempt succeeds: one system call, no lstat."""
    e = it.entry
    for attempt in (1, 2):
        try:
            if it.kind == "dir":
                os.mkdir(name, 0o700, dir_fd=pfd)
                return
            if it.kind == "symlink":
                os.symlink(e.linkname or "", name, dir_fd=pfd)
                os.utime(name, (e.mtime, e.mtime), dir_fd=pfd, follow_symlinks=False)
            else:
                os.mkfifo(name, it.mode, dir_fd=pfd)
            result.files += 1
            return
        except FileExistsError:
            if attempt == 2:
                raise
            st = os.lstat(name, dir_fd=pfd)
            if stat.S_ISDIR(st.st_mode):
                if it.kind != "dir":
                    result.warnings.append(f"skipped {e.path}: a directory is in the way")
                return  # an existing directory is used as it is
            os.unlink(name, dir_fd=pfd)


def _create(dirs: _Dirs, it: _Item, result: ExtractResult) -> int | None:
    """Create the regular file of ``it`` for writing (never through a link), replacing a
    non-directory in the way; None (with a warning) when it cannot be."""
    parent, _, name = it.rel.rpartition(b"/")
    pfd = dirs.get(parent)
    if pfd is None:
        result.warnings.append(f"skipped {it.entry.path}: its parent is not a directory in the output")
        return None
    mode = 0o600 if it.mode & _chmod_bits else it.mode
    try:
        return os.open(name, _CREATE, mode, dir_fd=pfd)
    except FileExistsError:
        if stat.S_ISDIR(os.lstat(name, dir_fd=pfd).st_mode):
            result.warnings.append(f"skipped {it.entry.path}: a directory is in the way")
            return None
        os.unlink(name, dir_fd=pfd)
        return os.open(name, _CREATE, mode, dir_fd=pfd)


# Mode bits the umask would take from a new file, and setuid/setgid/sticky: a file whose mode
# has none of them gets it when created (one system call fewer); others get fchmod at the end.
_chmod_bits = 0o7777


def _learn_umask() -> None:
    global _chmod_bits
    mask = os.umask(0o022)
    os.umask(mask)
    _chmod_bits = mask | 0o7000


def _finish(fd: int, it: _Item) -> None:
    if it.mode & _chmod_bits:
        os.fchmod(fd, it.mode)
    os.utime(fd, (it.entry.mtime, it.entry.mtime))


def _discard(dirs: _Dirs, it: _Item) -> None:
    parent, _, name = it.rel.rpartition(b"/")
    pfd = dirs.get(parent)
    if pfd is not None:
        try:
            os.unlink(name, dir_fd=pfd)
        except FileNotFoundError:
            pass


def _write_all(fd: int, data: memoryview | bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _write_one(dirs: _Dirs, it: _Item, chunks: Iterable[bytes], result: ExtractResult) -> None:
    fd = _create(dirs, it, result)
    if fd is None:
        return
    try:
        for chunk in chunks:
            _write_all(fd, chunk)
            result.bytes += len(chunk)
        _finish(fd, it)
    except BaseException:
        os.close(fd)
        _discard(dirs, it)
        raise
    os.close(fd)
    result.files += 1


class _Ticker:
    """Bytes written so far, from any thread, passed on to a progress callback now and then."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total = progress, total
        self.done = self.shown = 0
        self.step = max(total // 200, 1 << 20)
        self.lock = threading.Lock()

    def __call__(self, n: int) -> None:
        if self.progress is None:
            return
        with self.lock:
            self.done += n
            if self.done - self.shown >= self.step or self.done == self.total:
                self.shown = self.done
                self.progress(self.done, self.total)


_Shard = list[tuple[str, list[tuple[int, int]]]]  # (diff_id, ranges in offset order)
_PARALLEL_MIN = 16 << 20  # bytes under which one thread writes everything


def _write_files(output: str, root_fd: int,
                 by_layer: dict[str, dict[tuple[int, int], list[_Item]]], store: BlobStore,
                 result: ExtractResult, tick: _Ticker) -> None:
    """Write every file whose bytes are in a stored layer. The ranges of all layers, each layer
    in offset order, are cut into one contiguous shard per worker thread (a core each: zstd,
    sha256 and the file system calls all release the GIL); a worker reads its part of a layer
    sequentially, decoding each frame once."""
    work = [(d, sorted(by_layer[d])) for d in sorted(by_layer)]
    total = sum(size for _, keys in work for _, size in keys)
    n = 1 if total < _PARALLEL_MIN else max(1, min(4, os.cpu_count() or 1))
    shards: list[_Shard] = [[] for _ in range(n)]
    share, acc, w = total / n, 0, 0
    for diff_id, keys in work:
        start = 0
        for j, (_, size) in enumerate(keys):
            if acc >= share * (w + 1) and w < n - 1:
                if j > start:
                    shards[w].append((diff_id, keys[start:j]))
                start, w = j, w + 1
            acc += size
        shards[w].append((diff_id, keys[start:]))

    def run(shard: _Shard) -> ExtractResult:
        mine = ExtractResult(result.image, result.path, result.kind)
        dirs = _Dirs(os.dup(root_fd))
        try:
            with _Layers(store) as layers:
                for diff_id, keys in shard:
                    _write_layer_files(dirs, layers.get(diff_id), keys, by_layer[diff_id], mine,
                                       tick)
        finally:
            dirs.close()
            os.close(dirs.root_fd)
        return mine

    if n == 1:
        parts = [run(shards[0])]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(run, sh) for sh in shards if sh]
            parts = [f.result() for f in futures]
    for p in parts:
        result.files += p.files
        result.bytes += p.bytes
        result.warnings.extend(p.warnings)


def _write_layer_files(dirs: _Dirs, layer: StoredLayer, keys: list[tuple[int, int]],
                       groups: dict[tuple[int, int], list[_Item]], result: ExtractResult,
                       tick: _Ticker) -> None:
    """Write the files whose bytes are the ``keys`` ranges of ``layer``: one sequential pass
    (``iter_ranges``). Files with the same bytes (hardlinks) are written once and copied."""
    cur = -1
    fd: int | None = None
    h = hashlib.sha256()

    def close_current() -> None:
        nonlocal fd
        items = groups[keys[cur]]
        first = items[0]
        if fd is None:
            return
        try:
            _check(first.entry, h)
            _finish(fd, first)
        except BaseException:
            os.close(fd)
            fd = None
            _discard(dirs, first)
            raise
        result.files += 1
        for dup in items[1:]:
            _copy_to(dirs, fd, dup, result)
        os.close(fd)
        fd = None

    for k, piece in layer.iter_ranges(keys):
        if k != cur:
            if cur >= 0:
                close_current()
                tick(keys[cur][1])
            cur = k
            h = hashlib.sha256()
            items = groups[keys[k]]
            fd = _create(dirs, items[0], result)
            while fd is None and len(items) > 1:  # the first name cannot be written
                items.pop(0)
                fd = _create(dirs, items[0], result)
        if fd is not None:
            _write_all(fd, piece)
        h.update(piece)
        result.bytes += len(piece)
    if cur >= 0:
        close_current()
        tick(keys[cur][1])


def _copy_to(dirs: _Dirs, src_fd: int, it: _Item, result: ExtractResult) -> None:
    """Another name with the same bytes: copy them from the file just written (in the
    kernel; no second read of the layer)."""
    fd = _create(dirs, it, result)
    if fd is None:
        return
    try:
        size, off = it.entry.size, 0
        while off < size:
            n = os.copy_file_range(src_fd, fd, size - off, off, off)
            if n <= 0:
                raise OSError(f"copy of {it.entry.path} stopped at {off} of {size} bytes")
            off += n
        result.bytes += size
        _finish(fd, it)
    except BaseException:
        os.close(fd)
        _discard(dirs, it)
        raise
    os.close(fd)
    result.files += 1


# Writing a tree as a tar stream ---------------------------------------------------------------

class _ChunkReader:
    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += bytes(next(self._it))
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _tar_to(out: BinaryIO, plan: Iterable[_Item], top_entry: FsEntry, store: BlobStore,
            result: ExtractResult, progress: Progress | None) -> None:
    """Write the plan as a tar stream (like ``docker cp CONTAINER:DIR -``): the same entries,
    modes and containment as ``-o DIR``, names under the directory's own name (``.`` for
    the root). Hardlinks are written as regular files: a reader never links outside."""
    top = os.fsdecode(top_entry.name) or "."
    done = 0
    with _Layers(store) as layers, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                         encoding="utf-8", errors="surrogateescape") as tf:
        for it in plan:
            e = it.entry
            name = top if not it.rel else top + "/" + os.fsdecode(it.rel)
            ti = tarfile.TarInfo(name)
            ti.mode = it.mode
            ti.mtime = e.mtime
            ti.uid, ti.gid = e.uid, e.gid
            ti.uname, ti.gname = e.uname, e.gname
            if it.kind == "dir":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif it.kind == "file":
                ti.size = e.size
                tf.addfile(ti, _ChunkReader(_content(layers, e)))  # type: ignore[arg-type]
                result.bytes += e.size
                done += e.size
                if progress:
                    progress(done, done)
            elif it.kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e.linkname or ""
                tf.addfile(ti)
            else:
                ti.type = tarfile.FIFOTYPE
                tf.addfile(ti)
            if it.rel:
                result.files += 1
    out.flush()
