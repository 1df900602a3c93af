"""Ingest: source -> store -> tarindex -> catalog.

Layers are read in worker processes (``jobs``): each worker reads a blob once, hashing it
(blob digest), decompressing it, hashing the tar (diff_id), cutting it into seekable zstd
frames for the cache and indexing its members into a Parquet file, all in one streaming pass.
Everything a worker writes is staged under the catalog's ``tmp/``; only when every layer of an
archive has been verified are the files moved into place and the archive's images recorded in
one catalog transaction. A layer already in the catalog is not read again.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .compression import open_decompressed
from .digest import Digest, HashingReader
from .errors import CorruptLayer, LayerdbError, SourceError
from .model import LAYER_TYPES, FileSegment, Image, LayerRef, familiar_ref
from .sources import open_source
from .store import BlobStore, LayerWriter

if TYPE_CHECKING:  # the catalog (duckdb) loads only when an ingest has something to record
    from .catalog import Catalog


@dataclass(frozen=True)
class LayerJob:
    """One layer to read. ``digest`` is the blob digest to verify (None: unknown)."""

    blob: FileSegment
    diff_id: Digest
    digest: Digest | None
    media_type: str
    staging: str
    source: str  # the archive path, first in every error message
    what: str


@dataclass(frozen=True)
class LayerResult:
    diff_id: Digest
    digest: Digest  # the blob digest, as computed
    compressed_size: int
    size: int
    stored_size: int
    member_count: int
    file_bytes: int
    compression: str
    store_tmp: str
    parquet_tmp: str
    packages_tmp: str | None = None  # the layer's package rows (packages.scan_layer), if any


class _Tee:
    """Reads from ``src`` and hands every byte to ``sink`` as well."""

    def __init__(self, src, sink) -> None:  # type: ignore[no-untyped-def]
        self._src = src
        self._sink = sink

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        if data:
            self._sink(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


_DECODE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, EOFError, OSError, ValueError)


def _decode_errors() -> tuple[type[BaseException], ...]:
    errs = list(_DECODE_ERRORS)
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from isal import isal_zlib

        errs.append(isal_zlib.error)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def read_layer(job: LayerJob) -> LayerResult:
    """Read one layer blob: verify, store (staged) and index it. Runs in a worker process."""
    import pyarrow.parquet as pq

    from .packages.scan import scan_layer
    from .tarindex import SCHEMA, LayerStats, index_layer

    writer = LayerWriter(job.staging)
    fd, parquet_tmp = tempfile.mkstemp(dir=job.staging, suffix=".parquet.tmp")
    os.close(fd)
    stats = LayerStats()
    try:
        raw = job.blob.open()
        try:
            hashed = HashingReader(raw, job.what)
            kind, stream = open_decompressed(hashed)  # type: ignore[arg-type]
            tee = _Tee(stream, writer.write)
            with pq.ParquetWriter(parquet_tmp, SCHEMA, compression="zstd") as pw:
                for batch in index_layer(tee, str(job.diff_id), stats):  # type: ignore[arg-type]
                    pw.write_batch(batch)
            tee.drain()
            hashed.drain()
        finally:
            raw.close()
        if job.blob.length >= 0 and hashed.bytes_read != job.blob.length:
            raise CorruptLayer(f"{job.what}: truncated blob")
        if job.digest is not None:
            hashed.verify(job.digest)
        writer.finish(job.diff_id)
        packages_tmp = scan_layer(parquet_tmp, writer.tmp_path, job.diff_id, job.staging)
    except LayerdbError as e:
        writer.abort()
        _unlink(parquet_tmp)
        msg = str(e)
        if not msg.startswith(job.source):
            msg = f"{job.source}: {msg}"
        raise type(e)(msg) from e
    except _decode_errors() as e:
        writer.abort()
        _unlink(parquet_tmp)
        raise CorruptLayer(f"{job.what}: truncated or corrupt {kind_name(job)} data: {e}") from e
    return LayerResult(
        diff_id=job.diff_id, digest=hashed.digest(), compressed_size=hashed.bytes_read,
        size=writer.size, stored_size=writer.stored_size, member_count=stats.members,
        file_bytes=stats.file_bytes, compression=kind, store_tmp=writer.tmp_path,
        parquet_tmp=parquet_tmp, packages_tmp=packages_tmp)


def kind_name(job: LayerJob) -> str:
    return LAYER_TYPES.get(job.media_type, "layer") if job.media_type else "layer"


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


@dataclass
class ArchiveResult:
    path: str
    images: list[Image] = field(default_factory=list)
    new_images: int = 0
    new_layers: int = 0
    bytes_read: int = 0
    error: LayerdbError | None = None


@dataclass
class IngestReport:
    archives: list[ArchiveResult]
    seconds: float

    @property
    def failed(self) -> list[ArchiveResult]:
        return [a for a in self.archives if a.error is not None]


def _executor(jobs: int) -> cf.Executor:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["layerdb.ingest", "layerdb.tarindex", "pyarrow.parquet"])
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                                  initializer=_exit_with, initargs=(os.getpid(),))


def _exit_with(pid: int) -> None:
    """Worker initializer: exit when the ingesting process is gone. A pool worker otherwise
    outlives a ``kill -9`` of its parent forever (it holds both ends of its own task pipe, and
    the forkserver lives as long as any worker does)."""

    def watch() -> None:
        while _alive(pid):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="layerdb-parent-watch", daemon=True).start()


class _InlineExecutor(cf.Executor):
    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        f: cf.Future = cf.Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the caller via the future
            f.set_exception(e)
        return f


@dataclass
class _Plan:
    """One archive on its way in: its images, and the layer reads it waits for."""

    res: ArchiveResult
    src: Any
    staging: str  # this archive's private temporary directory
    images: list[Image]
    waits: dict[str, cf.Future] = field(default_factory=dict)  # diff_id -> read
    refs: dict[str, LayerRef] = field(default_factory=dict)
    done: bool = False


def ingest(paths: Iterable[str], catalog_root: str | None = None, jobs: int | None = None,
           progress: Callable[[dict], None] | None = None) -> IngestReport:
    """Ingest every archive or layout in ``paths``. Each archive is all-or-nothing: on any
    error nothing of it is recorded or cached, and the error is kept in its ``ArchiveResult``
    (the others still go in). All archives' new layers are read in one pool, each distinct
    diff_id once; an archive is recorded as soon as its last layer is ready. ``progress``
    receives event dicts (for a progress bar)."""
    from .lookup import default_root

    t0 = time.monotonic()
    emit = progress or (lambda ev: None)
    root = os.path.abspath(catalog_root or default_root())
    tmp_dir = os.path.join(root, "tmp")
    os.makedirs(tmp_dir, exist_ok=True)
    _clean_stale(tmp_dir)  # what killed ingests left behind
    run_tmp = tempfile.mkdtemp(dir=tmp_dir, prefix=f"ingest-{os.getpid()}-")
    results: list[ArchiveResult] = []
    plans: list[_Plan] = []
    executor: cf.Executor | None = None
    try:
        # every archive is opened (and a compressed one decompressed) once, here
        for path in paths:
            res = ArchiveResult(path)
            results.append(res)
            try:
                plans.append(_open_plan(res, run_tmp))
            except LayerdbError as e:
                res.error = e
                emit({"event": "error", "path": path, "error": str(e)})
        if not plans or (len(plans) == len(results) and _all_known(plans, root)):
            return IngestReport(results, time.monotonic() - t0)
        from .catalog import Catalog

        with Catalog(root, writable=True, views=False) as cat:
            cat.con.close()  # the catalog file stays unlocked while layers are read
            jobs = jobs or os.cpu_count() or 1
            executor = _InlineExecutor() if jobs <= 1 else _executor(jobs)
            _run_plans(plans, cat, BlobStore(cat.blobs_dir), run_tmp, executor, emit)
    finally:
        for plan in plans:
            plan.src.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(run_tmp, ignore_errors=True)
    return IngestReport(results, time.monotonic() - t0)


def _all_known(plans: list[_Plan], root: str) -> bool:
    """A re-ingest's shortcut: when the catalog's lookup index already holds every image of
    every archive, with its refs and blob digests, there is nothing to do, and the catalog
    (duckdb) is not even opened. The index never runs ahead of the catalog; when it lags, or
    anything is new, this says False and the full path runs."""
    from .lookup import LookupIndex

    idx = LookupIndex.open(root)
    if idx is None:
        return False
    try:
        known = idx.known()
    finally:
        idx.close()
    if known is None:
        return False
    refs, blobs = known
    for img in (i for p in plans for i in p.images):
        if str(img.id) not in refs or {familiar_ref(r) for r in img.refs} - refs[str(img.id)]:
            return False
        if any(l.digest is not None and str(l.digest) not in blobs for l in img.layers):
            return False
    return True


def _open_plan(res: ArchiveResult, run_tmp: str) -> _Plan:
    path = res.path
    staging = tempfile.mkdtemp(dir=run_tmp)
    try:
        src = open_source(path, staging)
    except OSError as e:
        raise SourceError(f"{path}: {e.strerror or e}") from e
    try:
        images = list(src.images())
        if not images:
            raise SourceError(f"{path}: no image found")
    except BaseException:
        src.close()
        raise
    res.images = images
    return _Plan(res, src, staging, images)


def _run_plans(plans: list[_Plan], cat: Catalog, store: BlobStore, run_tmp: str,
               executor: cf.Executor, emit: Callable[[dict], None]) -> None:
    with _reopen(cat):
        ids = [i.id for p in plans for i in p.images]
        layers = {str(l.diff_id): l for p in plans for i in p.images for l in i.layers}
        known_images = cat.known_images(ids)
        known_layers = {d for d in cat.known_layers(Digest(d) for d in layers)
                        if store.has(Digest(d))}
        known_blobs = cat.known_blobs(l.digest for l in layers.values() if l.digest)
        known_refs = cat.refs_of(ids)
    staging = tempfile.mkdtemp(dir=run_tmp)
    reads: dict[str, cf.Future] = {}  # diff_id -> the read the plans share
    owner: dict[cf.Future, LayerRef] = {}

    def submit(path: str, l: LayerRef) -> cf.Future:
        job = LayerJob(l.blob, l.diff_id, l.digest, l.media_type, staging, path,
                       f"{path}: layer {l.diff_id}")
        fut = executor.submit(read_layer, job)
        owner[fut] = l
        return fut

    for plan in plans:
        todo = {str(l.diff_id): l for i in plan.images for l in i.layers
                if str(l.diff_id) not in known_layers}
        plan.refs = todo
        emit({"event": "archive", "path": plan.res.path, "layers": len(todo),
              "bytes": sum(l.blob.size() for l in todo.values())})
        for d, l in todo.items():
            if d not in reads:
                reads[d] = submit(plan.res.path, l)
            plan.waits[d] = reads[d]
    committed: dict[str, LayerResult] = {}
    pending = {f for p in plans for f in p.waits.values()}
    for plan in plans:
        if not plan.waits:
            if _nothing_new(plan, known_images, known_blobs, known_refs):
                plan.done = True  # a re-ingest: every image, blob and ref is recorded already
                continue
            _finish(plan, cat, store, committed, known_images, known_blobs, emit)
    while pending:
        finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for fut in finished:
            l = owner[fut]
            d = str(l.diff_id)
            for plan in plans:
                if plan.waits.get(d) is not fut or plan.done:
                    continue
                emit({"event": "layer", "path": plan.res.path, "bytes": plan.refs[d].blob.size()})
                if fut.cancelled() or fut.exception() is not None:
                    if plan.refs[d] is not l:
                        # another archive's copy failed; this archive reads its own
                        plan.waits[d] = submit(plan.res.path, plan.refs[d])
                        pending.add(plan.waits[d])
        for plan in plans:
            if plan.done or not plan.waits:
                continue
            failed = [f for f in plan.waits.values() if f.done() and
                      (f.cancelled() or f.exception() is not None)]
            if failed:
                plan.done = True
                err = None if failed[0].cancelled() else failed[0].exception()
                plan.res.error = _as_error(plan.res.path, err)
                emit({"event": "error", "path": plan.res.path, "error": str(plan.res.error)})
                live = {f for q in plans if not q.done for f in q.waits.values()}
                for f in plan.waits.values():
                    if f not in live:
                        f.cancel()
                continue
            if all(f.done() for f in plan.waits.values()):
                _finish(plan, cat, store, committed, known_images, known_blobs, emit)


def _nothing_new(plan: _Plan, known_images: set[str], known_blobs: set[str],
                 known_refs: dict[str, set[str]]) -> bool:
    for img in plan.images:
        if str(img.id) not in known_images:
            return False
        if any(l.digest is not None and str(l.digest) not in known_blobs for l in img.layers):
            return False
        if {familiar_ref(r) for r in img.refs} - known_refs.get(str(img.id), set()):
            return False
    return True


def _as_error(path: str, e: BaseException | None) -> LayerdbError:
    if isinstance(e, LayerdbError):
        return e
    if isinstance(e, cf.process.BrokenProcessPool):
        return LayerdbError(f"{path}: a worker process died")
    return LayerdbError(f"{path}: {e or 'cancelled'}")


def _finish(plan: _Plan, cat: Catalog, store: BlobStore, committed: dict[str, LayerResult],
            known_images: set[str], known_blobs: set[str], emit: Callable[[dict], None]) -> None:
    plan.done = True
    results = {d: f.result() for d, f in plan.waits.items()}
    new = {d: r for d, r in results.items() if d not in committed}
    try:
        _commit(plan.res.path, cat, store, plan.images, results, new, known_images, known_blobs,
                plan.staging)
    except LayerdbError as e:
        plan.res.error = e
        emit({"event": "error", "path": plan.res.path, "error": str(e)})
        return
    committed.update(new)
    plan.res.new_images = len({str(i.id) for i in plan.images} - known_images)
    plan.res.new_layers = len(new)
    plan.res.bytes_read = sum(r.compressed_size for r in new.values())
    known_images.update(str(i.id) for i in plan.images)
    known_blobs.update(str(l.digest) for i in plan.images for l in i.layers if l.digest)


class _reopen:
    """Opens the catalog's DuckDB file for the length of a ``with`` block."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat

    def __enter__(self) -> Catalog:
        db = os.path.join(self.cat.root, "catalog.duckdb")
        self.cat.con = type(self.cat)._connect(db, True, 60.0)
        return self.cat

    def __exit__(self, *exc: object) -> None:
        self.cat.con.close()


def _commit(path: str, cat: Catalog, store: BlobStore, images: list[Image],
            done: dict[str, LayerResult], new: dict[str, LayerResult], known_images: set[str],
            known_blobs: set[str], staging: str) -> None:
    """Record one archive: ``done`` has every layer read for it, ``new`` those not yet
    moved into place by an earlier archive of the same run."""
    from .catalog import BlobRecord, LayerRecord
    from .packages import adopt as adopt_packages

    images = [_with_blob_digests(i, done) for i in images]
    # 1. put the verified files in place (still invisible: no catalog row names them)
    for d, r in new.items():
        store.adopt(r.store_tmp, r.diff_id)
        os.replace(r.parquet_tmp, cat.files_path(d))
        adopt_packages(r.packages_tmp, cat.root, d)
    # 2. the merged view of every new image
    fs_tmp: dict[str, str] = {}
    for img in images:
        if str(img.id) not in known_images and str(img.id) not in fs_tmp:
            fs_tmp[str(img.id)] = os.path.join(staging, img.id.hex + ".fs.parquet")
    by_id = {str(i.id): i for i in images}
    cat.materialize_fs([(by_id[i], out) for i, out in fs_tmp.items()])
    for image_id, tmp in fs_tmp.items():
        os.replace(tmp, cat.fs_path(image_id))
    # 3. one transaction records it all
    layers = [LayerRecord(r.diff_id, r.size, r.stored_size, r.member_count, r.file_bytes)
              for r in new.values()]
    blobs: dict[str, BlobRecord] = {}
    for img in images:
        for l in img.layers:
            got = done.get(str(l.diff_id))
            digest = l.digest or (got.digest if got else None)
            if digest is None or str(digest) in known_blobs:
                continue
            size = l.size if l.size >= 0 else (got.compressed_size if got else -1)
            blobs[str(digest)] = BlobRecord(digest, l.diff_id, l.media_type, size)
    with _reopen(cat):
        sizes = {d: (int(s), int(u)) for d, s, u in cat.con.execute(
            "select diff_id, coalesce(compressed_size, 0), size from layer_meta").fetchall()}
        for r in done.values():
            sizes[str(r.diff_id)] = (r.compressed_size, r.size)
        cat.commit_archive(images, layers, list(blobs.values()), sizes, os.path.abspath(path))


def _with_blob_digests(img: Image, done: dict[str, LayerResult]) -> Image:
    """Fill in blob digests the source did not state (docker save's legacy layer.tar) from
    what the workers computed."""
    if all(l.digest is not None or str(l.diff_id) not in done for l in img.layers):
        return img
    layers = tuple(l if l.digest is not None or str(l.diff_id) not in done
                   else replace(l, digest=done[str(l.diff_id)].digest) for l in img.layers)
    return replace(img, layers=layers)


def _clean_stale(tmp_dir: str) -> None:
    """Remove staging dirs of ingests whose process is gone (killed mid-way)."""
    try:
        entries = os.listdir(tmp_dir)
    except FileNotFoundError:
        return
    for name in entries:
        if not name.startswith("ingest-"):
            continue
        try:
            pid = int(name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(os.path.join(tmp_dir, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
